"""`tradeloop backtest`: measure a signal file (``--signals``) or a registered model
(``--model``, through the serving loop's decision path) on stored candles."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.commands import options as opt


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest)


def backtest(
    signals: Annotated[
        Path | None,
        typer.Option(
            "--signals", help="Parquet/CSV: ts, symbol, signal, [size]", show_default=False
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="'champion' or a model id: run the registered model through serve's decisions",
            show_default=False,
        ),
    ] = None,
    symbol: opt.SymbolOption = None,
    timeframe: opt.TimeframeOption = None,
    exchange: opt.ExchangeOption = None,
    timerange: opt.TimerangeOption = None,
    candles: Annotated[
        Path | None,
        typer.Option(help="--signals: read candles from this file, not the warehouse"),
    ] = None,
    fee: Annotated[float, typer.Option(help="taker fee, fraction per side (0.001 = 0.1%)")] = 0.001,
    maker_fee: Annotated[
        float | None, typer.Option(help="maker fee fraction (default: --fee)")
    ] = None,
    slippage: Annotated[
        float | None,
        typer.Option(
            help="slippage, fraction of price per side (default: 0 for --signals, serve's "
            "0.0005 for --model)",
            show_default=False,
        ),
    ] = None,
    initial_cash: Annotated[float, typer.Option(help="starting equity, quote currency")] = 10_000.0,
    allow_short: Annotated[bool, typer.Option(help="act on -1 as a short (default: flat)")] = False,
    max_position: Annotated[
        float, typer.Option(help="--signals: per-symbol exposure, fraction of equity")
    ] = 1.0,
    stop_loss_vol: Annotated[
        float | None, typer.Option(help="--signals: stop-loss distance in sigmas")
    ] = None,
    take_profit_vol: Annotated[
        float | None, typer.Option(help="--signals: take-profit distance in sigmas")
    ] = None,
    max_drawdown: Annotated[
        float | None, typer.Option(help="--signals: kill switch drawdown fraction")
    ] = None,
    trials: Annotated[int, typer.Option(help="configurations tried (for the deflated Sharpe)")] = 1,
    report: Annotated[
        bool, typer.Option(help="write the HTML+JSON report under TRADELOOP_HOME/reports")
    ] = True,
    output_format: Annotated[
        opt.OutputFormat, typer.Option("--format", "-f", help="table or json")
    ] = opt.OutputFormat.table,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            help="--model: one row per bar (ts, symbol, p_buy, p_hold, p_sell, confidence, "
            "score, signal, reason) to FILE.csv or FILE.parquet",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Backtest on warehouse candles: a decision at bar t trades at bar t+1's open.

    --signals FILE measures your signals; --model champion|ID runs a registered model through
    the same per-bar decision path as `serve` (features and inference batched over the range)
    and reports its IC, calibration and trades beside the baselines."""
    if (signals is None) == (model is None):
        raise opt.usage_error("give one of --signals FILE or --model champion|MODEL_ID")
    if signals is not None and not signals.is_file():
        raise opt.usage_error(f"--signals {signals}: no such file")
    if output_format == opt.OutputFormat.csv:
        raise opt.usage_error("--format: table or json (per-bar rows: --output FILE.csv)")
    if output is not None and model is None:
        raise opt.usage_error("--output writes a model's per-bar rows; it needs --model")
    if output is not None and output.suffix not in (".csv", ".parquet"):
        raise opt.usage_error(f"--output {output}: use a .csv or .parquet file name")
    symbols = opt.symbols(symbol)
    if symbols is not None and len(symbols) > 1:
        raise opt.usage_error(f"backtest runs one symbol at a time, got {', '.join(symbols)}")
    start, end = opt.timerange(timerange)
    if model is not None:
        summary = _model(
            model,
            symbols,
            opt.timeframe(timeframe),
            exchange,
            (start, end),
            fee=fee,
            slippage=slippage,
            initial_cash=initial_cash,
            allow_short=allow_short,
            trials=trials,
            report=report,
            output=output,
        )
    else:
        assert signals is not None
        summary = _signals(
            signals,
            symbols,
            opt.timeframe(timeframe),
            exchange,
            candles,
            fee=fee,
            maker_fee=maker_fee,
            slippage=0.0 if slippage is None else slippage,
            initial_cash=initial_cash,
            allow_short=allow_short,
            max_position=max_position,
            stop_loss_vol=stop_loss_vol,
            take_profit_vol=take_profit_vol,
            max_drawdown=max_drawdown,
            trials=trials,
            report=report,
        )
    if output_format == opt.OutputFormat.json:
        from flows.commands.output import json_ready

        typer.echo(json.dumps(json_ready(summary)))
        return
    _print_table(summary)


def _ms(value: Any) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def _model(
    model: str,
    symbols: list[str] | None,
    timeframe: str | None,
    exchange: str | None,
    window: tuple[Any, Any],
    *,
    fee: float,
    slippage: float | None,
    initial_cash: float,
    allow_short: bool,
    trials: int,
    report: bool,
    output: Path | None,
) -> dict[str, Any]:
    import dataclasses

    from flows.commands.series import resolve
    from trading.loop import LoopConfig
    from trading.model_backtest import ModelBacktestError, loop_config, model_backtest
    from warehouse import connect, get_settings

    settings = get_settings()
    series = resolve(symbols, timeframe, exchange)
    if len(series.symbols) != 1:
        raise opt.usage_error(
            f"the warehouse holds symbols {', '.join(series.symbols)} for {series.timeframe}; "
            "pick one with --symbol"
        )
    base = LoopConfig.from_settings(settings) if hasattr(LoopConfig, "from_settings") else None
    config = loop_config(fee, slippage, base)
    config = dataclasses.replace(
        config,
        initial_cash=initial_cash,
        limits=dataclasses.replace(config.limits, allow_short=allow_short),
    )
    from flows.commands.progress import command_progress

    con = connect(settings, read_only=True)
    try:
        with command_progress():  # bars of the run, then of each stress scenario
            return model_backtest(
                con,
                symbol=series.symbols[0],
                timeframe=series.timeframe,
                exchange=series.exchange,
                model=model,
                start_ms=_ms(window[0]),
                end_ms=_ms(window[1]),
                config=config,
                n_trials=trials,
                output=output,
                reports_dir=settings.home / "reports" if report else None,
            )
    except (ModelBacktestError, LookupError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        con.close()


def _signals(
    signals: Path,
    symbols: list[str] | None,
    timeframe: str | None,
    exchange: str | None,
    candles: Path | None,
    *,
    fee: float,
    maker_fee: float | None,
    slippage: float,
    initial_cash: float,
    allow_short: bool,
    max_position: float,
    stop_loss_vol: float | None,
    take_profit_vol: float | None,
    max_drawdown: float | None,
    trials: int,
    report: bool,
) -> dict[str, Any]:
    from trading.backtest import BacktestConfig, load_candle_file
    from trading.domain import FeeModel
    from trading.evaluation import load_warehouse_candles, signal_backtest
    from trading.risk import RiskLimits
    from trading.signals_io import SignalFileError, read_signal_file
    from warehouse import connect, get_settings

    settings = get_settings()
    try:
        frame = read_signal_file(signals)
        in_file = sorted(set(frame["symbol"].to_list()))
        chosen = symbols[0] if symbols else (in_file[0] if len(in_file) == 1 else None)
        if chosen is None:
            raise opt.usage_error(
                f"{signals.name} has several symbols {in_file}; pick one with --symbol"
            )
        stored_on = None  # the exchange the candles are stored under (the report names it)
        if candles is not None:
            bars = load_candle_file(candles, chosen)
        else:
            from flows.commands.series import resolve

            series = resolve([chosen], timeframe, exchange)
            stored_on = series.exchange
            con = connect(settings, read_only=True)
            try:
                bars = load_warehouse_candles(con, chosen, series.timeframe, series.exchange)
            finally:
                con.close()
        config = BacktestConfig(
            initial_cash=initial_cash,
            fees=FeeModel(fee if maker_fee is None else maker_fee, fee),
            slippage_fraction=slippage,
            limits=RiskLimits(
                max_position_fraction=max_position,
                allow_short=allow_short,
                stop_loss_vol_mult=stop_loss_vol,
                take_profit_vol_mult=take_profit_vol,
                max_drawdown_fraction=max_drawdown,
            ),
        )
        return signal_backtest(
            bars,
            signals,
            config,
            n_trials=trials,
            reports_dir=settings.home / "reports" if report else None,
            exchange=stored_on,
        )
    except (SignalFileError, LookupError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


MODEL_ROWS = (
    "ic",
    "ic_ci_low",
    "ic_ci_high",
    "log_loss",
    "brier",
    "ece",
    "accuracy",
    "majority_class_accuracy",
    "model_trades",
    "fallback_trades",
    "model_bars",
    "fallback_bars",
)


def _print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from trading.report import METRIC_ROWS

    base = summary["baselines"]
    console = Console(width=120)
    table = Table(
        "metric",
        "strategy",
        *base,
        title=f"{summary['symbol']} {summary['timeframe']}: {summary['strategy']}",
    )
    for key in METRIC_ROWS:
        cells = [summary.get(key), *(b.get(key) for b in base.values())]
        table.add_row(key, *(_fmt(v) for v in cells))
    console.print(table)
    if "ic" in summary:
        model = Table("model measure", "value", title=f"model {summary['model_id']}")
        for key in MODEL_ROWS:
            model.add_row(key, _fmt(summary.get(key)))
        console.print(model)
    if summary.get("sigma"):
        typer.echo(f"sigma of stops, take-profit and sizing: {summary['sigma']}")
    if summary.get("in_sample_bars"):
        typer.echo(
            f"note: {summary['in_sample_bars']} of the {summary['bars']} bars precede the model's "
            "out-of-sample test window (it trained or calibrated on them): their figures are in "
            "sample; use --timerange from the test window's start for out-of-sample figures"
        )
    for key in ("output", "report_html"):
        if key in summary:
            typer.echo(f"{key.replace('_html', '')}: {summary[key]}")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if math.isfinite(v) else "-"
    return str(v)
