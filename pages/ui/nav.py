"""Page set-up every page calls first: its browser-tab title and the sidebar's list of pages.

Why a list of our own: Streamlit's pages folder names the main page after its file (``app.py`` ->
"app") and has no setting to rename it; the only renaming API is ``st.navigation``, which this
layout must not call (with a ``pages/`` folder present it misroutes deep links and loses session
state). So ``.streamlit/config.toml`` hides the built-in list (``client.showSidebarNavigation =
false``) and ``page_setup`` draws this one with ``st.page_link``, where the main page is "Home".
A page added to ``pages/`` shows up here by itself (named like Streamlit would name it).
"""
from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

# Importing compute applies the app's torch thread cap; a deep link can open any page first.
import pages.ui.compute  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
APP_TITLE = "Learn to Pay Attention"
HOME = ("app.py", "Home", ":material/home:")
ICONS = {
    "Compare": ":material/compare:", "Models": ":material/table_chart:", "Masks": ":material/texture:",
    "Adversarial": ":material/bolt:", "Lesson": ":material/school:", "Faithfulness": ":material/fact_check:",
}
_PAGE_FILE = re.compile(r"(\d+)_(.+)\.py")


def pages() -> list[tuple[str, str, str | None]]:
    """(path relative to the repository, label, icon) of Home and every page in ``pages/``, in
    the sidebar's order."""
    found = []
    for path in (REPO / "pages").glob("*.py"):
        match = _PAGE_FILE.fullmatch(path.name)
        if match:
            label = match.group(2).replace("_", " ")
            found.append((int(match.group(1)), f"pages/{path.name}", label, ICONS.get(label)))
    return [HOME] + [(path, label, icon) for _, path, label, icon in sorted(found)]


def sidebar_nav() -> None:
    """The list of pages at the top of the sidebar."""
    with st.sidebar:
        for path, label, icon in pages():
            st.page_link(path, label=label, icon=icon)
        st.divider()


def page_setup(title: str | None = None) -> None:
    """``st.set_page_config`` (wide layout; tab title ``title · Learn to Pay Attention``) and the
    sidebar's page list, then a warning for each zoo card the app skips. Call it first on every
    page."""
    from pages.ui.widgets import zoo_problems_warning  # widgets is the heavier module; load it late

    st.set_page_config(page_title=f"{title} · {APP_TITLE}" if title else APP_TITLE, page_icon="🔎",
                       layout="wide")
    sidebar_nav()
    zoo_problems_warning()
