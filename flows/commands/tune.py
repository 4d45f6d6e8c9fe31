"""`tradeloop tune`: hyperparameter search (Optuna) judged by the purged cross-validated IC."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from flows.commands import options as opt


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)


def tune(
    symbol: Annotated[
        list[str] | None,
        typer.Option(
            "--symbols",
            "--symbol",
            "-s",
            help="symbols to tune on (repeatable or comma-separated; default: what is stored)",
            show_default=False,
        ),
    ] = None,
    timeframe: opt.TimeframeOption = None,
    exchange: opt.ExchangeOption = None,
    trials: Annotated[int, typer.Option(help="trials to run now (added to the study's)")] = 20,
    timeout: Annotated[float, typer.Option(help="seconds; no new trial starts after this")] = 3600,
    study: Annotated[
        str | None,
        typer.Option(help="study name; an existing one resumes (default: model-symbols-timeframe)"),
    ] = None,
    days: Annotated[float, typer.Option(help="tune on the last N days of candles")] = 30,
    seed: Annotated[int, typer.Option(help="sampler seed (plus the trials already run)")] = 7,
    output: opt.FormatOption = opt.OutputFormat.table,
) -> None:
    """Search the ensemble's architecture, training and label settings with Optuna; the
    objective is the mean IC over purged, embargoed folds. The best parameters become the next
    retrain's defaults (recorded with the model)."""
    symbols = opt.symbols(symbol)
    tf = opt.timeframe(timeframe)
    if trials < 1 or timeout <= 0 or days <= 0:
        raise opt.usage_error("--trials, --timeout and --days must be positive")
    from flows.commands.series import resolve

    series = resolve(symbols, tf, exchange)
    from flows.commands.runflow import run_flow
    from flows.tune import tune as tune_flow

    result = run_flow(
        tune_flow,
        symbols=list(series.symbols),
        timeframe=series.timeframe,
        exchange=series.exchange,
        days=days,
        trials=trials,
        timeout_s=timeout,
        study=study,
        seed=seed,
    )
    if output is opt.OutputFormat.json:
        from flows.commands.output import json_ready

        typer.echo(json.dumps(json_ready(result)))
        return
    from models.tuning import TuneResult, markdown

    typer.echo(markdown(TuneResult(**result)))
