"""`tradeloop collect` and `tradeloop import`: market data into the warehouse."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.commands import options as opt


class SourceName(StrEnum):
    simulated = "simulated"
    ccxt = "ccxt"
    file = "file"


def register(app: typer.Typer) -> None:
    app.command("collect")(collect)
    app.command("import")(import_files)
    app.command("loopback-exchange")(loopback_exchange)


def _print_report(report: dict[str, Any]) -> None:
    if "cycles" in report:  # the warm collector logged each cycle as it ended
        typer.echo(
            f"run {report['run_id']}: {len(report['cycles'])} cycles, "
            f"{report['rows_fetched']} rows fetched, {report['rows_merged']} merged, "
            f"{report['rows_quarantined']} quarantined, "
            f"{len(report['failed_cycles'])} cycles failed"
        )
        return
    for s in report["stats"]:
        typer.echo(s.summary())
    typer.echo(
        f"run {report['run_id']}: {report['rows_fetched']} rows fetched, "
        f"{report['rows_merged']} merged, {report['rows_quarantined']} quarantined, "
        f"{report['requests']} requests, {report['gaps']} gaps"
    )


def _run(**kwargs: Any) -> None:
    from flows.collect import collect as collect_flow
    from flows.commands.progress import command_progress
    from flows.commands.runflow import run_flow

    try:
        with command_progress("candles"):  # count and rate; a series' size is known late
            report = run_flow(collect_flow, **kwargs)
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
    symbol: opt.SymbolOption = None,
    timeframe: opt.TimeframesOption = None,
    timerange: opt.TimerangeOption = None,
    since: Annotated[
        str | None, typer.Option(hidden=True, help="old spelling of --timerange START:")
    ] = None,
    until: Annotated[
        str | None, typer.Option(hidden=True, help="old spelling of --timerange :END")
    ] = None,
    lookback_days: Annotated[
        float, typer.Option(help="window when --timerange has no START")
    ] = 1.0,
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
    trades: Annotated[
        bool,
        typer.Option(help="also collect public trades (with --follow-every: every cycle)"),
    ] = False,
    order_book: Annotated[
        bool,
        typer.Option(
            help="also store one order-book snapshot per symbol (with --follow-every: one a "
            "cycle); TRADELOOP_MICROSTRUCTURE_SYMBOLS turns both on per symbol"
        ),
    ] = False,
    no_resume: Annotated[
        bool, typer.Option("--no-resume", help="refetch the whole window")
    ] = False,
    follow_every: Annotated[
        float | None,
        typer.Option(
            "--follow-every",
            metavar="SECONDS",
            help="keep running: a cycle every SECONDS fetches every symbol's new candles, "
            "gates them in one call and updates their features (the warm collector)",
        ),
    ] = None,
    max_cycles: Annotated[
        int | None,
        typer.Option("--max-cycles", metavar="N", help="with --follow-every: stop after N cycles"),
    ] = None,
) -> None:
    """Collect candles through the quality gate (resumes after the last stored candle).

    With --follow-every the process stays up and collects every SECONDS (docs/data.md)."""
    if follow_every is not None and follow_every <= 0:
        raise opt.usage_error(f"--follow-every must be > 0 seconds, got {follow_every:g}")
    if max_cycles is not None and (max_cycles < 1 or follow_every is None):
        raise opt.usage_error("--max-cycles N needs --follow-every and N >= 1")
    if follow_every is not None and (source is SourceName.file or resample):
        raise opt.usage_error(
            "--follow-every follows an exchange's candles: not with --source file, --resample"
        )
    symbols = opt.symbols(symbol)
    timeframes = opt.timeframes(timeframe)
    start, end = opt.timerange(timerange)
    start = start or opt.when(since, "--since")
    end = end or opt.when(until, "--until")
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
        config = _credentials_to_environment(config)
    if source is SourceName.file and path is None:
        typer.echo("error: --source file needs --path", err=True)
        raise typer.Exit(2)
    _run(
        source=source.value,
        exchange=exchange,
        symbols=symbols,
        timeframes=timeframes,
        since=opt.iso(start),
        until=opt.iso(end),
        ccxt_config=config,
        api_base=api_base,
        path=str(path) if path else None,
        seed=seed,
        resume=not no_resume,
        resample_from_1m=resample,
        trades=trades,
        order_book=order_book,
        lookback_days=lookback_days,
        **(
            {"follow_every_s": follow_every, "max_cycles": max_cycles or 0}
            if follow_every is not None
            else {}
        ),
    )


# ccxt credential -> the setting that carries it (a secret; never a flow parameter)
CREDENTIAL_SETTINGS = {
    "apiKey": "TRADELOOP_EXCHANGE_API_KEY",
    "secret": "TRADELOOP_EXCHANGE_API_SECRET",
}


def _credentials_to_environment(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without its apiKey and secret, which go to this process's environment
    (the collect flow reads them from its settings): as flow parameters Prefect would store
    them in clear. Other credentials (password, uid, ...) have no setting: refused."""
    import os

    from pipelines.redaction import credentials_in
    from warehouse import get_settings

    config = dict(config)
    for key, variable in CREDENTIAL_SETTINGS.items():
        value = config.pop(key, None)
        if value:
            os.environ[variable] = str(value)
            get_settings.cache_clear()
    others = credentials_in(config)
    if others:
        raise opt.usage_error(
            f"--ccxt-config: {', '.join(others)} would be stored with the run; only apiKey and "
            "secret can be given (or TRADELOOP_EXCHANGE_API_KEY / TRADELOOP_EXCHANGE_API_SECRET)"
        )
    return config


def import_files(
    path: Annotated[Path, typer.Argument(help="a candle/trade file or a freqtrade data directory")],
    exchange: Annotated[str, typer.Option(help="exchange name stored with the rows")] = "file",
    symbol: opt.SymbolOption = None,
    timeframe: opt.TimeframeOption = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="a batch that fails the quality policy merges nothing (its passing rows too "
            "are held in quarantine) instead of merging its passing rows",
        ),
    ] = False,
) -> None:
    """Import freqtrade data (PAIR-TF.feather|json|parquet, PAIR-trades.feather), CSV, Parquet.

    For one file, -s and -t name its symbol and timeframe (over what its name says, so a file
    named anything imports); for a directory they pick which of its series to import.
    freqtrade's -mark and -funding_rate files go to mark_candles and funding_rates."""
    symbols = opt.symbols(symbol)
    tf = opt.timeframe(timeframe)
    if not path.exists():
        raise opt.usage_error(f"{path}: no such file or directory")
    one_file = path.is_file()
    if one_file and symbols is not None and len(symbols) > 1:
        raise opt.usage_error(f"one file holds one symbol; got -s {', '.join(symbols)}")
    _run(
        source="file",
        exchange=exchange,
        path=str(path),
        symbols=symbols,
        timeframes=[tf] if tf and not one_file else None,
        file_symbol=symbols[0] if one_file and symbols else None,
        file_timeframe=tf if one_file else None,
        **({"policy": _strict_policy()} if strict else {}),
    )


def _strict_policy() -> Any:
    from expectations.policy import GatePolicy

    return GatePolicy(quarantine_batch_on_failure=True)


def loopback_exchange(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0 = any free port)")] = 8765,
    symbol: opt.SymbolOption = None,
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
        symbols=opt.symbols(symbol) or list(get_settings().symbols),
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
