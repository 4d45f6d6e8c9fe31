"""Re-validating what the warehouse already holds, on demand, over a symbol/time range.

The stored rows are read back and passed through the same gate as new batches: rows that
pass are unchanged (the upsert writes nothing), rows that fail under the current suites are
recorded in ``quarantine`` (they stay in their table: nothing accepted is lost, but they are
flagged), gaps are measured over the whole stored range, and one ``quality_results`` row is
written per series.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import duckdb

from expectations.gate import GateResult, gate_and_merge
from expectations.policy import GatePolicy
from warehouse.settings import Settings


def _utc(value: dt.datetime | dt.date) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def candle_series(
    con: duckdb.DuckDBPyConnection,
    *,
    symbols: Sequence[str] | None = None,
    timeframes: Sequence[str] | None = None,
    exchange: str | None = None,
) -> list[tuple[str, str, str]]:
    """The (exchange, symbol, timeframe) series stored in ``candles``, optionally filtered."""
    rows = con.execute(
        "SELECT DISTINCT exchange, symbol, timeframe FROM candles ORDER BY ALL"
    ).fetchall()
    return [
        (e, s, t)
        for e, s, t in rows
        if (not symbols or s in symbols)
        and (not timeframes or t in timeframes)
        and (exchange is None or e == exchange)
    ]


def revalidate_candles(
    con: duckdb.DuckDBPyConnection,
    *,
    settings: Settings,
    exchange: str,
    symbol: str,
    timeframe: str,
    start: dt.datetime | dt.date | None = None,
    end: dt.datetime | dt.date | None = None,
    run_id: str | None = None,
    policy: GatePolicy | None = None,
) -> GateResult:
    """Validate the stored candles of one series with open time in ``[start, end)``."""
    lo = _utc(start) if start is not None else dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    hi = _utc(end) if end is not None else dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
    if hi <= lo:
        raise ValueError(f"empty range: end {hi.isoformat()} is not after start {lo.isoformat()}")
    batch = con.execute(
        "SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume FROM candles "
        "WHERE exchange = ? AND symbol = ? AND timeframe = ? AND ts >= ? AND ts < ? ORDER BY ts",
        [exchange, symbol, timeframe, lo, hi],
    ).fetch_arrow_table()
    return gate_and_merge(con, "candles", batch, settings=settings, run_id=run_id, policy=policy)
