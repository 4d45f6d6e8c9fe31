"""The options every command shares (set once by the root callback in ``flows.cli``), and the
warehouse paths that did not exist before this command: a failed command removes what it made
(``flows.cli.main``), so a failed first attempt leaves no empty catalog behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CliOptions:
    prefect: bool = False  # record the run on a Prefect API (a temporary server if none is set)
    verbose: bool = False  # tracebacks and debug logs
    # TRADELOOP_HOME and the lake folder when they were absent as the command started, outermost
    # first; None until the root callback ran (e.g. a usage error before it)
    fresh_paths: list[Path] | None = field(default=None)


_OPTIONS = CliOptions()


def cli_options() -> CliOptions:
    return _OPTIONS


# commands that may create the warehouse. Only they remove it after a failure: a read-only
# command (sql, data list, backtest, ...) never creates one, and one failing while another
# process initializes the same fresh home must not delete that process's warehouse
CREATING_COMMANDS = frozenset(
    {
        "init",
        "collect",
        "import",
        "features",
        "retrain",
        "serve",
        "quality",
        "maintain",
        "models",
        "news",
    }
)


def note_fresh_paths(command: str | None) -> None:
    """Remember which of the warehouse's local folders ``command`` is about to create."""
    from warehouse import get_settings

    settings = get_settings()
    if command not in CREATING_COMMANDS or settings.catalog_kind != "sqlite":
        _OPTIONS.fresh_paths = []  # nothing to remove (nor is a server catalog ours to)
        return
    candidates = [settings.home.resolve(), settings.lake_dir.resolve()]
    _OPTIONS.fresh_paths = [p for p in candidates if not p.exists()]


def require_warehouse() -> None:
    """Fail (``WarehouseNotFound``: one line naming the place and `tradeloop init`) before a
    command that reads or changes stored data creates an empty warehouse."""
    from warehouse import connect, get_settings

    connect(get_settings(), read_only=True).close()
