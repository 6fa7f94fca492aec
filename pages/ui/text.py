"""Text from users (file names, link values, error messages quoting them) shown inside Markdown as
typed, never as markup: the pages' name for ``ltpa.images.display_name``, the library's one
escaping rule."""
from __future__ import annotations

from ltpa.images import display_name

# Error messages quote names and values; longer than this they are shortened with an ellipsis.
MAX_PLAIN_CHARS = 400


def plain(text: str, limit: int = MAX_PLAIN_CHARS) -> str:
    """``text`` as Markdown source that renders as its plain characters (punctuation escaped,
    control characters as spaces, at most ``limit`` characters)."""
    return display_name(str(text), limit)
