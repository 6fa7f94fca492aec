"""Tooling that trains, selects and ships the project's own zoo; not part of the user API.

Reached through ``ltpa zoo ...`` (maintainers only). A user of the library needs none of it: the
shipped models are loaded through :mod:`ltpa.zoo`.
"""
