"""The options every command shares (set once by the root callback in ``flows.cli``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CliOptions:
    prefect: bool = False  # record the run on a Prefect API (a temporary server if none is set)
    verbose: bool = False  # tracebacks and debug logs


_OPTIONS = CliOptions()


def cli_options() -> CliOptions:
    return _OPTIONS
