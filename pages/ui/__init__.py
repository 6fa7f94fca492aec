"""Streamlit code shared by the app's pages (a package, so Streamlit does not list it as a page).

- ``nav``: ``page_setup`` (page config and the sidebar's page list, where the main page is "Home").
- ``state``: session-state keys that persist across pages.
- ``url_state``: the page settings in the URL query string (shareable links), validated.
- ``widgets``: ``image_picker``, ``model_picker``, ``load_model`` (cached once per process).
- ``compute``: results cached on image bytes and settings (``analysis_for``, ``posthoc_for``...).
- ``views``: blocks of output several pages draw (top-5 chart, stage overlays, downloads).
- ``lesson``: the Lesson page's steps and presets; ``text``: user text shown as plain text.
"""
