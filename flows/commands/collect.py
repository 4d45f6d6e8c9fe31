"""`tradeloop collect` and `tradeloop import`: market data into the warehouse."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer


class SourceName(StrEnum):
    simulated = "simulated"
    ccxt = "ccxt"
    file = "file"


def register(app: typer.Typer) -> None:
    app.command("collect")(collect)
    app.command("import")(import_files)
    app.command("loopback-exchange")(loopback_exchange)


def _print_report(report: dict[str, Any]) -> None:
    for s in report["stats"]:
        typer.echo(s.summary())
    typer.echo(
        f"run {report['run_id']}: {report['rows_fetched']} rows fetched, "
        f"{report['rows_merged']} merged, {report['rows_quarantined']} quarantined, "
        f"{report['requests']} requests, {report['gaps']} gaps"
    )


def _run(**kwargs: Any) -> None:
    from flows.collect import collect as collect_flow
    from flows.runners import on_runner
    from warehouse import get_settings

    try:
        report = on_runner(collect_flow, get_settings())(**kwargs)
    except Exception as exc:  # the flow names the series and the cause
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    _print_report(report)


def collect(
    source: Annotated[
        SourceName, typer.Option(help="where the data comes from")
    ] = SourceName.simulated,
    exchange: Annotated[
        str | None,
        typer.Option(help="ccxt exchange id (e.g. binance); for simulated/file: the name stored"),
    ] = None,
    symbol: Annotated[
        list[str] | None,
        typer.Option("--symbol", "-s", help="symbol, repeatable (default: settings.symbols)"),
    ] = None,
    timeframe: Annotated[
        list[str] | None, typer.Option("--timeframe", "-t", help="1m, 5m, 15m, 1h; repeatable")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="ISO 8601 UTC or epoch ms (default: --lookback-days ago)")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="ISO 8601 UTC or epoch ms (default: now)")
    ] = None,
    lookback_days: Annotated[float, typer.Option(help="window when --since is not given")] = 1.0,
    ccxt_config: Annotated[
        str | None,
        typer.Option(help="JSON passed to the ccxt constructor, e.g. '{\"timeout\": 5000}'"),
    ] = None,
    api_base: Annotated[
        str | None,
        typer.Option(
            help="point the exchange's REST hosts at this base URL (testnet, proxy, loopback)"
        ),
    ] = None,
    path: Annotated[
        Path | None, typer.Option(help="file source: a file or a freqtrade data directory")
    ] = None,
    seed: Annotated[int, typer.Option(help="simulated exchange seed")] = 7,
    resample: Annotated[
        bool,
        typer.Option(
            "--resample/--no-resample", help="build timeframes other than 1m from stored 1m candles"
        ),
    ] = False,
    trades: Annotated[bool, typer.Option(help="also collect public trades")] = False,
    order_book: Annotated[
        bool, typer.Option(help="also store one order-book snapshot per symbol")
    ] = False,
    no_resume: Annotated[
        bool, typer.Option("--no-resume", help="refetch the whole window")
    ] = False,
) -> None:
    """Collect candles through the quality gate (resumes after the last stored candle)."""
    config: dict[str, Any] = {}
    if ccxt_config:
        try:
            config = json.loads(ccxt_config)
        except json.JSONDecodeError as exc:
            typer.echo(f"error: --ccxt-config is not valid JSON: {exc}", err=True)
            raise typer.Exit(2) from exc
        if not isinstance(config, dict):
            typer.echo("error: --ccxt-config must be a JSON object", err=True)
            raise typer.Exit(2)
    if source is SourceName.file and path is None:
        typer.echo("error: --source file needs --path", err=True)
        raise typer.Exit(2)
    _run(
        source=source.value,
        exchange=exchange,
        symbols=list(symbol) if symbol else None,
        timeframes=list(timeframe) if timeframe else None,
        since=since,
        until=until,
        ccxt_config=config,
        api_base=api_base,
        path=str(path) if path else None,
        seed=seed,
        resume=not no_resume,
        resample_from_1m=resample,
        trades=trades,
        order_book=order_book,
        lookback_days=lookback_days,
    )


def import_files(
    path: Annotated[Path, typer.Argument(help="a candle/trade file or a freqtrade data directory")],
    exchange: Annotated[str, typer.Option(help="exchange name stored with the rows")] = "file",
    symbol: Annotated[
        list[str] | None,
        typer.Option("--symbol", "-s", help="only these symbols (default: all in PATH)"),
    ] = None,
) -> None:
    """Import freqtrade data (PAIR-TF.feather|json|parquet, PAIR-trades.feather), CSV, Parquet."""
    if not path.exists():
        typer.echo(f"error: {path}: no such file or directory", err=True)
        raise typer.Exit(2)
    _run(source="file", exchange=exchange, path=str(path), symbols=list(symbol) if symbol else None)


def loopback_exchange(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0 = any free port)")] = 8765,
    symbol: Annotated[
        list[str] | None,
        typer.Option("--symbol", "-s", help="markets to list (default: settings.symbols)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="simulated exchange seed")] = 7,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="fault pattern for klines, repeatable: 429, 500, 503, slow, truncated, "
            "duplicates, shuffled, auth, ok"
        ),
    ] = None,
    seconds: Annotated[float, typer.Option(help="stop after this long (0 = until Ctrl-C)")] = 0.0,
) -> None:
    """Serve the simulated exchange in the Binance REST shape on 127.0.0.1 (for --api-base)."""
    import time

    from pipelines.loopback import Fault, FaultPlan, LoopbackExchange, LoopbackServer
    from pipelines.simulated_exchange import SimulatedExchange, SimulationConfig
    from warehouse import get_settings

    try:
        pattern = tuple(None if f == "ok" else Fault(f) for f in (fault or []))
    except ValueError as exc:
        typer.echo(f"error: unknown fault: {exc}", err=True)
        raise typer.Exit(2) from exc
    exchange = LoopbackExchange(
        symbols=list(symbol or get_settings().symbols),
        simulated=SimulatedExchange(SimulationConfig(seed=seed)),
        faults=FaultPlan(pattern=pattern),
    )
    server = LoopbackServer(exchange, port=port).start()
    typer.echo(f"loopback exchange on {server.url} (Binance REST shape); Ctrl-C stops it")
    typer.echo(f"  tradeloop collect --source ccxt --exchange binance --api-base {server.url}")
    try:
        deadline = time.monotonic() + seconds if seconds > 0 else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
