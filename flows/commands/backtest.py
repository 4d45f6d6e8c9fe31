"""`tradeloop backtest`: measure a signal file (yours or a model's) with the trading engines."""

from __future__ import annotations

import json
import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer


class Format(StrEnum):
    table = "table"
    json = "json"


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest)


def backtest(
    signals: Annotated[
        Path, typer.Option("--signals", help="Parquet/CSV: ts, symbol, signal, [size]")
    ],
    symbol: Annotated[
        str | None, typer.Option(help="symbol to test (default: the file's only one)")
    ] = None,
    timeframe: Annotated[str, typer.Option(help="candle timeframe in the warehouse")] = "1m",
    exchange: Annotated[str | None, typer.Option(help="exchange in the warehouse")] = None,
    candles: Annotated[
        Path | None, typer.Option(help="read candles from this file, not the warehouse")
    ] = None,
    fee: Annotated[float, typer.Option(help="taker fee, fraction per side (0.001 = 0.1%)")] = 0.001,
    maker_fee: Annotated[
        float | None, typer.Option(help="maker fee fraction (default: --fee)")
    ] = None,
    slippage: Annotated[float, typer.Option(help="slippage, fraction of price per side")] = 0.0,
    initial_cash: Annotated[float, typer.Option(help="starting equity, quote currency")] = 10_000.0,
    allow_short: Annotated[bool, typer.Option(help="act on -1 as a short (default: flat)")] = False,
    max_position: Annotated[
        float, typer.Option(help="per-symbol exposure, fraction of equity")
    ] = 1.0,
    stop_loss_vol: Annotated[
        float | None, typer.Option(help="stop-loss distance in sigmas")
    ] = None,
    take_profit_vol: Annotated[
        float | None, typer.Option(help="take-profit distance in sigmas")
    ] = None,
    max_drawdown: Annotated[
        float | None, typer.Option(help="kill switch drawdown fraction")
    ] = None,
    trials: Annotated[int, typer.Option(help="configurations tried (for the deflated Sharpe)")] = 1,
    report: Annotated[
        bool, typer.Option(help="write the HTML+JSON report under TRADELOOP_HOME/reports")
    ] = True,
    output: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """Backtest a signal file on warehouse candles: a signal at bar t trades at bar t+1's open."""
    from trading.backtest import BacktestConfig, load_candle_file
    from trading.domain import FeeModel
    from trading.evaluation import load_warehouse_candles, signal_backtest
    from trading.risk import RiskLimits
    from trading.signals_io import SignalFileError, read_signal_file
    from warehouse import connect, get_settings

    settings = get_settings()
    try:
        frame = read_signal_file(signals)
        symbols = sorted(set(frame["symbol"].to_list()))
        chosen = symbol or (symbols[0] if len(symbols) == 1 else None)
        if chosen is None:
            raise SignalFileError(
                f"{signals.name} has several symbols {symbols}; pick one with --symbol"
            )
        if candles is not None:
            bars = load_candle_file(candles, chosen)
        else:
            con = connect(settings, read_only=True)
            try:
                bars = load_warehouse_candles(con, chosen, timeframe, exchange)
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
        summary = signal_backtest(
            bars,
            signals,
            config,
            n_trials=trials,
            reports_dir=settings.home / "reports" if report else None,
        )
    except (SignalFileError, LookupError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if output == Format.json:
        typer.echo(json.dumps(_clean(summary)))
        return
    _print_table(summary)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from trading.report import METRIC_ROWS

    base = summary["baselines"]
    table = Table(
        "metric",
        "strategy",
        *base,
        title=f"{summary['symbol']} {summary['timeframe']}: {summary['strategy']}",
    )
    for key in METRIC_ROWS:
        cells = [summary.get(key), *(b.get(key) for b in base.values())]
        table.add_row(key, *(_fmt(v) for v in cells))
    Console(width=120).print(table)
    if "report_html" in summary:
        typer.echo(f"report: {summary['report_html']}")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)
