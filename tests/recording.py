"""A test helper: count the calls of a module's function while still running it."""
from __future__ import annotations

from typing import Any

import pytest


def record_calls(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    """Replace ``owner.name`` for the test by a wrapper that appends 1 per call to the returned
    list, then calls the original."""
    calls: list[int] = []
    real = getattr(owner, name)

    def recording(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return calls
