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

from flows.commands.context import cli_options

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
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("tradeloop").setLevel(logging.DEBUG if verbose else logging.INFO)


def main() -> None:
    """Run the CLI. An unexpected error is one line (exit 1); ``-v`` shows its traceback."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if cli_options().verbose:
            raise
        from warehouse.errors import WarehouseError

        if isinstance(exc, WarehouseError | FileNotFoundError | LookupError):
            typer.echo(f"error: {exc}", err=True)  # an expected failure: its message says it all
        else:
            typer.echo(f"error: {type(exc).__name__}: {exc} (-v shows the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
