"""Text from users (file names, link values) shown inside Markdown as typed, never as markup."""
from __future__ import annotations

import re

# Markdown's punctuation plus ':' (Streamlit's :emoji: and :color[...] directives).
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=&])")


def plain(text: str) -> str:
    """``text`` with Markdown's punctuation backslash-escaped, for st.markdown / st.error etc."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", str(text))
