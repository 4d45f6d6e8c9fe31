"""The source interface and the Arrow schemas every source returns (the warehouse's)."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

TS = pa.timestamp("ms", tz="UTC")

CANDLE_SCHEMA = pa.schema(
    [
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("timeframe", pa.string()),
        ("ts", TS),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
    ]
)
ORDER_BOOK_SCHEMA = pa.schema(
    [
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("ts", TS),
        ("bid_prices", pa.list_(pa.float64())),
        ("bid_sizes", pa.list_(pa.float64())),
        ("ask_prices", pa.list_(pa.float64())),
        ("ask_sizes", pa.list_(pa.float64())),
    ]
)
TRADE_SCHEMA = pa.schema(
    [
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("trade_id", pa.string()),
        ("ts", TS),
        ("side", pa.string()),
        ("price", pa.float64()),
        ("amount", pa.float64()),
        ("cost", pa.float64()),
    ]
)


def wall_clock_ms() -> int:
    """Now, in epoch milliseconds (the default clock of sources and the loopback exchange)."""
    return int(time.time() * 1000)


class SourceError(RuntimeError):
    """A source failed in a way retrying will not fix (auth, unknown symbol, unsupported)."""


@dataclass
class FetchStats:
    """What a source did for one series: requests, retries, what it dropped and why."""

    requests: int = 0
    retries: int = 0
    pages: int = 0
    rows: int = 0
    duplicates_dropped: int = 0
    out_of_order_pages: int = 0
    open_candles_dropped: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: FetchStats) -> None:
        self.requests += other.requests
        self.retries += other.retries
        self.pages += other.pages
        self.rows += other.rows
        self.duplicates_dropped += other.duplicates_dropped
        self.out_of_order_pages += other.out_of_order_pages
        self.open_candles_dropped += other.open_candles_dropped
        self.errors.extend(other.errors)


@dataclass(frozen=True)
class RetryPolicy:
    """How a source retries a failed request (``CcxtSource``; kept here so that building a
    source's options does not import ccxt)."""

    max_attempts: int = 6
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0

    def delay_s(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Full-jitter exponential backoff, but never shorter than the server's Retry-After."""
        backoff = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
        delay = rng.uniform(backoff / 2, backoff)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_retry_after_s))
        return delay


@runtime_checkable
class Source(Protocol):
    """Where market data comes from. ``name`` is what goes into the ``exchange`` column.

    ``iter_candles`` yields batches of CLOSED candles with open time in [since_ms, until_ms)
    (``until_ms=None`` means now), ordered by time, without duplicates, in CANDLE_SCHEMA.
    """

    @property
    def name(self) -> str: ...

    def iter_candles(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int,
        until_ms: int | None,
        *,
        stats: FetchStats | None = None,
    ) -> Iterator[pa.Table]: ...

    def fetch_order_book(self, symbol: str, *, depth: int = 20) -> pa.Table: ...

    def fetch_trades(
        self, symbol: str, since_ms: int, until_ms: int | None, *, stats: FetchStats | None = None
    ) -> pa.Table: ...

    def close(self) -> None: ...


def fetch_candles(
    source: Source, symbol: str, timeframe: str, since_ms: int, until_ms: int | None = None
) -> pa.Table:
    """All closed candles of one series as one table."""
    batches = list(source.iter_candles(symbol, timeframe, since_ms, until_ms))
    return pa.concat_tables(batches) if batches else CANDLE_SCHEMA.empty_table()


def candles_from_rows(exchange: str, symbol: str, timeframe: str, rows: np.ndarray) -> pa.Table:
    """A candle table from an (n, 6) array of [ts_ms, open, high, low, close, volume]."""
    n = rows.shape[0]
    return pa.table(
        {
            "exchange": pa.array([exchange] * n, pa.string()),
            "symbol": pa.array([symbol] * n, pa.string()),
            "timeframe": pa.array([timeframe] * n, pa.string()),
            "ts": pa.array(rows[:, 0].astype(np.int64), TS),
            "open": pa.array(rows[:, 1], pa.float64()),
            "high": pa.array(rows[:, 2], pa.float64()),
            "low": pa.array(rows[:, 3], pa.float64()),
            "close": pa.array(rows[:, 4], pa.float64()),
            "volume": pa.array(rows[:, 5], pa.float64()),
        },
        schema=CANDLE_SCHEMA,
    )


def candles_checksum(ts_ms: np.ndarray, ohlcv: np.ndarray) -> str:
    """sha256 over (ts, open, high, low, close, volume) rows sorted by ts: equal data, equal sum."""
    order = np.argsort(ts_ms, kind="stable")
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(ts_ms[order], dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(ohlcv[order], dtype="<f8").tobytes())
    return digest.hexdigest()


def table_checksum(table: pa.Table) -> str:
    ts = table["ts"].cast(TS).cast(pa.int64()).to_numpy()
    ohlcv = np.column_stack(
        [table[c].to_numpy() for c in ("open", "high", "low", "close", "volume")]
    )
    return candles_checksum(ts, ohlcv)
