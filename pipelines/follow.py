"""The warm collector: one process that keeps every series up to date, cycle after cycle.

``tradeloop collect ... --follow-every SECONDS`` (and the ``collect/follow`` deployment) run
:func:`follow`. The process, its warehouse connection, its exchange clients and the Great
Expectations context stay up between cycles, so a cycle pays for its new rows, not for
imports, connections or one checkpoint per series. Each cycle (:func:`run_cycle`):

1. fetches the candles after each series' last stored candle, every series concurrently
   (:class:`FetchPool`: several clients whose rate limits add up to the exchange's);
2. validates all new rows of all series in ONE gate call (``expectations.gate.gate_series``:
   quarantine, policy and ``quality_results`` stay per series) which writes them in ONE upsert;
3. brings the features of every series that got rows up to date in one incremental polars
   pass (``pipelines.features.rebuild.rebuild_features_many``);
4. records the cycle in ``ingestion_runs`` (one row per timeframe, symbol ``*``, with the
   cycle's wall time and its fetch / gate / features split; one row per series that warned
   or failed) and logs one line.

A cycle that fails (the exchange down past its retries, the warehouse refusing a write past
its retries) is logged and recorded, and the next cycle fetches again from what is stored:
the resume point only moves after a write, so nothing is lost and nothing is written twice.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from queue import Queue
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from expectations.feature_gate import gate_features
from expectations.gate import GatePolicy, GateResult, gate_series
from expectations.specs import spec_for
from pipelines.collect import (
    SeriesStats,
    SourceOptions,
    UpsertOutcome,
    collect_series,
    ingestion_table,
    make_source,
)
from pipelines.features.rebuild import rebuild_features_many
from pipelines.resample import timeframe_ms
from pipelines.sources import Source, wall_clock_ms
from warehouse import Settings, upsert

Series = tuple[str, str]  # symbol, timeframe


class Logger(Protocol):
    def info(self, msg: str, /) -> Any: ...
    def error(self, msg: str, /) -> Any: ...


@dataclass(frozen=True)
class FetchJob:
    """One series' window: fetched by :meth:`FetchPool.fetch`, not yet merged."""

    symbol: str
    timeframe: str
    since_ms: int
    until_ms: int | None = None
    stored: tuple[int, int] | None = None  # plan around what is stored (resume)
    previous_ms: int | None = None  # the candle before the window, for gap counts


class FetchPool:
    """``workers`` sources used by as many threads. A ccxt client waits ``rateLimit`` ms
    between its own requests; each of the pool's clients waits ``workers`` times that, so the
    pool as a whole sends no faster than one client would, while the requests' round trips
    overlap. The simulated and file sources compute locally: one worker. ``sources`` gives
    the pool sources already built (a file source that was read to plan the run)."""

    def __init__(
        self,
        options: SourceOptions,
        settings: Settings,
        *,
        workers: int = 8,
        clock: Callable[[], int] = wall_clock_ms,
        sources: Sequence[Source] = (),
    ) -> None:
        self.workers = len(sources) or max(1, workers if options.kind == "ccxt" else 1)
        self.sources: Queue[Source] = Queue()
        self.name = ""
        self.clock = clock
        for source in sources or (
            make_source(options, settings, clock=clock) for _ in range(self.workers)
        ):
            exchange = getattr(source, "exchange", None)
            if options.kind == "ccxt" and exchange is not None and not sources:
                exchange.rateLimit = float(exchange.rateLimit) * self.workers
            self.name = source.name
            self.sources.put(source)
        self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="collect-fetch")

    def fetch(
        self, jobs: Sequence[FetchJob], source_kind: str
    ) -> list[tuple[SeriesStats, list[pa.Table]]]:
        """Per job: the series' stats and its new closed candles (fetched, not yet merged)."""

        def one(job: FetchJob) -> Any:
            tables: list[pa.Table] = []

            def keep(_table: str, batch: pa.Table) -> UpsertOutcome:
                tables.append(batch)
                return UpsertOutcome(rows_merged=0)

            source = self.sources.get()
            try:
                stats = collect_series(
                    source,
                    keep,
                    job.symbol,
                    job.timeframe,
                    job.since_ms,
                    job.until_ms,
                    stored=job.stored,
                    batch_rows=1 << 62,  # one merge per series: the caller gates all at once
                    source_kind=source_kind,
                    previous_ms=job.previous_ms,
                )
            finally:
                self.sources.put(source)
            return stats, tables

        return list(self._threads.map(one, jobs))

    def map(self, fn: Callable[[Source, Any], Any], items: Sequence[Any]) -> list[Any]:
        """``fn(source, item)`` for each item on the pool's threads, each holding a source."""

        def one(item: Any) -> Any:
            source = self.sources.get()
            try:
                return fn(source, item)
            finally:
                self.sources.put(source)

        return list(self._threads.map(one, items))

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        while not self.sources.empty():
            self.sources.get().close()


@dataclass
class CycleStats:
    """One cycle of the warm collector."""

    run_id: str
    cycle: int
    started_at: dt.datetime
    seconds: float = 0.0
    fetch_s: float = 0.0
    gate_s: float = 0.0
    features_s: float = 0.0
    series: int = 0
    rows_fetched: int = 0
    rows_merged: int = 0
    rows_quarantined: int = 0
    feature_rows: int = 0
    requests: int = 0
    retries: int = 0
    failed: list[str] = field(default_factory=list)
    error: str | None = None
    stats: list[SeriesStats] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"cycle {self.cycle}: {self.series} series, {self.rows_fetched} fetched, "
            f"{self.rows_merged} merged, {self.rows_quarantined} quarantined, "
            f"{self.feature_rows} feature rows, {self.requests} requests "
            f"({self.retries} retries) in {self.seconds:.2f} s (fetch {self.fetch_s:.2f}, "
            f"gate+write {self.gate_s:.2f}, features {self.features_s:.2f})"
        )
        if self.error:
            text += f" [FAILED: {self.error}]"
        elif self.failed:
            text += f" [{len(self.failed)} series failed: {'; '.join(self.failed[:3])}]"
        return text


@dataclass
class FollowState:
    """Where each series stands: (first, last) stored open time in ms (None: nothing yet)."""

    stored: dict[Series, tuple[int, int] | None]

    @classmethod
    def load(
        cls, con: duckdb.DuckDBPyConnection, exchange: str, series: Sequence[Series]
    ) -> FollowState:
        """One query for every series (not one per series)."""
        rows = con.execute(
            "SELECT symbol, timeframe, epoch_ms(min(ts)), epoch_ms(max(ts)) FROM candles "
            "WHERE exchange = ? GROUP BY ALL",
            [exchange],
        ).fetchall()
        found = {(str(s), str(t)): (int(lo), int(hi)) for s, t, lo, hi in rows}
        return cls({key: found.get(key) for key in series})

    def refresh(self, con: duckdb.DuckDBPyConnection, exchange: str, keys: list[Series]) -> None:
        if keys:
            fresh = FollowState.load(con, exchange, keys)
            self.stored.update(fresh.stored)


def _ts(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _apply(stats: SeriesStats, result: GateResult) -> None:
    stats.rows_merged += result.rows_merged
    stats.rows_quarantined += result.rows_quarantined
    stats.warnings.extend(result.warnings)
    if not result.success:
        stats.status, stats.message = "failed", result.message
    elif result.warnings and stats.status == "ok":
        stats.status = "warning"


def series_key(stats: SeriesStats, table: str) -> tuple[str, ...]:
    """The stats' series as the gate keys it (the table spec's series columns)."""
    width = len(spec_for(table).series)
    return (stats.exchange, stats.symbol, stats.timeframe)[:width]


def gate_fetched(
    con: duckdb.DuckDBPyConnection,
    table: str,
    fetched: Sequence[tuple[SeriesStats, list[pa.Table]]],
    *,
    settings: Settings,
    run_id: str,
    policy: GatePolicy | None = None,
) -> list[GateResult]:
    """The new rows of every series in ``fetched`` through ONE gate call (one quarantine
    write, one upsert, one ``quality_results`` write), each series' result applied to its
    stats (merged, quarantined, warnings, status) as one call per series would have."""
    tables = [t for _, ts in fetched for t in ts if t.num_rows]
    if not tables:
        return []
    results = gate_series(
        con, table, pa.concat_tables(tables), settings=settings, run_id=run_id, policy=policy
    )
    by_key = {series_key(stats, table): stats for stats, ts in fetched if ts}
    for result in results:
        if result.series is not None:
            stats = by_key.get(tuple(str(v) for v in result.series))
            if stats is not None:
                _apply(stats, result)
            continue
        # the call was judged as one batch (a schema refusal): each series shares its verdict
        for stats in by_key.values():
            rows = stats.fetch.rows
            share = rows if len(by_key) > 1 else result.rows_quarantined
            _apply(
                stats,
                replace(
                    result,
                    rows_merged=0 if len(by_key) > 1 else result.rows_merged,
                    rows_quarantined=share,
                ),
            )
    return results


def run_cycle(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    pool: FetchPool,
    state: FollowState,
    *,
    run_id: str,
    cycle: int,
    since_ms: int,
    source_kind: str,
    policy: GatePolicy | None = None,
    features: bool = True,
    trades: Sequence[str] = (),
    order_book: Sequence[str] = (),
) -> CycleStats:
    """Fetch, gate and write, then featurize every series' new candles (module docs).
    ``trades`` / ``order_book``: symbols whose new public trades / one order-book snapshot the
    cycle also stores, before the features (``pipelines.microstructure``)."""
    started = time.perf_counter()
    out = CycleStats(run_id, cycle, dt.datetime.now(dt.UTC), series=len(state.stored))
    cycle_id = f"{run_id}-c{cycle}"
    # a stored series resumes after its last candle (never refetching before its first: the
    # one-shot collect backfills); a new one starts at ``since_ms``
    jobs = [
        FetchJob(s, tf, since_ms)
        if stored is None
        else FetchJob(s, tf, stored[1] + timeframe_ms(tf), stored=(stored[1], stored[1]))
        for (s, tf), stored in state.stored.items()
    ]
    fetched = pool.fetch(jobs, source_kind)
    out.fetch_s = time.perf_counter() - started
    out.stats = [stats for stats, _ in fetched]
    by_key = {(s.symbol, s.timeframe): s for s in out.stats}
    out.rows_fetched = sum(s.fetch.rows for s in out.stats)
    out.requests = sum(s.fetch.requests for s in out.stats)
    out.retries = sum(s.fetch.retries for s in out.stats)
    written: list[Series] = []
    try:
        if trades or order_book:
            # before the candles: a reader that sees a candle sees its trades (serve
            # --follow-every reads them together), and the features below see both
            from pipelines.microstructure import last_trade_ms
            from pipelines.oneshot import collect_extras  # it imports this module

            t0 = time.perf_counter()
            # each symbol's trades from its last stored one on (inclusive: upserts keep it once)
            side, _ = collect_extras(
                con, settings, pool, run_id=cycle_id, source_kind=source_kind,
                since_ms=since_ms, until_ms=None, trades=trades, order_book=order_book,
                policy=policy, trades_since=last_trade_ms(con, pool.name) if trades else None,
            )  # fmt: skip
            out.gate_s += time.perf_counter() - t0
            out.stats += side
        if out.rows_fetched:
            t0 = time.perf_counter()
            gate_fetched(con, "candles", fetched, settings=settings, run_id=cycle_id, policy=policy)
            out.gate_s = time.perf_counter() - t0
            # the resume point moves only now that the rows are written
            for key, stats in by_key.items():
                if stats.rows_merged:
                    written.append(key)
                    before = state.stored.get(key)
                    if not stats.rows_quarantined and stats.last_ts_ms is not None:
                        first = before[0] if before else stats.first_ts_ms
                        state.stored[key] = (int(first or 0), stats.last_ts_ms)
            # a series whose tail was quarantined resumes from what is really stored
            state.refresh(con, pool.name, [k for k in written if by_key[k].rows_quarantined])
        if features and written:
            t0 = time.perf_counter()
            many = rebuild_features_many(
                con,
                [(pool.name, s, tf) for s, tf in written],
                settings=settings,
                merge=partial(gate_features, settings=settings, run_id=cycle_id),
            )
            out.features_s = time.perf_counter() - t0
            out.feature_rows = many.write.written
    except Exception as exc:  # noqa: BLE001 - a long-running collector records and carries on
        out.error = f"{type(exc).__name__}: {exc}"
        # nothing after the failed step counts as written: the next cycle starts from the
        # warehouse again (idempotent upserts: rows already in are left unchanged)
        state.refresh(con, pool.name, list(state.stored))
    out.rows_merged = sum(s.rows_merged for s in out.stats)
    out.rows_quarantined = sum(s.rows_quarantined for s in out.stats)
    out.failed = [
        f"{s.symbol} {s.timeframe}: {s.message}" for s in out.stats if s.status == "failed"
    ]
    out.seconds = time.perf_counter() - started
    return out


def cycle_rows(out: CycleStats, exchange: str, source_kind: str) -> pa.Table:
    """The ``ingestion_runs`` rows of a cycle: one per timeframe (symbol ``*``) with the sums
    and the cycle's wall time, then one per series that warned or failed."""
    cycle_id = f"{out.run_id}-c{out.cycle}"
    finished = out.started_at + dt.timedelta(seconds=out.seconds)
    rows: list[SeriesStats] = []
    counts: dict[str, int] = {}
    for timeframe, group in itertools.groupby(
        sorted(out.stats, key=lambda s: s.timeframe), key=lambda s: s.timeframe
    ):
        members = list(group)
        total = SeriesStats(source_kind, exchange, "*", timeframe, started_at=out.started_at)
        total.finished_at = finished
        for s in members:
            total.fetch.add(s.fetch)
            total.rows_merged += s.rows_merged
            total.rows_quarantined += s.rows_quarantined
            total.gaps += s.gaps
            for attr, pick in (("first_ts_ms", min), ("last_ts_ms", max)):
                values = [v for v in (getattr(total, attr), getattr(s, attr)) if v is not None]
                setattr(total, attr, pick(values) if values else None)
        failed = [s for s in members if s.status == "failed"]
        total.status = "failed" if failed or out.error else "ok"
        if any(s.status == "warning" for s in members) and total.status == "ok":
            total.status = "warning"
        total.message = out.error or "; ".join(f"{s.symbol}: {s.message}" for s in failed)
        total.seconds = out.seconds
        rows.append(total)
        counts[timeframe] = len(members)
        rows += [s for s in members if s.status != "ok"]
    table = ingestion_table(cycle_id, rows)
    n = table.num_rows
    per_row = [counts[r.timeframe] if r.symbol == "*" else 1 for r in rows]
    extra = {
        "cycle": pa.array([out.cycle] * n, pa.int64()),
        "series": pa.array(per_row, pa.int64()),
        "fetch_seconds": pa.array([out.fetch_s] * n, pa.float64()),
        "gate_seconds": pa.array([out.gate_s] * n, pa.float64()),
        "features_seconds": pa.array([out.features_s] * n, pa.float64()),
    }
    for name, values in extra.items():
        table = table.append_column(name, values)
    return table


def record_cycle(
    con: duckdb.DuckDBPyConnection, out: CycleStats, exchange: str, source_kind: str, *,
    settings: Settings,
) -> None:  # fmt: skip
    upsert(con, "ingestion_runs", cycle_rows(out, exchange, source_kind), settings=settings)


def follow(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    options: SourceOptions,
    symbols: Sequence[str],
    timeframes: Sequence[str],
    *,
    every_s: float,
    max_cycles: int = 0,
    lookback_days: float = 1.0,
    policy: GatePolicy | None = None,
    features: bool = True,
    logger: Logger | None = None,
    clock: Callable[[], int] = wall_clock_ms,
    sleep: Callable[[float], None] = time.sleep,
    workers: int = 8,
    on_cycle: Callable[[CycleStats], None] | None = None,
    trades: Sequence[str] = (),
    order_book: Sequence[str] = (),
) -> list[CycleStats]:
    """Run cycles every ``every_s`` seconds (``max_cycles`` of them; 0 = until stopped).

    A cycle that overruns the interval is followed at once by the next (no cycle is skipped
    silently: each one fetches everything since the last stored candle). Series with nothing
    stored start ``lookback_days`` before now. Returns the cycles' stats (only the last 100
    are kept in memory by a collector that runs for good). ``trades`` / ``order_book``:
    symbols whose trades / order book each cycle stores, besides those the settings name
    (``Settings.microstructure_symbols``, ``pipelines.microstructure``)."""
    from pipelines.microstructure import enabled

    if every_s <= 0:
        raise ValueError(f"every_s must be > 0, got {every_s}")
    for tf in timeframes:
        timeframe_ms(tf)
    run_id = f"follow-{uuid.uuid4().hex[:12]}"
    pool = FetchPool(options, settings, workers=workers, clock=clock)
    keys = [(s, tf) for s in dict.fromkeys(symbols) for tf in dict.fromkeys(timeframes)]
    state = FollowState.load(con, pool.name, keys)
    micro = enabled(settings, symbols)
    trades = list(dict.fromkeys([*trades, *micro]))
    order_book = list(dict.fromkeys([*order_book, *micro]))
    done: list[CycleStats] = []
    next_at = time.monotonic()
    try:
        for cycle in itertools.count(1):
            since_ms = int(clock() - lookback_days * 86_400_000)
            out = run_cycle(
                con, settings, pool, state, run_id=run_id, cycle=cycle, since_ms=since_ms,
                source_kind=options.kind, policy=policy, features=features, trades=trades,
                order_book=order_book,
            )  # fmt: skip
            try:
                record_cycle(con, out, pool.name, options.kind, settings=settings)
            except Exception as exc:  # noqa: BLE001 - the log line still says what happened
                out.error = (out.error or "") + f"; not recorded: {type(exc).__name__}: {exc}"
            if logger is not None:
                (logger.error if out.error or out.failed else logger.info)(out.summary())
            if on_cycle is not None:
                on_cycle(out)
            done = [*done[-99:], out]
            if max_cycles and cycle >= max_cycles:
                break
            next_at = max(next_at + every_s, time.monotonic())
            sleep(max(0.0, next_at - time.monotonic()))
    finally:
        pool.close()
    return done
