"""No look-ahead on the serving side of the order book and trades (``trading.microstructure``).

``ReplayMarket`` hands a symbol's stored snapshots and trades to the loop tick by tick
(``Timeline.until``): each one exactly once, in time order, with the first tick whose candle
closes after it. Fed that way to the online engine (as ``ServingLoop`` does), the order-book
and trade-flow features equal the batch ones to 1e-9, and changing every snapshot and trade
stamped at or after a time T changes no row whose candle closed by T. Snapshots and trades
fall on minute boundaries too, where "before the close" decides; candles have gaps.
(The features' own no-look-ahead property, batch and online over every kind of data, is
``tests/pipelines/features/test_no_lookahead.py``.)
"""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.features import OnlineFeatureEngine, build_features
from trading.backtest import Candles
from trading.market import FollowMarket, ReplayMarket
from trading.microstructure import Timeline

MINUTE = 60_000
START = 1_704_067_200_000
N = 80  # minutes
COLUMNS = [
    "obimb",
    "spreadbps",
    "obimbmom_5",
    "obimbdev_20",
    "obimb_lag3",
    "tfbuy_1",
    "tfimb_1",
    "tfbuy_10",
    "tfimb_10",
]


def _utc(ms: np.ndarray) -> pl.Series:
    return pl.Series(ms, dtype=pl.Int64).cast(pl.Datetime("ms", "UTC"))


def _data(seed: int, gaps: list[int]) -> tuple[Candles, pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    present = np.ones(N, dtype=bool)
    present[[g for g in gaps if 0 < g < N - 1]] = False
    ts = START + np.flatnonzero(present).astype(np.int64) * MINUTE
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, ts.size)))
    candles = Candles("A/B", "1m", ts, close, close * 1.001, close * 0.999, close, np.ones(ts.size))

    def stamps(count: int) -> np.ndarray:
        t = rng.integers(START - MINUTE, START + N * MINUTE, count)
        return np.sort(np.where(rng.random(count) < 0.3, t // MINUTE * MINUTE, t))

    book_ts = np.unique(stamps(2 * N))
    mid = 100 * np.exp(rng.normal(0, 0.01, book_ts.size))
    sizes = rng.uniform(0.1, 5, (book_ts.size, 2))
    book = pl.DataFrame(
        {
            "ts": _utc(book_ts),
            "bid_prices": [[m * 0.999] for m in mid],
            "bid_sizes": [[s] for s in sizes[:, 0]],
            "ask_prices": [[m * 1.001] for m in mid],
            "ask_sizes": [[s] for s in sizes[:, 1]],
        }
    )
    trade_ts = stamps(4 * N)
    trades = pl.DataFrame(
        {
            "ts": _utc(trade_ts),
            "side": np.where(rng.random(trade_ts.size) < 0.5, "buy", "sell"),
            "amount": rng.uniform(0.1, 3, trade_ts.size),
        }
    )
    return candles, book, trades


def _online(candles: Candles, book: pl.DataFrame, trades: pl.DataFrame) -> list[list[float]]:
    """The features of every candle, the engine fed what each tick brought before it."""
    engine = OnlineFeatureEngine("1m", columns=COLUMNS)
    rows = []
    delivered = []
    for tick in ReplayMarket([candles], side={"A/B": Timeline("A/B", book, trades)}).ticks():
        (events,) = tick.side
        (bar,) = tick.bars
        assert all(b.ts_ms < tick.now_ms for b in events.books)  # stamped before the close
        assert all(t[0] < tick.now_ms for t in events.trades)
        delivered += [b.ts_ms for b in events.books]
        for b in events.books:
            engine.on_order_book(b.ts_ms, b.bid_prices, b.bid_sizes, b.ask_prices, b.ask_sizes)
        for ts_ms, way, amount in events.trades:
            engine.on_trade(ts_ms, way, amount)
        out = engine.step({"ts": bar.ts_ms, "open": bar.open, "high": bar.high,
                           "low": bar.low, "close": bar.close, "volume": bar.volume})  # fmt: skip
        rows.append([np.nan if out[c] is None else float(out[c]) for c in COLUMNS])  # type: ignore[arg-type]
    # each snapshot before the last close exactly once, in time order
    last_close = int(candles.ts_ms[-1]) + MINUTE
    book_ms = book["ts"].dt.epoch("ms").to_numpy()
    assert delivered == sorted(int(t) for t in book_ms if t < last_close)
    return rows


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    gaps=st.lists(st.integers(0, N - 1), max_size=5),
    cut=st.integers(25, N - 5),
)
def test_the_loop_is_fed_only_what_came_before_each_close(
    seed: int, gaps: list[int], cut: int
) -> None:
    candles, book, trades = _data(seed, gaps)
    online = np.array(_online(candles, book, trades))
    frame = pl.DataFrame(
        {
            "exchange": "x",
            "symbol": "A/B",
            "timeframe": "1m",
            "ts": _utc(candles.ts_ms),
            "open": candles.open,
            "high": candles.high,
            "low": candles.low,
            "close": candles.close,
            "volume": candles.volume,
        }
    )
    batch = build_features(frame, order_book=book, trades=trades, columns=COLUMNS)
    want = batch.select(COLUMNS).to_numpy().astype(float)
    np.testing.assert_allclose(online, want, rtol=0, atol=1e-9, equal_nan=True)
    # change every snapshot and trade stamped at or after T: rows closed by T do not move
    t = START + cut * MINUTE + (seed % 3) * 20_000
    late_book = pl.col("ts").dt.epoch("ms") >= t
    book2 = book.with_columns(
        pl.when(late_book)
        .then(pl.col("bid_sizes").list.eval(pl.element() * 7))
        .otherwise(pl.col("bid_sizes"))
    )
    trades2 = trades.with_columns(
        pl.when(pl.col("ts").dt.epoch("ms") >= t)
        .then(pl.col("amount") * 5 + 1)
        .otherwise(pl.col("amount")),
        pl.when(pl.col("ts").dt.epoch("ms") >= t).then(pl.lit("buy")).otherwise(pl.col("side")),
    )
    changed = np.array(_online(candles, book2, trades2))
    closed = candles.ts_ms + MINUTE <= t
    np.testing.assert_array_equal(changed[closed], online[closed])
    assert not np.array_equal(changed[~closed], online[~closed], equal_nan=True)


def test_a_followed_source_hands_out_each_snapshot_and_trade_once_as_it_grows() -> None:
    """``FollowMarket`` (``serve --follow-every`` on a warehouse symbol): each poll reads the
    order books and trades from where the previous poll's window ended to its last new
    candle's close, so over polls that each bring some candles every snapshot and trade is
    handed out once, with the candle a one-pass replay hands it with."""
    candles, book, trades = _data(7, [10, 11, 40])
    shown = [20, 45, len(candles)]  # candles the source holds at each poll

    def read(after: int | None, up_to: int | None) -> Candles:
        held = candles.slice(0, shown[min(polls[0], len(shown) - 1)])
        keep = held.ts_ms > (after if after is not None else -1)
        idx = np.flatnonzero(keep)
        return held.slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else held.slice(0, 0)

    def side_read(lo: int, hi: int) -> Timeline:
        def within(frame: pl.DataFrame) -> pl.DataFrame:
            ms = pl.col("ts").dt.epoch("ms")
            return frame.filter((ms >= lo) & (ms < hi))

        return Timeline("A/B", within(book), within(trades))

    polls = [0]

    def sleep(_seconds: float) -> None:
        polls[0] += 1

    market = FollowMarket(read, "1m", 1.0, sleep=sleep, max_polls=3, side_read=side_read)
    followed = [(t.bars[0].ts_ms, t.side) for t in market.ticks()]
    replayed = [
        (t.bars[0].ts_ms, t.side)
        for t in ReplayMarket([candles], side={"A/B": Timeline("A/B", book, trades)}).ticks()
    ]
    assert followed == replayed
    assert sum(len(s.trades) for _, (s,) in followed) > 100
