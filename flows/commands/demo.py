"""`tradeloop demo`: the whole loop offline, ending with a dashboard."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    data: Annotated[
        Path | None,
        typer.Option(
            help="folder of candle files (e.g. ../shared/data/candles) instead of "
            "the simulated exchange"
        ),
    ] = None,
    symbol: Annotated[
        list[str] | None,
        typer.Option("--symbol", "-s", help="symbol, repeatable (default: 3 simulated pairs)"),
    ] = None,
    days: Annotated[float, typer.Option(help="days of 1m candles to collect")] = 3.0,
    epochs: Annotated[int, typer.Option(help="maximum training epochs")] = 5,
    max_train_seconds: Annotated[
        float, typer.Option(help="time box per neural ensemble member")
    ] = 45.0,
    serve_candles: Annotated[
        int, typer.Option(help="candles to serve with paper trading (when serving is installed)")
    ] = 120,
) -> None:
    """Collect -> quality -> features -> train -> ONNX -> promote -> backtest -> serve, then a
    dashboard. Offline; under 10 minutes on 2 cores."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from rich.console import Console

    from flows.commands.runflow import run_flow
    from flows.demo import dashboard
    from flows.demo import demo as demo_flow

    console = Console()
    if data is not None and not data.is_dir():
        typer.echo(f"error: --data {data} is not a folder", err=True)
        raise typer.Exit(2)
    console.rule("[bold]tradeloop demo")
    with console.status("running the loop...", spinner="dots"):
        summary = run_flow(
            demo_flow,
            data=str(data.resolve()) if data else None,
            symbols=list(symbol) if symbol else None,
            days=days,
            epochs=epochs,
            max_train_seconds=max_train_seconds,
            serve_candles=serve_candles,
        )
    console.print(dashboard(summary))
