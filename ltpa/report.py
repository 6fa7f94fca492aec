"""Markdown output shared by the library's reports (robustness, segmentation, faithfulness)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence


def markdown_table(rows: Sequence[Mapping[str, Any]], numeric: Iterable[str] = (),
                   formats: Mapping[str, str] | None = None,
                   columns: Sequence[str] | None = None) -> str:
    """Rows of cells as a GitHub Markdown table.

    Args:
        rows: one mapping per row, column name -> cell value.
        numeric: columns to right-align.
        formats: column -> format string (e.g. ``"{:.1f}"``) applied to its non-empty cells.
        columns: the columns in order (default: the first row's keys); a row without a column
            gets an empty cell, as does a None value.

    Returns:
        The table, one line per row, without a trailing newline.

    Raises:
        ValueError: no rows and no ``columns``.
    """
    if columns is None:
        if not rows:
            raise ValueError("a table needs rows or columns")
        columns = list(rows[0])
    numeric, formats = set(numeric), formats or {}
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---:" if c in numeric else "---" for c in columns) + "|"]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            cells.append("" if value is None else formats[column].format(value) if column in formats
                         else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
