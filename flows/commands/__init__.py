"""CLI command groups, one module each (see flows/cli.py)."""
