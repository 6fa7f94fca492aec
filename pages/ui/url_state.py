"""Page settings in the URL query string, so that a link reproduces a view: the one place that
reads and writes ``st.query_params``.

A page uses it in three steps, in this order::

    from pages.ui import url_state as url

    link = url.incoming()                      # once, at the top of the page
    link.adopt([url.image(), url.model(), *url.display()])   # before the widgets they feed
    ... draw the widgets (they read the session state) ...
    link.adopt([url.stage(stages)])            # adopt may be called again later in the same run
    url.publish({"image": url.image_value(chosen), "model": model_id, "eps": levels})

- ``incoming()`` returns the link's values when the query string differs from the one this
  session last read or published (a pasted link, a Lesson preset, the browser's back button), and
  an empty ``Incoming`` otherwise, so a value in the address bar never overrides a widget the
  user has since moved.
- ``Incoming.adopt(settings)`` validates each value present in the link with its ``Setting``;
  a valid one is stored where the widgets read it, a bad or hostile one (unknown id, a path such
  as ``../x``, a huge number, NaN, a repeated key, an over-long value) gives one visible warning
  and the page keeps its current value (the default on a new visit). It never raises and never
  opens a path: an image is only ever one of the gallery's file names.
- ``publish(values)`` replaces the query string with ``values`` (None left out), so the address
  bar always holds a link to what is on screen; ``link_params(values)`` gives the same strings
  for ``st.page_link(page, query_params=...)``.

A ``Setting`` is a parameter name, a parser (text -> value, ValueError when invalid) and where the
value goes. Parsers: ``choice(kind, options)``, ``integer(kind, low, high)``,
``number(kind, low, high)``, ``choice_list(kind, options, max_items)``, ``flag(kind)``; they
validate through ``ltpa.choices``. ``to_state(key)`` stores under a ``pages.ui.state`` key.

Parameter names (``NAMES``), shared by every page: image, model, models, cmap, opacity, scaling,
stage, rule, t (threshold), combine, eps (epsilon in grey levels k/255), attack, steps, label
(label mode), cls (class name), step (Lesson step). A page may add its own names (the
Faithfulness page: posthoc, the post-hoc map; fill, what removed pixels become).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import streamlit as st

from ltpa.choices import check_choice, check_number, quoted
from ltpa.maps import COLORMAPS, NORMALISE_MODES
from pages.ui import state
from pages.ui.text import plain
from pages.ui.widgets import ChosenImage, gallery, zoo_choices

NAMES = ("image", "model", "models", "cmap", "opacity", "scaling", "stage", "rule", "t", "combine",
         "eps", "attack", "steps", "label", "cls", "step")
# A longer value is refused before it is parsed (no setting needs more; keeps warnings short).
MAX_VALUE_CHARS = 200
# What this session last read from or wrote to the URL (a canonical form of the query string).
_SEEN = "ltpa.url.seen"

Parser = Callable[[str], Any]


@dataclass(frozen=True)
class Setting:
    """One URL parameter: its name, how its text becomes a valid value, and where that goes."""

    name: str
    parse: Parser  # text -> value; raises ValueError (with a readable reason) when invalid
    store: Callable[[Any], None]


# ----------------------------------------------------------------------------- parsers

def choice(kind: str, options: Sequence[str]) -> Parser:
    """A parser accepting exactly one of ``options`` (compared as text)."""
    def parse(text: str) -> str:
        check_choice(kind, text, tuple(options))
        return text
    return parse


def integer(kind: str, low: int, high: int) -> Parser:
    """A parser accepting a whole number (plain decimal digits) from ``low`` to ``high``."""
    def parse(text: str) -> int:
        if not re.fullmatch(r"[+-]?\d{1,12}", text.strip()):
            raise ValueError(f"{kind} must be a whole number from {low} to {high}; got {quoted(text)}")
        value = int(text)
        check_number(kind, value, low, high)
        return value
    return parse


def number(kind: str, low: float, high: float) -> Parser:
    """A parser accepting a finite number from ``low`` to ``high`` (NaN and infinities refused)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{kind} must be a number from {low:g} to {high:g}; got {quoted(text)}") from None
        check_number(kind, value, low, high)
        return value
    return parse


def choice_list(kind: str, options: Sequence[str], max_items: int) -> Parser:
    """A parser accepting a comma-separated list of distinct ``options`` (at most ``max_items``)."""
    def parse(text: str) -> list[str]:
        items = [item for item in text.split(",") if item]
        if len(items) > max_items:
            raise ValueError(f"at most {max_items} {kind}s; got {len(items)}")
        for item in items:
            check_choice(kind, item, tuple(options))
        return list(dict.fromkeys(items))
    return parse


def flag(kind: str) -> Parser:
    """A parser accepting ``1`` / ``0`` (also ``true`` / ``false``)."""
    def parse(text: str) -> bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true"):
            return True
        if lowered in ("0", "false"):
            return False
        raise ValueError(f"{kind} must be 1 or 0; got {quoted(text)}")
    return parse


def to_state(key: str) -> Callable[[Any], None]:
    """Store a valid value under a ``pages.ui.state`` key (where ``state.persisted`` widgets read)."""
    return lambda value: state.put(key, value)


# ----------------------------------------------------------------------------- settings every page shares

def _store_example(file_name: str) -> None:
    example = next(e for e in gallery() if e.file == file_name)
    state.set_image(example.path.read_bytes(), example.file, "example")
    state.put(state.EXAMPLE_TITLE, example.title)


def image() -> Setting:
    """``image``: one of the gallery's file names (uploads cannot travel in a link)."""
    return Setting("image", choice("example image", [e.file for e in gallery()]), _store_example)


def model(attention_only: bool = False, key: str = state.MODEL_ID) -> Setting:
    """``model``: a zoo id (only attention models when ``attention_only``)."""
    ids = [c.id for c in zoo_choices() if c.attention or not attention_only]
    return Setting("model", choice("attention model" if attention_only else "model", ids), to_state(key))


def models(max_items: int = 8) -> Setting:
    """``models``: comma-separated ids of attention models (the Compare page's rows)."""
    ids = [c.id for c in zoo_choices() if c.attention]
    return Setting("models", choice_list("attention model", ids, max_items), to_state(state.COMPARE_MODEL_IDS))


def display() -> list[Setting]:
    """``cmap``, ``opacity`` and ``scaling``: the overlay display settings."""
    return [
        Setting("cmap", choice("colormap", list(COLORMAPS)), to_state(state.COLORMAP)),
        Setting("opacity", number("opacity", 0.0, 1.0), lambda v: state.put(state.OPACITY, round(v, 2))),
        Setting("scaling", choice("map scaling", list(NORMALISE_MODES)), to_state(state.SCALING)),
    ]


def single_model_view() -> list[Setting]:
    """The settings of every single-model page: ``image``, ``model`` and the display ones."""
    return [image(), model(), *display()]


def single_model_values(chosen: ChosenImage | None, model_id: str | None, colormap: str,
                        opacity: float, scaling: str) -> dict[str, Any]:
    """The link values of those settings (``publish`` takes them with the page's own)."""
    return {"image": image_value(chosen), "model": model_id, "cmap": colormap, "opacity": opacity,
            "scaling": scaling}


def image_value(chosen: ChosenImage | None) -> str | None:
    """The ``image`` value for a link: the gallery file name, None for an upload."""
    return chosen.name if chosen is not None and chosen.source == "example" else None


# ----------------------------------------------------------------------------- reading and writing

def _canonical() -> tuple[tuple[str, tuple[str, ...]], ...]:
    params = st.query_params
    return tuple(sorted((str(key), tuple(params.get_all(key))) for key in params))


class Incoming:
    """The values of a link this run is to adopt (empty when the URL is one this session made)."""

    def __init__(self, values: Mapping[str, tuple[str, ...]]) -> None:
        self.values = dict(values)

    def __bool__(self) -> bool:
        return bool(self.values)

    def raw(self, name: str) -> str | None:
        """The link's single text value of ``name`` (None if absent or repeated)."""
        given = self.values.get(name, ())
        return given[0] if len(given) == 1 else None

    def adopt(self, settings: Iterable[Setting]) -> dict[str, Any]:
        """Validate and store each setting the link carries; warn (once each) about bad ones.

        Returns the adopted values by parameter name."""
        adopted: dict[str, Any] = {}
        for setting in settings:
            given = self.values.pop(setting.name, None)
            if not given:
                continue
            problem = None
            if len(given) > 1:
                problem = f"given {len(given)} times"
            elif len(given[0]) > MAX_VALUE_CHARS:
                problem = f"longer than {MAX_VALUE_CHARS} characters"
            else:
                try:
                    value = setting.parse(given[0])
                except ValueError as error:
                    problem = str(error)
            if problem is None:
                try:
                    setting.store(value)
                except (ValueError, OSError, StopIteration) as error:  # e.g. a gallery file gone since
                    problem = str(error) or type(error).__name__
                else:
                    adopted[setting.name] = value
                    continue
            st.warning(f"The link's setting **{setting.name}** was ignored ({plain(problem)}); the page "
                       "keeps its current value.", icon=":material/link_off:")
        return adopted


def incoming() -> Incoming:
    """The link's values to adopt this run: those of a query string this session has not yet
    seen, else none. Call once per run, before ``adopt``."""
    canonical = _canonical()
    if st.session_state.get(_SEEN) == canonical:
        return Incoming({})
    st.session_state[_SEEN] = canonical
    return Incoming(dict(canonical))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else ""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def link_params(values: Mapping[str, Any]) -> dict[str, str]:
    """``values`` as query-string text (None and empty values left out), for ``st.page_link``."""
    texts = {name: _text(value) for name, value in values.items() if value is not None}
    return {name: text for name, text in texts.items() if text != ""}


def publish(values: Mapping[str, Any]) -> None:
    """Make the query string exactly ``values`` (None left out): the address bar is then a link
    to this view. Writes only when something changed."""
    params = link_params(values)
    canonical = tuple(sorted((name, (text,)) for name, text in params.items()))
    if _canonical() != canonical:
        st.query_params.from_dict(params)
    st.session_state[_SEEN] = canonical
