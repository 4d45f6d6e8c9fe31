"""Flow `collect`: market data from a source, through the quality gate, into the warehouse.

On the thread runner (the CLI, served flows, the default) one task collects every series in
batched rounds (``pipelines.oneshot.collect_batched``, the warm collector's cycle: one
concurrent fetch, ONE gate call and ONE upsert per round; quarantine, policy,
``quality_results`` and ``ingestion_runs`` stay per series). On the Dask runner
(``task_runner = "dask"``: more cores, many machines) one task per symbol fans out, each
fetching its timeframes (resuming after the last stored candle) and passing every batch
through ``expectations.gate.gate_and_merge``. Either way the flow records the ingestion stats
and publishes a markdown artifact (key ``collect-quality``) summarising the run's series and
every gated batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from expectations.gate import GatePolicy, GateResult, gate_and_merge
from expectations.report import summary_markdown
from flows.alerts import quality_alerts
from flows.orchestration import (
    DEFAULT_TASK_RUNNER,
    NO_CACHE,
    create_markdown_artifact,
    flow,
    get_run_logger,
    task,
)
from pipelines.collect import (
    MergeFn,
    SeriesStats,
    SourceOptions,
    collect_resampled,
    collect_series,
    collect_trades,
    make_source,
    parse_time_ms,
    record_ingestion,
    snapshot_order_book,
    stats_markdown,
    stored_range,
)
from pipelines.follow import FetchPool
from pipelines.importers import merge_side_tables
from pipelines.microstructure import enabled
from pipelines.oneshot import collect_batched, collect_extras
from pipelines.redaction import refuse_credentials
from pipelines.resample import SUPPORTED_TIMEFRAMES, timeframe_ms
from pipelines.sources import FileSource, wall_clock_ms
from warehouse import Settings, connect, get_settings, migrate

ARTIFACT_KEY = "collect-quality"


@dataclass
class SymbolRun:
    """What one symbol's task did: its series stats and every gate result, in merge order."""

    stats: list[SeriesStats]
    gate_results: list[GateResult]


def _gate(
    con: Any,
    settings: Settings,
    run_id: str,
    policy: GatePolicy | None,
    results: list[GateResult],
) -> MergeFn:
    def merge(table: str, batch: Any) -> GateResult:
        result = gate_and_merge(con, table, batch, settings=settings, run_id=run_id, policy=policy)
        results.append(result)  # kept for the run's markdown artifact
        return result

    return merge


@task(name="collect-symbol", cache_policy=NO_CACHE, retries=0)
def collect_symbol(
    options: SourceOptions,
    settings: Settings,
    symbol: str,
    timeframes: Sequence[str],
    since_ms: int,
    until_ms: int | None,
    run_id: str,
    resume: bool = True,
    resample_from_1m: bool = False,
    trades: bool = False,
    order_book: bool = False,
    policy: GatePolicy | None = None,
) -> SymbolRun:
    logger = get_run_logger()
    con = connect(settings)
    source = make_source(options, settings)
    results: list[GateResult] = []
    merge = _gate(con, settings, run_id, policy, results)
    out: list[SeriesStats] = []
    try:
        direct = [tf for tf in timeframes if not (resample_from_1m and tf != "1m")]
        for timeframe in direct:
            stored = stored_range(con, source.name, symbol, timeframe)
            stats = collect_series(
                source,
                merge,
                symbol,
                timeframe,
                since_ms,
                until_ms,
                stored=stored,
                resume=resume,
                source_kind=options.kind,
            )
            logger.info(stats.summary())
            out.append(stats)
        for timeframe in (tf for tf in timeframes if tf not in direct):
            stats = collect_resampled(
                con,
                merge,
                source.name,
                symbol,
                timeframe,
                since_ms,
                until_ms,
                source_kind=options.kind,
            )
            logger.info(f"resampled from 1m: {stats.summary()}")
            out.append(stats)
        if trades:
            stats = collect_trades(
                source, merge, symbol, since_ms, until_ms, source_kind=options.kind
            )
            logger.info(stats.summary())
            out.append(stats)
        if order_book:
            stats = snapshot_order_book(source, merge, symbol, source_kind=options.kind)
            out.append(stats)
    finally:
        source.close()
        con.close()
    return SymbolRun(out, results)


@task(name="collect-batch", cache_policy=NO_CACHE, retries=0)
def collect_batch(
    options: SourceOptions,
    settings: Settings,
    plan: dict[str, list[str]],
    since_ms: int,
    until_ms: int | None,
    run_id: str,
    resume: bool = True,
    resample_from_1m: bool = False,
    trades: Sequence[str] = (),
    order_book: Sequence[str] = (),
    policy: GatePolicy | None = None,
    probe: FileSource | None = None,
    con: Any = None,
) -> SymbolRun:
    """Every symbol's timeframes (``plan``: symbol -> timeframes) in batched rounds, then the
    resampled timeframes, trades and order books, each table in one gate call. ``con``: the
    flow's connection (default: one of its own)."""
    logger = get_run_logger()
    direct = [
        (symbol, tf)
        for symbol, tfs in plan.items()
        for tf in tfs
        if not (resample_from_1m and tf != "1m")
    ]
    resampled = [
        (symbol, tf) for symbol, tfs in plan.items() for tf in tfs if (symbol, tf) not in direct
    ]
    own = con is None
    con = connect(settings) if own else con
    pool = FetchPool(options, settings, sources=[probe] if probe is not None else ())
    try:
        stats, results = collect_batched(
            con, settings, pool, direct, since_ms, until_ms, run_id=run_id,
            source_kind=options.kind, resume=resume, policy=policy, logger=logger,
        )  # fmt: skip
        extra, extra_results = collect_extras(
            con, settings, pool, run_id=run_id, source_kind=options.kind, since_ms=since_ms,
            until_ms=until_ms, resampled=resampled, trades=trades,
            order_book=order_book, policy=policy,
        )  # fmt: skip
    finally:
        pool.close()
        if own:
            con.close()
    for one in stats:
        logger.info(one.summary())
    for one in extra:
        resampled_one = (one.symbol, one.timeframe) in resampled
        logger.info(f"{'resampled from 1m: ' if resampled_one else ''}{one.summary()}")
    return SymbolRun(stats + extra, results + extra_results)


@task(name="record-ingestion-stats", cache_policy=NO_CACHE)
def record_stats(settings: Settings, run_id: str, stats: list[SeriesStats], con: Any = None) -> int:
    if con is not None:
        return record_ingestion(con, run_id, stats, settings=settings)
    con = connect(settings)
    try:
        return record_ingestion(con, run_id, stats, settings=settings)
    finally:
        con.close()


@task(name="collect-summary", cache_policy=NO_CACHE)
def publish_summary(run_id: str, stats: list[SeriesStats], results: list[GateResult]) -> str:
    """The run as markdown (series, then every gated batch), published as an artifact."""
    markdown = (
        stats_markdown(run_id, stats) + "\n" + summary_markdown(results, title="## Quality gate")
    )
    create_markdown_artifact(
        key=ARTIFACT_KEY, markdown=markdown, description=f"collect run {run_id}"
    )
    return markdown


def _follow(
    options: SourceOptions,
    settings: Settings,
    symbols: list[str],
    timeframes: list[str],
    *,
    every_s: float,
    max_cycles: int,
    lookback_days: float,
    policy: GatePolicy | None,
    logger: Any,
    trades: bool = False,
    order_book: bool = False,
) -> dict[str, Any]:
    """The warm collector in this flow run (one connection, one GX context, kept warm).
    ``trades`` / ``order_book``: every symbol's, each cycle (``pipelines.microstructure``)."""
    from pipelines.follow import follow

    if options.kind == "file":
        raise ValueError("--follow-every follows an exchange: use --source simulated or ccxt")
    for tf in timeframes:
        timeframe_ms(tf)
    con = connect(settings)
    try:
        cycles = follow(
            con, settings, options, symbols, timeframes, every_s=every_s,
            max_cycles=max_cycles, lookback_days=lookback_days, policy=policy, logger=logger,
            trades=symbols if trades else (), order_book=symbols if order_book else (),
        )  # fmt: skip
    finally:
        con.close()
    return {
        "run_id": cycles[0].run_id if cycles else "",
        "cycles": cycles,
        "rows_fetched": sum(c.rows_fetched for c in cycles),
        "rows_merged": sum(c.rows_merged for c in cycles),
        "rows_quarantined": sum(c.rows_quarantined for c in cycles),
        "failed_cycles": [c.cycle for c in cycles if c.error],
    }


@flow(name="collect", task_runner=DEFAULT_TASK_RUNNER, log_prints=True)
def collect(
    source: str = "simulated",
    exchange: str | None = None,
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    ccxt_config: dict[str, Any] | None = None,
    api_base: str | None = None,
    path: str | None = None,
    seed: int = 7,
    resume: bool = True,
    resample_from_1m: bool = False,
    trades: bool = False,
    order_book: bool = False,
    lookback_days: float = 1.0,
    policy: GatePolicy | None = None,
    file_symbol: str | None = None,
    file_timeframe: str | None = None,
    follow_every_s: float = 0.0,
    max_cycles: int = 0,
) -> dict[str, Any]:
    """Collect candles (and optionally trades / an order-book snapshot) for ``symbols``.

    ``follow_every_s > 0`` keeps collecting in this process: the warm collector
    (``pipelines.follow``), a cycle every ``follow_every_s`` seconds (``max_cycles`` of them,
    0 = until cancelled), each fetching every symbol's new candles, gating them in one call and
    bringing their features up to date.

    ``since``/``until`` are ISO 8601 (UTC if naive) or epoch ms; ``until`` empty = now;
    ``since`` empty = ``lookback_days`` before ``until`` (for files: everything in them).
    ``policy`` is the quality gate's failure policy (default ``GatePolicy()``); a batch that
    fails it fails its series, and a failed series fails the run after the artifact is out.
    """
    logger = get_run_logger()
    refuse_credentials(ccxt_config)
    settings = get_settings()
    run_id = uuid.uuid4().hex
    options = SourceOptions(
        kind=source,  # type: ignore[arg-type]
        exchange=exchange,
        ccxt_config=dict(ccxt_config or {}),
        api_base=api_base,
        path=path,
        seed=seed,
        file_symbol=file_symbol,
        file_timeframe=file_timeframe,
    )
    if follow_every_s > 0:
        con = connect(settings)
        migrate(con)
        con.close()
        return _follow(
            options,
            settings,
            list(dict.fromkeys(symbols or settings.symbols)),
            list(dict.fromkeys(timeframes or [settings.base_timeframe])),
            every_s=follow_every_s,
            max_cycles=max_cycles,
            lookback_days=lookback_days,
            policy=policy,
            logger=logger,
            trades=trades,
            order_book=order_book,
        )
    con = connect(settings)  # the run's one connection (Dask workers open their own)
    try:
        migrate(con)
        return _one_shot(
            con, settings, options, run_id, logger, symbols=symbols, timeframes=timeframes,
            since=since, until=until, resume=resume, resample_from_1m=resample_from_1m,
            trades=trades, order_book=order_book, lookback_days=lookback_days, policy=policy,
        )  # fmt: skip
    finally:
        con.close()


def _one_shot(
    con: Any,
    settings: Settings,
    options: SourceOptions,
    run_id: str,
    logger: Any,
    *,
    symbols: list[str] | None,
    timeframes: list[str] | None,
    since: str | None,
    until: str | None,
    resume: bool,
    resample_from_1m: bool,
    trades: bool,
    order_book: bool,
    lookback_days: float,
    policy: GatePolicy | None,
) -> dict[str, Any]:
    """The one-shot collect (or file import) of the flow, on the flow's connection."""
    source = options.kind
    until_ms = parse_time_ms(until)
    probe: FileSource | None = None
    side_stats: list[SeriesStats] = []  # a file import's mark candles and funding rates
    tfs = list(timeframes or [settings.base_timeframe])
    for tf in tfs:
        timeframe_ms(tf)
    if source == "file":
        file_source = make_source(options, settings)
        assert isinstance(file_source, FileSource)
        probe = file_source
        for file_report in probe.reports:
            logger.info(file_report.summary())
        for failure in probe.failures:
            logger.error(f"not imported: {failure}")
        if probe.side_tables:  # their own tables, never `candles` (pipelines.importers)
            side_stats = merge_side_tables(con, probe.side_tables, settings=settings)
            for side in side_stats:
                logger.info(f"{side.summary()}: {side.message}")
        symbols = symbols or sorted({s for s, _ in probe.series} | set(probe.trade_symbols))
        if not timeframes:
            tfs = sorted({tf for _, tf in probe.series}, key=timeframe_ms)
        since_ms = parse_time_ms(since) or 0
        resume = False
        trades = trades or bool(probe.trade_symbols)
    else:
        end = until_ms if until_ms is not None else wall_clock_ms()
        since_ms = parse_time_ms(since) or int(end - lookback_days * 86_400_000)
    symbols = list(dict.fromkeys(symbols or settings.symbols))  # each once, in order
    tfs = list(dict.fromkeys(tfs))
    unsupported = [tf for tf in tfs if tf not in SUPPORTED_TIMEFRAMES]
    if unsupported:
        logger.warning(
            f"timeframes {unsupported} are outside the supported set {SUPPORTED_TIMEFRAMES}"
        )

    if resample_from_1m and source != "file":
        # fetch 1m from the start of the first whole bucket of the largest timeframe
        widest = max(timeframe_ms(tf) for tf in tfs)
        since_ms -= since_ms % widest

    def timeframes_of(symbol: str) -> list[str]:
        return [tf for tf in tfs if probe is None or (symbol, tf) in set(probe.series)]

    # the symbols whose trades and order book this run stores: all with --trades /
    # --order-book, else those of Settings.microstructure_symbols (pipelines.microstructure)
    micro = set(enabled(settings, symbols)) if probe is None else set()
    books = enabled(settings, symbols, flag=order_book) if probe is None else []

    def trades_of(symbol: str) -> bool:
        return (trades or symbol in micro) and (probe is None or symbol in probe.trade_symbols)

    if settings.task_runner == "dask":  # fan out: one task per symbol, on many cores/machines
        futures = [
            collect_symbol.submit(
                options,
                settings,
                symbol,
                timeframes_of(symbol),
                since_ms,
                until_ms,
                run_id,
                resume=resume,
                resample_from_1m=resample_from_1m,
                trades=trades_of(symbol),
                order_book=symbol in books,
                policy=policy,
            )
            for symbol in symbols
        ]
        runs: list[SymbolRun] = [f.result() for f in futures]
    else:  # every series in batched rounds: one gate call and one upsert per round
        runs = [
            collect_batch(
                options,
                settings,
                {symbol: timeframes_of(symbol) for symbol in symbols},
                since_ms,
                until_ms,
                run_id,
                resume=resume,
                resample_from_1m=resample_from_1m,
                trades=[symbol for symbol in symbols if trades_of(symbol)],
                order_book=books,
                policy=policy,
                probe=probe,
                con=con,
            )
        ]
    stats = side_stats + [s for r in runs for s in r.stats]
    gate_results = [g for r in runs for g in r.gate_results]
    record_stats(settings, run_id, stats, con=con)
    # published before a failure is raised: a failed run is the one most worth reading
    summary = publish_summary(run_id, stats, gate_results)
    quality_alerts(settings, gate_results, run_id)  # one notification per failed batch
    failed = [s for s in stats if s.status == "failed"]
    failures = [f"{s.symbol} {s.timeframe}: {s.message}" for s in failed]
    # files of a directory that could not be read: the good ones were imported all the same
    failures += probe.failures if probe is not None else []
    report = {
        "run_id": run_id,
        "series": len(stats),
        "rows_fetched": sum(s.fetch.rows for s in stats),
        "rows_merged": sum(s.rows_merged for s in stats),
        "rows_quarantined": sum(s.rows_quarantined for s in stats),
        "requests": sum(s.fetch.requests for s in stats),
        "retries": sum(s.fetch.retries for s in stats),
        "gaps": sum(s.gaps for s in stats),
        "failed": failures,
        "stats": stats,
        "gate_results": gate_results,
        "summary": summary,
    }
    logger.info(
        f"collect {run_id}: {report['rows_merged']} rows merged, "
        f"{report['rows_quarantined']} quarantined, "
        f"{len(failed)} series failed"
        + (f", {len(probe.failures)} file(s) unreadable" if probe and probe.failures else "")
    )
    if failures:
        raise RuntimeError("collect failed for: " + "; ".join(failures))
    return report
