"""One-shot collect, batched: every series of a run through the warm collector's cycle.

``tradeloop collect`` / ``tradeloop import`` (and the ``collect`` flow on its thread runner)
call :func:`collect_batched`. It is the warm collector's cycle (``pipelines.follow``) run to
the end of a window instead of once a minute:

1. every series' window is planned from what is stored (``plan_windows``: before the first
   stored candle and after the last; ``resume=False`` refetches the window) and cut into
   pieces of at most ``round_rows / series`` candles;
2. a round fetches the next piece of every series concurrently (``FetchPool``), validates all
   of them in ONE gate call (``expectations.gate.gate_series``: quarantine, policy and
   ``quality_results`` stay per series) and writes them in ONE upsert;
3. rounds repeat until every window is done. Pieces are in time order, so a run that stops
   half-way has stored a prefix of each series and the next run resumes after it; rows
   written twice are left unchanged (``warehouse.upsert``'s MERGE). A series whose batch
   fails the policy, or whose source fails, stops there, as it did with one task per series;
4. candles resampled from the stored 1m candles (``--resample``), public trades and
   order-book snapshots follow, each kind of table in one gate call.

Each series keeps one ``SeriesStats`` (one ``ingestion_runs`` row) summed over its pieces.
The engine work is the same as one call per series; what goes is the per-call overhead (a
GX checkpoint run, a quarantine write, an upsert and a ``quality_results`` write per series)
that made a 100-symbol collect of one new candle each cost minutes.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from expectations.gate import GatePolicy, GateResult, prepare_gate
from pipelines.collect import (
    SeriesStats,
    UpsertOutcome,
    collect_resampled,
    collect_trades,
    plan_windows,
    snapshot_order_book,
)
from pipelines.follow import FetchJob, FetchPool, FollowState, gate_fetched
from pipelines.resample import timeframe_ms
from pipelines.sources import Source
from warehouse import Settings

ROUND_ROWS = 250_000  # candles per round (all series together): one gate call, one upsert
Series = tuple[str, str]  # symbol, timeframe


def plan_pieces(
    since_ms: int,
    until_ms: int | None,
    step_ms: int,
    stored: tuple[int, int] | None,
    *,
    piece_rows: int,
    now_ms: int,
) -> list[tuple[int, int | None]]:
    """The windows still to fetch (``plan_windows``), each cut into pieces of at most
    ``piece_rows`` candles, in time order. A window open at its end ("up to now") is cut up
    to ``now_ms`` and its last piece stays open."""
    pieces: list[tuple[int, int | None]] = []
    span = piece_rows * step_ms
    for start, end in plan_windows(since_ms, until_ms, step_ms, stored):
        stop = end if end is not None else now_ms
        while stop - start > span:
            pieces.append((start, start + span))
            start += span
        pieces.append((start, end))
    return pieces


def _absorb_piece(total: SeriesStats, piece: SeriesStats) -> None:
    """Add one piece's fetch to its series' stats (the gate's counts come afterwards)."""
    total.fetch.add(piece.fetch)
    total.gaps += piece.gaps
    for attr, pick in (
        ("first_ts_ms", min),
        ("last_ts_ms", max),
        ("window_start_ms", min),
        ("window_end_ms", max),
    ):
        values = [v for v in (getattr(total, attr), getattr(piece, attr)) if v is not None]
        setattr(total, attr, pick(values) if values else None)
    total.seconds += piece.seconds
    if piece.status == "failed":
        total.status, total.message = "failed", piece.message


def _apply_gate(total: SeriesStats, piece: SeriesStats) -> None:
    """The gate's verdict on a piece (``gate_fetched`` applied it to the piece) onto the series."""
    total.rows_merged += piece.rows_merged
    total.rows_quarantined += piece.rows_quarantined
    total.warnings.extend(piece.warnings)
    if piece.status == "failed":
        total.status, total.message = "failed", piece.message
    elif piece.status == "warning" and total.status == "ok":
        total.status = "warning"


def collect_batched(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    pool: FetchPool,
    series: Sequence[Series],
    since_ms: int,
    until_ms: int | None,
    *,
    run_id: str,
    source_kind: str,
    resume: bool = True,
    policy: GatePolicy | None = None,
    round_rows: int = ROUND_ROWS,
    piece_rows: int | None = None,
    logger: Any = None,
) -> tuple[list[SeriesStats], list[GateResult]]:
    """Collect the candles of every series in ``series`` in batched rounds (module docs).

    Returns each series' stats (in the order of ``series``) and every gate result (one per
    series per round, in round order). ``piece_rows`` (default: ``round_rows`` shared out
    over the series, at least one page) bounds the candles a series fetches per round; a
    file source is never cut (its rows are in memory already)."""
    if source_kind != "file":  # GX loads while the exchange answers (a file is read already,
        # and a busy thread beside the gate's own work only slowed both: 5.4 s -> 7.4 s)
        prepare_gate("candles", settings=settings, policy=policy)
    keys = list(dict.fromkeys(series))
    stored = FollowState.load(con, pool.name, keys).stored if resume else dict.fromkeys(keys)
    per_series = piece_rows or max(1_000, round_rows // max(1, len(keys)))
    if source_kind == "file":
        per_series = 1 << 62
    now_ms = pool.clock()
    queues: dict[Series, deque[tuple[int, int | None]]] = {}
    totals: dict[Series, SeriesStats] = {}
    previous: dict[Series, int | None] = {}
    for key in keys:
        symbol, timeframe = key
        step = timeframe_ms(timeframe)
        queues[key] = deque(
            plan_pieces(since_ms, until_ms, step, stored[key], piece_rows=per_series,
                        now_ms=now_ms)
        )  # fmt: skip
        started = dt.datetime.now(dt.UTC)
        totals[key] = SeriesStats(
            source_kind, pool.name, symbol, timeframe, started_at=started, finished_at=started
        )
        last = stored[key]
        previous[key] = last[1] if last is not None else None
    results: list[GateResult] = []
    rounds, fetch_s, gate_s = 0, 0.0, 0.0
    while active := [k for k in keys if queues[k] and totals[k].status != "failed"]:
        rounds += 1
        jobs = []
        for key in active:
            start, end = queues[key].popleft()
            jobs.append(FetchJob(key[0], key[1], start, end, previous_ms=previous[key]))
        t0 = time.perf_counter()
        fetched = pool.fetch(jobs, source_kind)
        t1 = time.perf_counter()
        fetch_s += t1 - t0
        for key, (piece, _) in zip(active, fetched, strict=True):
            _absorb_piece(totals[key], piece)
            if piece.last_ts_ms is not None:
                previous[key] = piece.last_ts_ms
        results += gate_fetched(
            con, "candles", fetched, settings=settings, run_id=run_id, policy=policy
        )
        gate_s += time.perf_counter() - t1
        for key, (piece, _) in zip(active, fetched, strict=True):
            _apply_gate(totals[key], piece)
            totals[key].finished_at = dt.datetime.now(dt.UTC)
        if logger is not None and (rounds > 1 or any(queues.values())):
            logger.info(
                f"round {rounds}: {len(active)} series, "
                f"{sum(p.fetch.rows for p, _ in fetched)} candles fetched"
            )
    if logger is not None:
        logger.info(
            f"candles of {len(keys)} series in {rounds} round(s): "
            f"{sum(t.fetch.rows for t in totals.values())} fetched in {fetch_s:.2f} s, "
            f"gated and written in {gate_s:.2f} s ({len(results)} series results)"
        )
    return [totals[k] for k in keys], results


def collect_extras(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    pool: FetchPool,
    *,
    run_id: str,
    source_kind: str,
    since_ms: int,
    until_ms: int | None,
    resampled: Sequence[Series] = (),
    trades: Sequence[str] = (),
    order_book: Sequence[str] = (),
    policy: GatePolicy | None = None,
    trades_since: Mapping[str, int] | None = None,
) -> tuple[list[SeriesStats], list[GateResult]]:
    """Resampled candles (from the stored 1m), trades and order-book snapshots: each kind
    fetched for every symbol, then gated in one call per table. ``trades_since``: per symbol,
    where its trades start instead of ``since_ms`` (the warm collector resumes them)."""
    stats: list[SeriesStats] = []
    results: list[GateResult] = []

    def kept() -> tuple[list[pa.Table], Any]:
        tables: list[pa.Table] = []

        def keep(_table: str, batch: pa.Table) -> UpsertOutcome:
            tables.append(batch)
            return UpsertOutcome(rows_merged=0)

        return tables, keep

    def resample_one(key: Series) -> tuple[SeriesStats, list[pa.Table]]:
        tables, keep = kept()
        one = collect_resampled(
            con, keep, pool.name, key[0], key[1], since_ms, until_ms,
            source_kind=source_kind,
        )  # fmt: skip
        return one, tables

    def trades_one(source: Source, symbol: str) -> tuple[SeriesStats, list[pa.Table]]:
        tables, keep = kept()
        start = (trades_since or {}).get(symbol, since_ms)
        one = collect_trades(source, keep, symbol, start, until_ms, source_kind=source_kind)
        return one, tables

    def book_one(source: Source, symbol: str) -> tuple[SeriesStats, list[pa.Table]]:
        tables, keep = kept()
        return snapshot_order_book(source, keep, symbol, source_kind=source_kind), tables

    for table, fetched in (
        ("candles", [resample_one(key) for key in resampled]),
        ("trades", pool.map(trades_one, list(trades))),
        ("order_book_snapshots", pool.map(book_one, list(order_book))),
    ):
        # each piece's stats start from zero merged: the gate's verdict lands on them
        results += gate_fetched(
            con, table, fetched, settings=settings, run_id=run_id, policy=policy
        )
        stats += [one for one, _ in fetched]
    return stats, results
