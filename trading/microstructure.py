"""Order books and public trades in the serving loop (backtest, replay and live alike).

A market attaches to each tick the order-book snapshots and trades of each symbol that it
received since the previous tick (``SideEvents``): ``ReplayMarket`` / ``backtest --model``
from the warehouse (``Timeline``: what the collector stored), ``PollingMarket`` from the
exchange (one snapshot and the new trades a poll). The loop feeds them to the symbol's online
feature engine (``OnlineFeatureEngine.on_order_book`` / ``on_trade``) BEFORE the tick's
candles, in time order; the engine uses a snapshot only for candles that close after it and a
trade only in the candle it happened in, exactly as the batch features join them. The latest
snapshot also prices the bar: its spread is the cost estimate's half spread, and paper fills
walk it (``trading.broker.OrderBookSlippage``), falling back to the fixed slippage when a
symbol has no book.

Imports neither torch nor Prefect.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from pipelines.features.side import SideInputs
from pipelines.features.spec import BASE_ONLY_INPUTS, base_graph
from trading.broker import BookSnapshot
from trading.side_data import SideEvent, SideTimeline

TradePrint = tuple[int, str, float]  # ts_ms, side ('buy' | 'sell'), base amount


@dataclass(frozen=True, slots=True)
class SideEvents:
    """One symbol's snapshots and trades received for a tick, each in time order, and its
    funding and news data (``trading.side_data``)."""

    symbol: str
    books: tuple[BookSnapshot, ...] = ()
    trades: tuple[TradePrint, ...] = ()
    data: tuple[SideEvent, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.books or self.trades or self.data)


def book_from_row(ts_ms: int, row: dict[str, Any]) -> BookSnapshot:
    return BookSnapshot(
        int(ts_ms),
        tuple(float(x) for x in row["bid_prices"]),
        tuple(float(x) for x in row["bid_sizes"]),
        tuple(float(x) for x in row["ask_prices"]),
        tuple(float(x) for x in row["ask_sizes"]),
    )


def half_spread_fraction(book: BookSnapshot) -> float | None:
    """(ask - bid) / 2 / mid of the best levels; None for an empty or crossed book."""
    if not book.bid_prices or not book.ask_prices:
        return None
    bid, ask = book.bid_prices[0], book.ask_prices[0]
    if not (0.0 < bid <= ask):
        return None
    return (ask - bid) / (ask + bid)


@dataclass
class Timeline:
    """One symbol's stored snapshots and trades, handed out tick by tick: ``until(close_ms)``
    returns those stamped before ``close_ms`` that were not handed out yet."""

    symbol: str
    order_book: pl.DataFrame  # ts (datetime), bid_prices, bid_sizes, ask_prices, ask_sizes
    trades: pl.DataFrame  # ts (datetime), side, amount
    data: SideTimeline | None = None  # funding and news data (trading.side_data)
    _book_ms: np.ndarray = field(init=False)
    _trade_ms: np.ndarray = field(init=False)
    _next_book: int = 0
    _next_trade: int = 0

    def __post_init__(self) -> None:
        self.order_book = self.order_book.sort("ts")
        self.trades = self.trades.sort("ts")
        self._book_ms = _epoch_ms(self.order_book)
        self._trade_ms = _epoch_ms(self.trades)

    @classmethod
    def empty(cls, symbol: str) -> Timeline:
        """No snapshots and no trades (a symbol with only funding or news data)."""
        ts = pl.Datetime("ms", "UTC")
        prices = pl.List(pl.Float64)
        return cls(
            symbol,
            pl.DataFrame(
                schema={
                    "ts": ts,
                    "bid_prices": prices,
                    "bid_sizes": prices,
                    "ask_prices": prices,
                    "ask_sizes": prices,
                }
            ),
            pl.DataFrame(schema={"ts": ts, "side": pl.String, "amount": pl.Float64}),
        )

    def reset(self) -> None:
        self._next_book = self._next_trade = 0
        if self.data is not None:
            self.data.reset()

    def until(self, close_ms: int) -> SideEvents:
        b = int(np.searchsorted(self._book_ms, close_ms, side="left"))
        t = int(np.searchsorted(self._trade_ms, close_ms, side="left"))
        books = tuple(
            book_from_row(int(self._book_ms[i]), row)
            for i, row in zip(
                range(self._next_book, b),
                self.order_book.slice(self._next_book, b - self._next_book).iter_rows(named=True),
                strict=True,
            )
        )
        part = self.trades.slice(self._next_trade, t - self._next_trade)
        trades = _prints(self._trade_ms[self._next_trade : t], part)
        self._next_book, self._next_trade = max(b, self._next_book), max(t, self._next_trade)
        data = self.data.until(close_ms) if self.data is not None else ()
        return SideEvents(self.symbol, books, trades, data)

    def frames(self) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
        """(order_book, trades) as ``build_features`` takes them (None: none)."""
        return (
            self.order_book if self.order_book.height else None,
            self.trades if self.trades.height else None,
        )

    def side_inputs(self) -> SideInputs | None:
        """The funding and news data as ``build_features(side=...)`` takes them (None: none)."""
        return None if self.data is None else self.data.inputs


def _prints(ts_ms: np.ndarray, frame: pl.DataFrame) -> tuple[TradePrint, ...]:
    """``frame``'s trades (side, amount; stamped ``ts_ms``) as the loop feeds them."""
    sides, amounts = frame["side"].to_list(), frame["amount"].to_list()
    return tuple(
        (int(t), str(side).lower(), float(a))
        for t, side, a in zip(ts_ms, sides, amounts, strict=True)
    )


def _epoch_ms(frame: pl.DataFrame) -> np.ndarray:
    if frame.height == 0:
        return np.empty(0, dtype=np.int64)
    return frame["ts"].dt.epoch("ms").to_numpy().astype(np.int64)


def read_timeline(con: Any, exchange: str, symbol: str, lo_ms: int, hi_ms: int) -> Timeline | None:
    """The stored snapshots and trades of ``symbol`` on ``exchange`` stamped in
    ``[lo_ms, hi_ms)``; None when the warehouse holds neither."""
    out = []
    for table, columns in (
        ("order_book_snapshots", "ts, bid_prices, bid_sizes, ask_prices, ask_sizes"),
        ("trades", "ts, side, amount"),
    ):
        frame = pl.from_arrow(
            con.execute(
                f"SELECT {columns} FROM {table} WHERE exchange = ? AND symbol = ? AND "
                "epoch_ms(ts) >= ? AND epoch_ms(ts) < ? ORDER BY ts",
                [exchange, symbol, int(lo_ms), int(hi_ms)],
            ).fetch_arrow_table()
        )
        assert isinstance(frame, pl.DataFrame)
        out.append(frame)
    if out[0].height == 0 and out[1].height == 0:
        return None
    return Timeline(symbol, out[0], out[1])


def poll_side(source: Any, symbol: str, since_ms: int) -> tuple[SideEvents, int]:
    """One order-book snapshot and the trades since ``since_ms`` of ``symbol`` from a
    ``pipelines.sources`` Source; returns them and where the next poll's trades start."""
    table = source.fetch_order_book(symbol, depth=20)
    books = tuple(
        book_from_row(int(row["ts"].timestamp() * 1000), row)
        for row in pl.from_arrow(table).iter_rows(named=True)  # type: ignore[union-attr]
    )
    trades_table = source.fetch_trades(symbol, since_ms, None)
    frame = pl.from_arrow(trades_table)
    assert isinstance(frame, pl.DataFrame)
    ms = _epoch_ms(frame)
    trades = _prints(ms, frame)
    nxt = int(ms.max()) + 1 if ms.size else since_ms
    return SideEvents(symbol, books, trades), nxt


def reads_microstructure(columns: Iterable[str]) -> bool:
    """Whether any of ``columns`` depends on the order book or the trades."""
    tainted = set(BASE_ONLY_INPUTS)
    for node in base_graph().nodes:
        if any(x in tainted for x in node.inputs):
            tainted.add(node.name)
    return bool(tainted & set(columns))
