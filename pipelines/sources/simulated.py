"""The simulated exchange as a source (the embedded default: no network)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipelines.resample import timeframe_ms
from pipelines.simulated_exchange import SimulatedExchange
from pipelines.sources.base import (
    CANDLE_SCHEMA,
    ORDER_BOOK_SCHEMA,
    TRADE_SCHEMA,
    TS,
    FetchStats,
    wall_clock_ms,
)


@dataclass
class SimulatedSource:
    exchange: SimulatedExchange = field(default_factory=SimulatedExchange)
    clock: Callable[[], int] = wall_clock_ms
    batch_days: int = 7  # candles are yielded in batches of this many days

    @property
    def name(self) -> str:
        return self.exchange.name

    def iter_candles(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int,
        until_ms: int | None,
        *,
        stats: FetchStats | None = None,
    ) -> Iterator[pa.Table]:
        step = timeframe_ms(timeframe)
        now = self.clock()
        closed_until = now - now % step  # the bucket holding "now" is still open
        end = closed_until if until_ms is None else min(until_ms, closed_until)
        start = max(since_ms, self.exchange.config.origin_ms)
        start += (-start) % step
        batch_ms = self.batch_days * 86_400_000
        cursor = start
        while cursor < end:
            batch_end = min(end, cursor + batch_ms)
            table = self.exchange.candles(symbol, cursor, batch_end, timeframe=timeframe).cast(
                CANDLE_SCHEMA
            )
            if stats is not None:
                stats.requests += 1
                stats.pages += 1
                stats.rows += table.num_rows
            if table.num_rows:
                yield table
            cursor = batch_end

    def fetch_order_book(self, symbol: str, *, depth: int = 20) -> pa.Table:
        now = self.clock()
        book = self.exchange.order_book(symbol, now, depth=depth)
        return pa.table(
            {
                "exchange": [self.name],
                "symbol": [symbol],
                "ts": pa.array([now], TS),
                **{k: [v] for k, v in book.items()},
            },
            schema=ORDER_BOOK_SCHEMA,
        )

    def fetch_trades(
        self, symbol: str, since_ms: int, until_ms: int | None, *, stats: FetchStats | None = None
    ) -> pa.Table:
        end = self.clock() if until_ms is None else min(until_ms, self.clock())
        t = self.exchange.trade_arrays(symbol, since_ms, end)
        n = t["ts"].size
        if stats is not None:
            stats.requests += 1
            stats.rows += n
        return pa.table(
            {
                "exchange": pa.array([self.name] * n, pa.string()),
                "symbol": pa.array([symbol] * n, pa.string()),
                "trade_id": pa.array(t["id"].astype(str), pa.string()),
                "ts": pa.array(t["ts"], TS),
                "side": pa.array(np.where(t["is_buy"], "buy", "sell"), pa.string()),
                "price": pa.array(t["price"], pa.float64()),
                "amount": pa.array(t["amount"], pa.float64()),
                "cost": pa.array(t["price"] * t["amount"], pa.float64()),
            },
            schema=TRADE_SCHEMA,
        )

    def close(self) -> None:
        return None
