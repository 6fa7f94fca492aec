"""Subcommands of the ltpa command line, one module each."""
from __future__ import annotations

import sys
from pathlib import Path


def print_written(written: dict[str, Path]) -> None:
    """Name each file a command wrote, then any note about what it skipped (on stderr).

    Args:
        written: what the command wrote, by kind, plus an optional ``"note"``.
    """
    for key, path in written.items():
        if key != "note":
            print(f"wrote {path}")
    if "note" in written:
        print(f"note: {written['note']}", file=sys.stderr)
