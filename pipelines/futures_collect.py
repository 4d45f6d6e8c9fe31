"""Collecting a perpetual contract's mark prices, funding rates and open interest.

Through ccxt's unified methods (``fetch_mark_ohlcv``, ``fetch_funding_rate_history``,
``fetch_open_interest_history``) on a :class:`~pipelines.sources.CcxtSource`, so with the
same retries as candles (``CcxtSource._call``: network errors, 429/5xx, timeouts and cut
bodies retried with backoff; auth and bad symbols fail at once). Like candles:

* **Paging**: ``since=cursor, limit=page_limit, params={'until': end - 1}``; each page is
  de-duplicated by time and sorted; the cursor moves past the last row kept (one period for
  mark candles and open interest, 1 ms for funding, whose stamps are not aligned); the number
  of pages is bounded.
* **Resume**: a run starts after the last row stored for (exchange, symbol, timeframe).
* **Closed only**: a mark candle still open at the source's clock is not stored.
* **Writes**: the pages go through the quality gate (``expectations.gate``) into their own
  table, with its suite and its quarantine, every ``flush_rows`` rows and at the end (the
  gate's cost is mostly per call); the merge is an idempotent upsert on the table's key, so
  a re-run or an overlap adds nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import duckdb
import numpy as np
import pyarrow as pa

from expectations.derive import timeframe_ms
from expectations.gate import GateResult, gate_and_merge
from pipelines.simulated_futures import FUNDING_INTERVAL
from pipelines.sources import CcxtSource, FetchStats, SourceError
from pipelines.sources.base import CANDLE_SCHEMA, TS
from warehouse.settings import Settings

Kind = Literal["mark_candles", "funding_rates", "open_interest"]
KINDS: tuple[Kind, ...] = ("mark_candles", "funding_rates", "open_interest")

# ccxt.binanceusdm's load_markets reads only /fapi/v1/exchangeInfo with these
BINANCE_USDM_OPTIONS: dict[str, Any] = {
    "fetchMarkets": {"types": ["linear"]},
    "fetchCurrencies": False,
    "fetchMargins": False,
}
# the most rows Binance's USD-M endpoints return per call
PAGE_LIMITS: dict[Kind, int] = {"mark_candles": 1500, "funding_rates": 1000, "open_interest": 500}


def _schema(*values: str) -> pa.Schema:
    return pa.schema([*CANDLE_SCHEMA][:4] + [(v, pa.float64()) for v in values])


_SCHEMAS: dict[Kind, pa.Schema] = {
    "mark_candles": CANDLE_SCHEMA,  # volume is null: exchanges publish none
    "funding_rates": _schema("funding_rate"),
    "open_interest": _schema("open_interest", "open_interest_value"),
}
_VALUES: dict[Kind, tuple[str, ...]] = {
    k: tuple(f.name for f in s)[4:] for k, s in _SCHEMAS.items()
}


@dataclass
class FuturesCollectResult:
    kind: Kind
    symbol: str
    timeframe: str
    since_ms: int  # where this run started (after the last stored row, when resuming)
    fetch: FetchStats = field(default_factory=FetchStats)
    gate: list[GateResult] = field(default_factory=list)

    @property
    def rows_merged(self) -> int:
        return sum(g.rows_merged for g in self.gate)

    @property
    def rows_quarantined(self) -> int:
        return sum(g.rows_quarantined for g in self.gate)


def futures_source(exchange_id: str = "binanceusdm", **kw: Any) -> CcxtSource:
    """A :class:`CcxtSource` for a USD-M futures exchange (for binanceusdm: only the linear
    markets are loaded)."""
    config = dict(kw.pop("config", None) or {})
    if exchange_id == "binanceusdm":
        config["options"] = {**BINANCE_USDM_OPTIONS, **(config.get("options") or {})}
    return CcxtSource(exchange_id, config=config, **kw)


def last_stored_ms(
    con: duckdb.DuckDBPyConnection, kind: Kind, exchange: str, symbol: str, timeframe: str
) -> int | None:
    """The epoch ms of the last row stored for the series, or None."""
    row = con.execute(
        f"SELECT epoch_ms(max(ts)) FROM {kind} WHERE exchange = ? AND symbol = ? AND timeframe = ?",
        [exchange, symbol, timeframe],
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _fetch_page(
    source: CcxtSource, kind: Kind, symbol: str, timeframe: str, cursor: int, end: int, limit: int
) -> Callable[[], list[Any]]:
    ex = source.exchange
    params = {"until": end - 1}
    if kind == "mark_candles":
        return partial(
            ex.fetch_mark_ohlcv, symbol, timeframe, since=cursor, limit=limit, params=params
        )
    if kind == "funding_rates":
        return partial(
            ex.fetch_funding_rate_history, symbol, since=cursor, limit=limit, params=params
        )
    return partial(
        ex.fetch_open_interest_history, symbol, timeframe, since=cursor, limit=limit, params=params
    )


def _rows(kind: Kind, raw: list[Any], where: str) -> tuple[np.ndarray, np.ndarray]:
    """(ts, values) of a page; values as float64 columns in the table's order."""
    if kind == "mark_candles":
        ts = [r[0] for r in raw]
        values = [[r[1], r[2], r[3], r[4], None] for r in raw]
    elif kind == "funding_rates":
        ts = [r.get("timestamp") for r in raw]
        values = [[r.get("fundingRate")] for r in raw]
    else:
        ts = [r.get("timestamp") for r in raw]
        values = [[r.get("openInterestAmount"), r.get("openInterestValue")] for r in raw]
    if any(t is None for t in ts):
        raise SourceError(f"{where}: a row without a timestamp")
    return np.asarray(ts, dtype=np.int64), np.asarray(values, dtype=np.float64).reshape(
        len(raw), len(_VALUES[kind])
    )


def _table(
    kind: Kind, exchange: str, symbol: str, timeframe: str, ts: np.ndarray, values: np.ndarray
) -> pa.Table:
    n = ts.size
    columns: dict[str, Any] = {
        "exchange": [exchange] * n,
        "symbol": [symbol] * n,
        "timeframe": [timeframe] * n,
        "ts": pa.array(ts, TS),
    }
    for i, name in enumerate(_VALUES[kind]):
        columns[name] = pa.array(values[:, i], pa.float64(), from_pandas=True)
    return pa.table(columns, schema=_SCHEMAS[kind])


def collect_futures(
    con: duckdb.DuckDBPyConnection,
    source: CcxtSource,
    kind: Kind,
    symbol: str,
    since_ms: int,
    until_ms: int | None = None,
    *,
    timeframe: str | None = None,
    settings: Settings,
    page_limit: int | None = None,
    resume: bool = True,
    flush_rows: int = 20_000,
) -> FuturesCollectResult:
    """Fetch ``kind`` for the contract ``symbol`` from ``since_ms`` (or after the last stored
    row) to ``until_ms`` (or the source's clock), and gate and merge every page into the table
    ``kind``. ``timeframe``: the candle or statistics period (funding: the interval, 8h).
    Pages are gated and merged together every ``flush_rows`` rows, at the end, and when a
    page fails for good (so a run that stops keeps what it fetched)."""
    if kind not in KINDS:
        raise ValueError(f"unknown futures data kind {kind!r}; known: {KINDS}")
    timeframe = timeframe or (FUNDING_INTERVAL if kind == "funding_rates" else "1h")
    step = timeframe_ms(timeframe)
    if step is None:
        raise ValueError(f"{kind} {symbol}: unknown period {timeframe!r} (like 5m, 1h, 8h, 1d)")
    advance = 1 if kind == "funding_rates" else step
    limit = page_limit or PAGE_LIMITS[kind]
    source.load_markets()
    if symbol not in source.exchange.markets:
        raise SourceError(f"{source.exchange_id} has no market {symbol!r} (BadSymbol)")
    last = last_stored_ms(con, kind, source.name, symbol, timeframe) if resume else None
    cursor = since_ms if last is None else max(since_ms, last + advance)
    if kind != "funding_rates":
        cursor += (-cursor) % step
    result = FuturesCollectResult(kind, symbol, timeframe, cursor)
    pending: list[pa.Table] = []

    def flush() -> None:
        """Gate and merge the pages fetched so far (one gate call: its cost is per call)."""
        if pending:
            batch = pa.concat_tables(pending)
            pending.clear()
            now = dt.datetime.fromtimestamp(source.clock() / 1000, dt.UTC)
            result.gate.append(gate_and_merge(con, kind, batch, settings=settings, now=now))

    try:
        _pages(
            source,
            kind,
            symbol,
            timeframe,
            step,
            cursor,
            until_ms,
            limit,
            result,
            pending,
            flush,
            flush_rows,
        )
    finally:  # what was fetched before a failure is kept: the next run resumes after it
        flush()
    return result


def _pages(
    source: CcxtSource,
    kind: Kind,
    symbol: str,
    timeframe: str,
    step: int,
    cursor: int,
    until_ms: int | None,
    limit: int,
    result: FuturesCollectResult,
    pending: list[pa.Table],
    flush: Callable[[], None],
    flush_rows: int,
) -> None:
    where = f"{source.exchange_id} {kind} {symbol} {timeframe}"
    advance = 1 if kind == "funding_rates" else step
    stats = result.fetch
    horizon = until_ms if until_ms is not None else source.clock()
    # every page moves the cursor past one row at least (one period apart at the least)
    max_pages = max(0, horizon - cursor) // step + 10
    for _ in range(max_pages):
        now = source.clock()
        end = now if until_ms is None else min(until_ms, now)
        if cursor >= end:
            return
        raw = source._call(  # the candles' retries
            f"fetch {kind}",
            symbol,
            _fetch_page(source, kind, symbol, timeframe, cursor, end, limit),
            stats,
        )
        stats.pages += 1
        if not raw:
            return
        ts, values = _rows(kind, raw, where)
        if np.any(np.diff(ts) < 0):
            stats.out_of_order_pages += 1
        uniq, first = np.unique(ts, return_index=True)
        stats.duplicates_dropped += ts.size - uniq.size
        ts, values = uniq, values[first]
        keep = (ts >= cursor) & (ts < end)
        if kind == "mark_candles":
            closed = ts + step <= now
            stats.open_candles_dropped += int((keep & ~closed).sum())
            keep &= closed
        if not keep.any():
            return
        ts, values = ts[keep], values[keep]
        stats.rows += ts.size
        pending.append(_table(kind, source.name, symbol, timeframe, ts, values))
        if sum(t.num_rows for t in pending) >= flush_rows:
            flush()
        next_cursor = int(ts[-1]) + advance
        if next_cursor <= cursor:
            return
        cursor = next_cursor
    raise SourceError(
        f"{where}: more than {max_pages} pages; the exchange is not honouring since/limit"
    )


def written(con: duckdb.DuckDBPyConnection, result: GateResult) -> int:
    """Rows a gated merge inserted or replaced (from its ``quality_results`` details)."""
    row = con.execute(
        "SELECT details_json FROM quality_results WHERE validation_id = ?", [result.validation_id]
    ).fetchone()
    write = (json.loads(row[0]) or {}).get("write") if row and row[0] else None
    return int(write["inserted"]) + int(write["replaced"]) if write else 0
