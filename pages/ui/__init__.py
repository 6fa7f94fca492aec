"""Streamlit code shared by the app's pages (a package, so Streamlit does not list it as a page).

- ``state``: session-state keys that persist across pages.
- ``widgets``: ``image_picker``, ``model_picker``, ``load_model`` (cached once per process).
- ``compute``: results cached on image bytes and settings (``analysis_for``, ``posthoc_for``...).
- ``views``: blocks of output several pages draw (top-5 chart, stage overlays, downloads).
"""
