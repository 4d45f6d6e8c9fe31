"""The steps of collecting market data, as plain functions the ``collect`` flow calls.

* :func:`make_source` builds a source from a few options (simulated, ccxt, file).
* :func:`plan_windows` resumes a series from what is stored: a re-run over an overlapping
  window fetches only the part after the last stored candle (and any part before the first).
* :func:`collect_series` pages a series through a source and hands every batch to a
  ``merge`` function (the flow passes the quality gate, ``expectations.gate.gate_and_merge``;
  elsewhere :func:`upsert_merge` writes straight through ``warehouse.upsert``).
* :func:`resample_stored` builds 5m/15m/1h from the stored 1m candles (pipelines.resample);
  :func:`collect_resampled` merges them like any other batch.
* :func:`record_ingestion` writes the per-series statistics into ``ingestion_runs``;
  :func:`stats_markdown` renders them for the run's Prefect artifact.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import duckdb
import numpy as np
import pyarrow as pa

from pipelines.importers import gap_stats
from pipelines.progress import Progress, current
from pipelines.resample import resample_arrow, timeframe_ms
from pipelines.sources.base import (
    CANDLE_SCHEMA,
    FetchStats,
    RetryPolicy,
    Source,
    SourceError,
    wall_clock_ms,
)
from warehouse import Settings, upsert

SourceKind = Literal["simulated", "ccxt", "file"]


class BatchOutcome(Protocol):
    """What a merge step reports (``expectations.gate.GateResult`` has this shape)."""

    @property
    def rows_merged(self) -> int: ...
    @property
    def rows_quarantined(self) -> int: ...
    @property
    def success(self) -> bool: ...
    @property
    def warnings(self) -> tuple[str, ...]: ...
    @property
    def message(self) -> str: ...


MergeFn = Callable[[str, pa.Table], BatchOutcome]  # (table name, batch) -> outcome


@dataclass(frozen=True)
class UpsertOutcome:
    rows_merged: int
    rows_quarantined: int = 0
    success: bool = True
    warnings: tuple[str, ...] = ()
    message: str = ""


def upsert_merge(con: duckdb.DuckDBPyConnection, settings: Settings) -> MergeFn:
    """A merge step that writes straight through ``warehouse.upsert`` (no quality gate)."""

    def merge(table: str, batch: pa.Table) -> BatchOutcome:
        result = upsert(con, table, batch, settings=settings)
        return UpsertOutcome(rows_merged=result.rows_in, message=f"{table}: {result}")

    return merge


@dataclass(frozen=True)
class SourceOptions:
    """Everything needed to build a source in a worker (picklable, no secrets in it)."""

    kind: SourceKind = "simulated"
    exchange: str | None = None  # ccxt exchange id, or the name stored for files/simulated
    ccxt_config: dict[str, Any] = field(default_factory=dict)
    api_base: str | None = None
    path: str | None = None  # file source
    # file source: the symbol and timeframe of a file whose name does not say them (or says
    # them wrong); they override what the name says
    file_symbol: str | None = None
    file_timeframe: str | None = None
    seed: int = 7
    origin: str | None = None  # simulated: ISO date the simulated history starts
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    page_limit: int = 1000


def make_source(
    options: SourceOptions, settings: Settings, *, clock: Callable[[], int] = wall_clock_ms
) -> Source:
    # each source's module is imported when it is used (ccxt and scipy cost about a second)
    if options.kind == "simulated":
        from pipelines.simulated_exchange import SimulatedExchange, SimulationConfig
        from pipelines.sources.simulated import SimulatedSource

        config = SimulationConfig(seed=options.seed)
        if options.origin:
            origin = dt.datetime.fromisoformat(options.origin)
            origin = origin if origin.tzinfo else origin.replace(tzinfo=dt.UTC)
            config = SimulationConfig(seed=options.seed, origin_ms=int(origin.timestamp() * 1000))
        sim = SimulatedExchange(config=config, name=options.exchange or "simulated")
        return SimulatedSource(exchange=sim, clock=clock)
    if options.kind == "ccxt":
        exchange_id = options.exchange or settings.exchange
        if exchange_id == "simulated":
            raise SourceError("--source ccxt needs --exchange, a ccxt exchange id such as binance")
        from pipelines.sources.ccxt_source import CcxtSource

        key = settings.exchange_api_key.get_secret_value() if settings.exchange_api_key else None
        secret = (
            settings.exchange_api_secret.get_secret_value()
            if settings.exchange_api_secret
            else None
        )
        return CcxtSource(
            exchange_id,
            config=dict(options.ccxt_config),
            api_base=options.api_base,
            api_key=key,
            api_secret=secret,
            retry=options.retry,
            page_limit=options.page_limit,
            clock=clock,
        )
    if options.kind == "file":
        if not options.path:
            raise SourceError("the file source needs a path (--path)")
        from pipelines.sources.file import FileSource

        return FileSource(
            Path(options.path),
            name=options.exchange or "file",
            symbol=options.file_symbol,
            timeframe=options.file_timeframe,
        )
    raise SourceError(f"unknown source {options.kind!r}: use simulated, ccxt or file")


# ---------------------------------------------------------------------------- resume


def _ms(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    return int(value)


def stored_range(
    con: duckdb.DuckDBPyConnection, exchange: str, symbol: str, timeframe: str
) -> tuple[int, int] | None:
    """(first, last) stored open time in ms for one series, or None when nothing is stored."""
    row = con.execute(
        "SELECT min(ts), max(ts) FROM candles WHERE exchange = ? AND symbol = ? AND timeframe = ?",
        [exchange, symbol, timeframe],
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return _ms(row[0]), _ms(row[1])


def plan_windows(
    since_ms: int, until_ms: int | None, step_ms: int, stored: tuple[int, int] | None
) -> list[tuple[int, int | None]]:
    """The windows still to fetch: before the first stored candle and after the last one.

    The middle is assumed complete (gaps there are the exchange's, and refetching would not
    fill them); ``until_ms=None`` means "up to now".
    """
    if stored is None:
        return [(since_ms, until_ms)]
    first, last = stored
    windows: list[tuple[int, int | None]] = []
    if since_ms < first:
        windows.append((since_ms, first if until_ms is None else min(first, until_ms)))
    after = max(since_ms, last + step_ms)
    if until_ms is None or after < until_ms:
        windows.append((after, until_ms))
    return [w for w in windows if w[1] is None or w[0] < w[1]]


# ---------------------------------------------------------------------------- collecting


@dataclass
class SeriesStats:
    source: str
    exchange: str
    symbol: str
    timeframe: str
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    window_start_ms: int | None = None
    window_end_ms: int | None = None
    fetch: FetchStats = field(default_factory=FetchStats)
    rows_merged: int = 0
    rows_quarantined: int = 0
    gaps: int = 0
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None
    seconds: float = 0.0
    status: str = "ok"
    warnings: list[str] = field(default_factory=list)
    message: str = ""

    def summary(self) -> str:
        text = (
            f"{self.exchange} {self.symbol} {self.timeframe}: fetched {self.fetch.rows}, merged "
            f"{self.rows_merged}, quarantined {self.rows_quarantined}, "
            f"{self.fetch.requests} requests "
            f"({self.fetch.retries} retries), {self.gaps} gaps, {self.seconds:.2f} s"
        )
        if self.status == "ok":
            return text
        # a warning has no message of its own: it is the gate's warnings (a gap, say)
        detail = self.message or "; ".join(dict.fromkeys(self.warnings))
        return text + f" [{self.status}: {detail}]"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fetch"] = asdict(self.fetch)
        return d


def _absorb(stats: SeriesStats, outcome: BatchOutcome) -> None:
    stats.rows_merged += outcome.rows_merged
    stats.rows_quarantined += outcome.rows_quarantined
    stats.warnings.extend(outcome.warnings)
    if not outcome.success:
        stats.status = "failed"
        stats.message = outcome.message
    elif outcome.warnings and stats.status == "ok":
        stats.status = "warning"


def collect_series(
    source: Source,
    merge: MergeFn,
    symbol: str,
    timeframe: str,
    since_ms: int,
    until_ms: int | None,
    *,
    stored: tuple[int, int] | None = None,
    resume: bool = True,
    batch_rows: int = 20_000,
    source_kind: str = "",
    progress: Progress | None = None,
    previous_ms: int | None = None,
) -> SeriesStats:
    """Fetch one series (resuming after ``stored``), merging every batch as it comes.

    Batches of at most about ``batch_rows`` rows are merged in time order, so a run that
    stops half-way has stored a prefix and the next run resumes after it. ``previous_ms``
    is the open time of the candle before this window when the caller knows it (a window
    fetched in pieces): gaps are counted from it (default: the last stored candle).
    """
    started = time.perf_counter()
    stats = SeriesStats(
        source_kind, source.name, symbol, timeframe, started_at=dt.datetime.now(dt.UTC)
    )
    step = timeframe_ms(timeframe)
    windows = plan_windows(since_ms, until_ms, step, stored if resume else None)
    last_seen: int | None = stored[1] if (resume and stored) else None
    if previous_ms is not None:
        last_seen = previous_ms
    pending: list[pa.Table] = []
    pending_rows = 0

    def flush() -> None:
        nonlocal pending, pending_rows
        if not pending:
            return
        batch = pa.concat_tables(pending)
        pending, pending_rows = [], 0
        _absorb(stats, merge("candles", batch))

    try:
        for start, end in windows:
            stats.window_start_ms = (
                start if stats.window_start_ms is None else min(stats.window_start_ms, start)
            )
            for page in source.iter_candles(symbol, timeframe, start, end, stats=stats.fetch):
                ts = page["ts"].cast(pa.int64()).to_numpy()
                if ts.size:
                    holes, _, _ = gap_stats(
                        np.concatenate(([last_seen], ts)) if last_seen is not None else ts, step
                    )
                    stats.gaps += holes
                    last_seen = int(ts[-1])
                    stats.first_ts_ms = (
                        int(ts[0])
                        if stats.first_ts_ms is None
                        else min(stats.first_ts_ms, int(ts[0]))
                    )
                    stats.last_ts_ms = (
                        int(ts[-1])
                        if stats.last_ts_ms is None
                        else max(stats.last_ts_ms, int(ts[-1]))
                    )
                pending.append(page)
                pending_rows += page.num_rows
                (progress if progress is not None else current()).advance(page.num_rows)
                if pending_rows >= batch_rows:
                    flush()
                    if stats.status == "failed":
                        break
            flush()
            if stats.status == "failed":
                break
            stats.window_end_ms = end if end is not None else (stats.last_ts_ms or start) + step
    except SourceError as exc:
        flush()
        stats.status = "failed"
        stats.message = str(exc)
    stats.finished_at = dt.datetime.now(dt.UTC)
    stats.seconds = time.perf_counter() - started
    return stats


def resample_stored(
    con: duckdb.DuckDBPyConnection,
    exchange: str,
    symbol: str,
    timeframe: str,
    since_ms: int,
    until_ms: int | None,
) -> pa.Table:
    """``timeframe`` candles built from the stored 1m candles (rule in pipelines.resample).

    Only whole buckets come back: the first one starts at ``since_ms`` rounded up to the
    timeframe (a bucket that began earlier may lack minutes that were never collected), and
    the last one must be closed by the stored 1m data (or by ``until_ms``).
    """
    step = timeframe_ms(timeframe)
    start = since_ms + (-since_ms) % step
    params: list[Any] = [exchange, symbol, dt.datetime.fromtimestamp(start / 1000, dt.UTC)]
    where = "exchange = ? AND symbol = ? AND timeframe = '1m' AND ts >= ?"
    if until_ms is not None:
        where += " AND ts < ?"
        params.append(dt.datetime.fromtimestamp(until_ms / 1000, dt.UTC))
    one = con.execute(
        f"SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume FROM candles "
        f"WHERE {where} ORDER BY ts",
        params,
    ).fetch_arrow_table()
    if one.num_rows == 0:
        return CANDLE_SCHEMA.empty_table()
    one = one.cast(CANDLE_SCHEMA)
    return resample_arrow(one, timeframe, closed_until_ms=until_ms)


def collect_resampled(
    con: duckdb.DuckDBPyConnection,
    merge: MergeFn,
    exchange: str,
    symbol: str,
    timeframe: str,
    since_ms: int,
    until_ms: int | None,
    *,
    source_kind: str = "",
) -> SeriesStats:
    """``timeframe`` candles resampled from the stored 1m candles, merged as one batch.

    The outcome goes through ``_absorb`` like any fetched batch, so a batch the gate fails
    leaves its message (symbol, rule, count) in the stats and in ``ingestion_runs``.
    """
    started = time.perf_counter()
    stats = SeriesStats(
        source_kind, exchange, symbol, timeframe, started_at=dt.datetime.now(dt.UTC)
    )
    batch = resample_stored(con, exchange, symbol, timeframe, since_ms, until_ms)
    stats.fetch.rows = batch.num_rows
    stats.window_start_ms, stats.window_end_ms = since_ms, until_ms
    if batch.num_rows:
        ts = batch["ts"].cast(pa.int64()).to_numpy()
        stats.first_ts_ms, stats.last_ts_ms = int(ts[0]), int(ts[-1])
        _absorb(stats, merge("candles", batch))
    stats.finished_at = dt.datetime.now(dt.UTC)
    stats.seconds = time.perf_counter() - started
    return stats


def collect_trades(
    source: Source,
    merge: MergeFn,
    symbol: str,
    since_ms: int,
    until_ms: int | None,
    *,
    source_kind: str = "",
) -> SeriesStats:
    started = time.perf_counter()
    stats = SeriesStats(
        source_kind, source.name, symbol, "trades", started_at=dt.datetime.now(dt.UTC)
    )
    try:
        table = source.fetch_trades(symbol, since_ms, until_ms, stats=stats.fetch)
        stats.window_start_ms, stats.window_end_ms = since_ms, until_ms
        if table.num_rows:
            ts = table["ts"].cast(pa.int64()).to_numpy()
            stats.first_ts_ms, stats.last_ts_ms = int(ts.min()), int(ts.max())
            _absorb(stats, merge("trades", table))
    except SourceError as exc:
        stats.status, stats.message = "failed", str(exc)
    stats.finished_at = dt.datetime.now(dt.UTC)
    stats.seconds = time.perf_counter() - started
    return stats


def snapshot_order_book(
    source: Source, merge: MergeFn, symbol: str, *, depth: int = 20, source_kind: str = ""
) -> SeriesStats:
    started = time.perf_counter()
    stats = SeriesStats(
        source_kind, source.name, symbol, "order_book", started_at=dt.datetime.now(dt.UTC)
    )
    try:
        book = source.fetch_order_book(symbol, depth=depth)
        stats.fetch.requests += 1
        stats.fetch.rows += book.num_rows
        _absorb(stats, merge("order_book_snapshots", book))
    except SourceError as exc:
        stats.status, stats.message = "failed", str(exc)
    stats.finished_at = dt.datetime.now(dt.UTC)
    stats.seconds = time.perf_counter() - started
    return stats


# ---------------------------------------------------------------------------- ingestion stats


def _ts(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def ingestion_table(run_id: str, stats: Sequence[SeriesStats]) -> pa.Table:
    ts_type = pa.timestamp("us", tz="UTC")
    rows = [
        {
            "run_id": run_id,
            "source": s.source or "unknown",
            "exchange": s.exchange,
            "symbol": s.symbol,
            "timeframe": s.timeframe,
            "started_at": s.started_at,
            "finished_at": s.finished_at or s.started_at,
            "window_start": _ts(s.window_start_ms),
            "window_end": _ts(s.window_end_ms),
            "requests": s.fetch.requests,
            "retries": s.fetch.retries,
            "rows_fetched": s.fetch.rows,
            "rows_merged": s.rows_merged,
            "rows_quarantined": s.rows_quarantined,
            "duplicates_dropped": s.fetch.duplicates_dropped,
            "open_candles_dropped": s.fetch.open_candles_dropped,
            "gaps": s.gaps,
            "first_ts": _ts(s.first_ts_ms),
            "last_ts": _ts(s.last_ts_ms),
            "seconds": float(s.seconds),
            "status": s.status,
            "message": (s.message or "; ".join(s.warnings[:5]))[:2000] or None,
        }
        for s in stats
    ]
    schema = pa.schema(
        [
            ("run_id", pa.string()),
            ("source", pa.string()),
            ("exchange", pa.string()),
            ("symbol", pa.string()),
            ("timeframe", pa.string()),
            ("started_at", ts_type),
            ("finished_at", ts_type),
            ("window_start", ts_type),
            ("window_end", ts_type),
            ("requests", pa.int64()),
            ("retries", pa.int64()),
            ("rows_fetched", pa.int64()),
            ("rows_merged", pa.int64()),
            ("rows_quarantined", pa.int64()),
            ("duplicates_dropped", pa.int64()),
            ("open_candles_dropped", pa.int64()),
            ("gaps", pa.int64()),
            ("first_ts", ts_type),
            ("last_ts", ts_type),
            ("seconds", pa.float64()),
            ("status", pa.string()),
            ("message", pa.string()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def record_ingestion(
    con: duckdb.DuckDBPyConnection, run_id: str, stats: Sequence[SeriesStats], *, settings: Settings
) -> int:
    if not stats:
        return 0
    return upsert(con, "ingestion_runs", ingestion_table(run_id, stats), settings=settings).rows_in


def _cell(text: object) -> str:
    """A markdown table cell: pipes escaped, newlines flattened."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def stats_markdown(run_id: str, stats: Sequence[SeriesStats]) -> str:
    """A markdown table of a run's series (the collect flow publishes it as an artifact)."""
    failed = [s for s in stats if s.status == "failed"]
    lines = [
        f"# Collect run `{run_id}`",
        "",
        f"**{'FAILED' if failed else 'ok'}**: {len(stats)} series, "
        f"{sum(s.fetch.rows for s in stats)} rows fetched, "
        f"{sum(s.rows_merged for s in stats)} merged, "
        f"{sum(s.rows_quarantined for s in stats)} quarantined, {len(failed)} failed.",
        "",
        "| exchange | symbol | timeframe | status | fetched | merged | quarantined | gaps "
        "| requests | retries | message |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in stats:
        status = "**failed**" if s.status == "failed" else s.status
        message = s.message or "; ".join(s.warnings[:3])
        lines.append(
            f"| {_cell(s.exchange)} | {_cell(s.symbol)} | {s.timeframe} | {status} "
            f"| {s.fetch.rows} | {s.rows_merged} | {s.rows_quarantined} | {s.gaps} "
            f"| {s.fetch.requests} | {s.fetch.retries} | {_cell(message)} |"
        )
    return "\n".join(lines) + "\n"


def parse_time_ms(value: str | int | dt.datetime | None) -> int | None:
    """ISO 8601 text (UTC if naive), epoch ms, or a datetime -> epoch ms."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        if value == "now":
            return None
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)


def stats_json(stats: Sequence[SeriesStats]) -> str:
    return json.dumps([s.as_dict() for s in stats], default=str)
