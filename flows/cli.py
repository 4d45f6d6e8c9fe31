"""`tradeloop`: the front door to every flow.

Each command group lives in ``flows/commands/<name>.py`` with a ``register(app)`` function;
heavy imports (Prefect, Great Expectations, torch) happen inside the commands, so the CLI
starts fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from flows.commands.context import cli_options, note_fresh_paths

app = typer.Typer(
    name="tradeloop",
    help="ML trading data platform: collect, validate, featurize, train, backtest, serve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# One module per command group; each adds its commands to `app`.
COMMAND_MODULES = [
    "flows.commands.warehouse",
    "flows.commands.collect",
    "flows.commands.models",
    "flows.commands.features",
    "flows.commands.quality",
    "flows.commands.demo",
    "flows.commands.backtest",
    "flows.commands.serve",
    "flows.commands.inventory",
    "flows.commands.walkforward",
    "flows.commands.reports",
    "flows.commands.tune",
    "flows.commands.news",
    "flows.commands.alerts",
]

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"tradeloop {version('tradeloop')}")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="debug logs, and tracebacks on errors")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="settings file (TOML; default ./tradeloop.toml)"),
    ] = None,
    prefect: Annotated[
        bool,
        typer.Option(
            "--prefect",
            help="record the run on the Prefect API (PREFECT_API_URL set does the same; "
            "without either, commands run directly and start no server)",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """ML trading data platform: collect, validate, featurize, train, backtest, serve."""
    options = cli_options()
    options.verbose = verbose
    options.prefect = prefect
    if config is not None:
        if not config.is_file():
            typer.echo(f"error: --config {config}: no such file", err=True)
            raise typer.Exit(2)
        os.environ["TRADELOOP_CONFIG"] = str(config)
        from warehouse import get_settings

        get_settings.cache_clear()
    note_fresh_paths(ctx.invoked_subcommand)
    console = logging.StreamHandler()
    console.setFormatter(
        logging.Formatter(LOG_FORMAT) if verbose else _NoTracebackFormatter(LOG_FORMAT)
    )
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[console])
    logging.getLogger("tradeloop").setLevel(logging.DEBUG if verbose else logging.INFO)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _NoTracebackFormatter(logging.Formatter):
    """Log lines without the tracebacks a library attaches (Prefect logs a failed flow run's
    with its error): the command's error is one line, and ``-v`` shows the traceback. Only this
    handler's text loses it: the record keeps it for Prefect's API handler (the run's logs)."""

    def format(self, record: logging.LogRecord) -> str:
        # another handler may have cached the traceback's text on the record (exc_text)
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def main() -> None:
    """Run the CLI. Every expected failure is one line on stderr naming what failed and the next
    step: status 2 for a usage error (a bad option or value), 1 for failed work. An unexpected
    error is one line too; ``-v`` shows its traceback. A failed command that created the
    warehouse and stored nothing in it removes it again."""
    from typer._click import exceptions as click  # typer raises its vendored click's errors

    try:
        code = app(standalone_mode=False)
    except click.UsageError as exc:
        # click's own usage errors (unknown option, missing value) as one line, not a box
        path = exc.ctx.command_path if exc.ctx is not None else _command_path()
        where = f" (see `{path} --help`)"
        _fail(f"error: {one_line(exc.format_message())}{where}", exc.exit_code)
    except click.ClickException as exc:
        _fail(f"error: {one_line(exc.format_message())}", exc.exit_code)
    except typer.Abort:
        _fail("aborted", 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        _drop_empty_warehouse()
        if cli_options().verbose:
            raise
        from warehouse.errors import WarehouseError

        if isinstance(exc, WarehouseError | FileNotFoundError | LookupError):
            _fail(f"error: {one_line(str(exc))}", 1)  # an expected failure: its message says it
        _fail(f"error: {type(exc).__name__}: {one_line(str(exc))} (-v shows the traceback)", 1)
    code = code if isinstance(code, int) else 0
    if code:
        _drop_empty_warehouse()
    sys.exit(code)


def _command_path() -> str:
    """``tradeloop COMMAND`` from the command line, for a usage error that has no context."""
    words = [a for a in sys.argv[1:] if not a.startswith("-")]
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    return f"tradeloop {words[0]}" if words and words[0] in names else "tradeloop"


def one_line(message: str, limit: int = 400) -> str:
    """A message on one line: its lines joined, DuckDB's caret lines dropped, at most ``limit``
    characters."""
    lines = [line.strip() for line in message.splitlines()]
    text = " ".join(line for line in lines if line and set(line) != {"^"})
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _fail(message: str, code: int) -> None:
    _drop_empty_warehouse()
    typer.echo(message, err=True)
    sys.exit(code)


# what migrations (and their seeded defaults) and a failed run write, which alone do not make a
# warehouse worth keeping
BOOKKEEPING_TABLES = (
    "schema_migrations",
    "table_keys",
    "write_tokens",
    "ingestion_runs",
    "news_terms",  # seeded by its migration: defaults a user may edit, not data
)


def _drop_empty_warehouse() -> None:
    """Remove the folders this command created (``note_fresh_paths``) when the warehouse in them
    holds no rows: a failed first attempt must not leave an empty catalog that later commands
    take for a warehouse."""
    fresh = cli_options().fresh_paths
    cli_options().fresh_paths = None  # once
    if not fresh:
        return
    import shutil

    from warehouse import connect, get_settings

    settings = get_settings()
    try:
        if settings.sqlite_catalog_path.exists():
            con = connect(settings, read_only=True)
            try:
                tables = con.execute(
                    "SELECT table_name FROM duckdb_tables() "
                    "WHERE database_name = current_database() AND NOT list_contains(?, table_name)",
                    [list(BOOKKEEPING_TABLES)],
                ).fetchall()
                rows = 0
                for (name,) in tables:
                    found = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()
                    rows += int(found[0]) if found else 0
            finally:
                con.close()
            if rows:
                return  # the command stored something before it failed: keep it
        shutil.rmtree(fresh[0], ignore_errors=True)  # the outermost folder it created
    except Exception:  # cleaning up must never hide the command's own error
        logging.getLogger("tradeloop").debug("could not remove the empty warehouse", exc_info=True)


if __name__ == "__main__":
    main()
