"""Subcommands of the ltpa command line, one module each."""
