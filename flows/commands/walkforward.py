"""`tradeloop walk-forward`: the ensemble retrained per purged fold, each next window backtested."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from flows.commands import options as opt


def register(app: typer.Typer) -> None:
    app.command("walk-forward")(walk_forward)


def walk_forward(
    symbol: Annotated[
        list[str] | None,
        typer.Option(
            "--symbols",
            "--symbol",
            "-s",
            help="symbols to train on and test (repeatable or comma-separated; default: every "
            "stored symbol of the timeframe)",
            show_default=False,
        ),
    ] = None,
    timeframe: opt.TimeframeOption = None,
    exchange: opt.ExchangeOption = None,
    folds: Annotated[int, typer.Option(help="test windows, each after its own retrain")] = 3,
    train_days: Annotated[
        float, typer.Option(help="training window before each test window")
    ] = 10.0,
    test_days: Annotated[float, typer.Option(help="length of each test window")] = 3.0,
    epochs: Annotated[int, typer.Option(help="maximum epochs per fold's training")] = 5,
    horizon: Annotated[int, typer.Option(help="label horizon in bars")] = 5,
    fee: Annotated[
        float | None, typer.Option(help="taker fee per side, fraction (default: settings)")
    ] = None,
    slippage: Annotated[
        float | None, typer.Option(help="slippage per side, fraction (default: settings)")
    ] = None,
    feature_groups: opt.FeatureGroupsOption = None,
    output: opt.FormatOption = opt.OutputFormat.table,
) -> None:
    """Walk-forward the real ensemble as a strategy: IC with its CI, calibration, after-fee
    return and Sharpe against buy and hold, the RSI rule, flat and the majority class."""
    symbols = opt.symbols(symbol)
    tf = opt.timeframe(timeframe)
    if folds < 1 or train_days <= 0 or test_days <= 0 or epochs < 1:
        raise opt.usage_error("--folds, --train-days, --test-days and --epochs must be positive")
    overrides = opt.feature_groups(feature_groups)
    from flows.commands.series import resolve

    series = resolve(symbols, tf, exchange)
    from flows.commands.progress import command_progress
    from flows.commands.runflow import run_flow
    from flows.walk_forward import walk_forward as walk_forward_flow

    with command_progress():  # folds, and under each its members' and epochs' bars
        report = run_flow(
            walk_forward_flow,
            symbols=list(series.symbols),
            timeframe=series.timeframe,
            exchange=series.exchange,
            folds=folds,
            train_days=train_days,
            test_days=test_days,
            epochs=epochs,
            horizon=horizon,
            fee=fee,
            slippage=slippage,
            train_overrides=overrides,
        )
    if output is opt.OutputFormat.json:
        from flows.commands.output import json_ready

        typer.echo(json.dumps(json_ready(report, drop=frozenset({"curves"}))))
        return
    from flows.walk_forward import pooled_markdown

    typer.echo(pooled_markdown(report))
    typer.echo(f"report: {report['report_html']}")
