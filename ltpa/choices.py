"""Validation of a value against the choices a setting allows: one wording for every "unknown X"
error in the library, the command line and the app.

``check_choice`` raises (for library calls, whose callers get a ValueError naming the valid
choices); ``check_number`` does the same for a bounded number. The app's URL state
(``pages/ui/url_state.py``) calls both and turns the error into a warning.
"""
from __future__ import annotations

import math
from typing import Collection

# Longest value quoted back in an error message: a hostile value of megabytes stays readable.
MAX_QUOTED_CHARS = 60
# Most choices an error message lists by name (then "and N more").
MAX_LISTED_CHOICES = 12


def quoted(value: object) -> str:
    """``repr(value)``, shortened to ``MAX_QUOTED_CHARS`` characters for error messages.

    Args:
        value: the value to quote.

    Returns:
        Its repr, cut with an ellipsis when longer than ``MAX_QUOTED_CHARS``.
    """
    text = repr(value)
    return text if len(text) <= MAX_QUOTED_CHARS else text[:MAX_QUOTED_CHARS - 1] + "…"


def check_choice(kind: str, value: object, choices: Collection[object]) -> None:
    """Raise a ValueError naming the valid choices when ``value`` is not one of them.

    Args:
        kind: what the value is, for the message (e.g. ``"colormap"``).
        value: the value given.
        choices: the allowed values, in the order the message lists them.

    Raises:
        ValueError: ``unknown <kind> <value>; valid choices: a, b, c``.
    """
    try:
        known = value in choices
    except TypeError:  # an unhashable value asked of a set or dict
        known = False
    if not known:
        names = [str(c) for c in choices]
        listed = ", ".join(names[:MAX_LISTED_CHOICES])
        if len(names) > MAX_LISTED_CHOICES:
            listed += f" and {len(names) - MAX_LISTED_CHOICES} more"
        raise ValueError(f"unknown {kind} {quoted(value)}; valid choices: {listed}")


def check_number(kind: str, value: float, low: float, high: float) -> None:
    """Raise a ValueError unless ``value`` is a finite number from ``low`` to ``high`` (inclusive).

    Args:
        kind: what the number is, for the message (e.g. ``"epsilon"``).
        value: the number given (NaN and infinities are refused).
        low: the smallest allowed value.
        high: the largest allowed value.

    Raises:
        ValueError: ``<kind> must be a number from <low> to <high>; got <value>``.
    """
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and low <= value <= high)
    if not ok:
        raise ValueError(f"{kind} must be a number from {low:g} to {high:g}; got {quoted(value)}")
