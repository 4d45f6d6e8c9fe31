"""`tradeloop`: the front door to every flow.

Each command group lives in ``flows/commands/<name>.py`` with a ``register(app)`` function;
heavy imports (Prefect, Great Expectations, torch) happen inside the commands, so the CLI
starts fast.
"""

from __future__ import annotations

import importlib

import typer

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
]

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
