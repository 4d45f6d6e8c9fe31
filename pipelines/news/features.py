"""News features as-of each bar's close, per symbol and for the market, batch and online.

For each window (1 h and 24 h by default) the mean score and the item count, and a decayed
score: the sum of the scores, each weighted ``0.5 ** (age / half_life)`` (``half_life_ms``,
6 h by default), over every item so far. Per-symbol features (``news_*``) use the items tagged
with the pair's base asset (``ETH/BTC`` -> ``ETH``); market features (``market_news_*``) use
every scored item, tagged or not.

Availability (no look-ahead): the bar opened at ``t`` closes at ``close = t + timeframe``; an
item published at ``ts`` counts for it only when ``ts < close`` (strictly before, the rule the
order-book and trade features follow), and a window of length ``W`` holds the items with
``close - W <= ts < close``. So an item published at ``T`` changes no bar whose close is
``<= T``. A window with no item has a null mean and a count of 0; the decayed score is 0.0
before the first item.

``news_features`` (batch: a candle frame in, the same frame with the news columns out) and
``OnlineNewsFeatures`` (one symbol, fed items and bar closes as they come) agree to 1e-9.
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from pipelines.news.terms import asset_of
from pipelines.resample import timeframe_ms

HOUR_MS = 3_600_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
SYMBOL_PREFIX = "news_"
MARKET_PREFIX = "market_news_"


@dataclass(frozen=True)
class NewsFeatureSpec:
    windows: tuple[tuple[str, int], ...] = (("1h", HOUR_MS), ("24h", 24 * HOUR_MS))
    half_life_ms: int = 6 * HOUR_MS

    def names(self, prefix: str) -> list[str]:
        out = []
        for name, _ in self.windows:
            out += [f"{prefix}mean_{name}", f"{prefix}count_{name}"]
        return [*out, f"{prefix}decayed"]

    @property
    def columns(self) -> list[str]:
        """Every news feature column, per symbol then market."""
        return self.names(SYMBOL_PREFIX) + self.names(MARKET_PREFIX)


DEFAULT_SPEC = NewsFeatureSpec()
NEWS_FEATURE_COLUMNS = DEFAULT_SPEC.columns


def _ms(ts: Any) -> int:
    if isinstance(ts, dt.datetime):
        if ts.tzinfo is None:
            raise ValueError(f"news features: time {ts} is naive; pass tz-aware UTC")
        return (ts - _EPOCH) // dt.timedelta(milliseconds=1)
    return int(ts)


# ---------------------------------------------------------------------------------- batch
def _block_decay(
    close: np.ndarray, item_ts: np.ndarray, scores: np.ndarray, h: float
) -> np.ndarray:
    """sum(score * 2 ** -((close - ts) / h) for ts < close) for each close, computed per block
    of closes within 32 half-lives of the block's anchor, as 2 ** -((close - a) / h) times a
    prefix sum of score * 2 ** ((ts - a) / h) (no overflow, no subtraction of large sums)."""
    out = np.zeros(close.size)
    if not item_ts.size or not close.size:
        return out
    order = np.argsort(close, kind="stable")
    sorted_close = close[order]
    hi = np.searchsorted(item_ts, sorted_close, side="left")
    start = 0
    with np.errstate(under="ignore"):
        while start < sorted_close.size:
            anchor = sorted_close[start]
            end = int(np.searchsorted(sorted_close, anchor + 32 * h, side="left"))
            end = max(end, start + 1)
            block = slice(start, end)
            # items older than 1080 half-lives weigh exactly 0.0 (below the smallest double)
            first = int(np.searchsorted(item_ts, anchor - 1080 * h, side="left"))
            last = int(hi[end - 1])  # the block's last close sees the most items
            part = slice(first, max(first, last))
            weighted = np.r_[0.0, np.cumsum(scores[part] * np.exp2((item_ts[part] - anchor) / h))]
            seen = np.maximum(hi[block] - first, 0)
            out[order[block]] = np.exp2(-(sorted_close[block] - anchor) / h) * weighted[seen]
            start = end
    return out


def _features_of(
    close: np.ndarray, item_ts: np.ndarray, scores: np.ndarray, spec: NewsFeatureSpec, prefix: str
) -> dict[str, pl.Series]:
    """Features at each close from items sorted by ``item_ts``."""
    cols: dict[str, pl.Series] = {}
    hi = np.searchsorted(item_ts, close, side="left")  # items with ts < close
    padded = np.r_[scores, 0.0]
    for name, width in spec.windows:
        lo = np.searchsorted(item_ts, close - width, side="left")  # ts >= close - width
        count = hi - lo
        if padded.size > 1 and close.size:
            sums = np.add.reduceat(padded, np.column_stack([lo, hi]).ravel())[::2]
        else:
            sums = np.zeros(close.size)
        mean = np.where(count > 0, sums / np.maximum(count, 1), np.nan)
        cols[f"{prefix}mean_{name}"] = pl.Series(mean).fill_nan(None)
        cols[f"{prefix}count_{name}"] = pl.Series(count.astype(np.int64))
    cols[f"{prefix}decayed"] = pl.Series(
        _block_decay(
            close.astype(np.float64), item_ts.astype(np.float64), scores, spec.half_life_ms
        )
    )
    return cols


def _sorted_items(news: pl.DataFrame, asset: str | None) -> tuple[np.ndarray, np.ndarray]:
    frame = news.filter(pl.col("score").is_not_null())
    if asset is not None:
        frame = frame.filter(pl.col("symbols").list.contains(asset))
    frame = frame.sort("_ts_ms", "score")  # one order for equal times: the same sums
    return frame["_ts_ms"].to_numpy().astype(np.int64), frame["score"].to_numpy().astype(float)


def news_features(
    candles: pl.DataFrame, news: pl.DataFrame, *, spec: NewsFeatureSpec = DEFAULT_SPEC
) -> pl.DataFrame:
    """``candles`` (columns ``symbol``, ``timeframe``, ``ts`` = open time, UTC; any others are
    kept) with the news feature columns added, rows in their order. ``news`` has ``ts``,
    ``score`` (rows with a null score are left out) and ``symbols`` (assets, list of str), e.g.
    ``pl.from_arrow(read_news(con, scored_only=True))``."""
    news = news.select(
        pl.col("ts").dt.epoch("ms").alias("_ts_ms"),
        pl.col("score").cast(pl.Float64),
        pl.col("symbols").cast(pl.List(pl.String)),
    )
    steps = {tf: timeframe_ms(tf) for tf in candles["timeframe"].unique().to_list()}
    close = (
        candles["ts"].dt.epoch("ms").to_numpy().astype(np.int64)
        + candles["timeframe"].replace_strict(steps, return_dtype=pl.Int64).to_numpy()
    )
    columns: dict[str, pl.Series] = {
        name: pl.Series(name, [None] * candles.height, dtype)
        for name, dtype in ((c, _dtype(c)) for c in spec.names(SYMBOL_PREFIX))
    }
    bases = {s: asset_of(s) for s in candles["symbol"].unique().to_list()}
    assets = candles["symbol"].replace_strict(bases, return_dtype=pl.String).to_numpy()
    for asset in np.unique(assets):
        rows = np.flatnonzero(assets == asset)
        item_ts, scores = _sorted_items(news, str(asset))
        for name, values in _features_of(close[rows], item_ts, scores, spec, SYMBOL_PREFIX).items():
            columns[name] = columns[name].scatter(rows, values)
    item_ts, scores = _sorted_items(news, None)
    market = _features_of(close, item_ts, scores, spec, MARKET_PREFIX)
    return candles.with_columns(
        *[s.alias(n) for n, s in columns.items()], *[s.alias(n) for n, s in market.items()]
    )


def _dtype(column: str) -> type[pl.DataType]:
    return pl.Int64 if "_count_" in column else pl.Float64


# ---------------------------------------------------------------------------------- online
class _Stream:
    """One stream's windows and decayed score, updated per item and per close."""

    def __init__(self, spec: NewsFeatureSpec, prefix: str) -> None:
        self.spec, self.prefix = spec, prefix
        # items not yet before a close: a heap by time, so a close takes only those due (items
        # fed far ahead, as a replay does, cost nothing per close)
        self._pending: list[tuple[int, float]] = []
        self._ts: list[int] = []  # folded items, by time
        self._scores: list[float] = []
        self._lo = [0] * len(spec.windows)
        self._sum = [0.0] * len(spec.windows)
        self._decayed = 0.0
        self._at: int | None = None  # the close the decayed score refers to

    def add(self, ts_ms: int, score: float) -> None:
        heapq.heappush(self._pending, (ts_ms, score))

    def _fold(self, ts_ms: int, score: float, close: int) -> None:
        pos = bisect_right(self._ts, ts_ms)
        self._ts.insert(pos, ts_ms)
        self._scores.insert(pos, score)
        for k in range(len(self._lo)):
            if pos < self._lo[k]:
                self._lo[k] += 1  # older than this window's start already: not in it
            else:
                self._sum[k] += score
        self._decayed += score * 2.0 ** (-(close - ts_ms) / self.spec.half_life_ms)

    def at_close(self, close: int) -> dict[str, float | int | None]:
        if self._at is not None:
            self._decayed *= 2.0 ** (-(close - self._at) / self.spec.half_life_ms)
        self._at = close
        pending = self._pending
        while pending and pending[0][0] < close:  # in (time, score) order, as before
            ts_ms, score = heapq.heappop(pending)
            self._fold(ts_ms, score, close)
        out: dict[str, float | int | None] = {}
        for k, (name, width) in enumerate(self.spec.windows):
            while self._lo[k] < len(self._ts) and self._ts[self._lo[k]] < close - width:
                self._sum[k] -= self._scores[self._lo[k]]
                self._lo[k] += 1
            count = len(self._ts) - self._lo[k]
            if count == 0:
                self._sum[k] = 0.0  # no rounding left over from the items that went
            out[f"{self.prefix}mean_{name}"] = self._sum[k] / count if count else None
            out[f"{self.prefix}count_{name}"] = count
        out[f"{self.prefix}decayed"] = self._decayed
        drop = min(self._lo)
        if drop > 1024:
            del self._ts[:drop], self._scores[:drop]
            self._lo = [lo - drop for lo in self._lo]
        return out


class OnlineNewsFeatures:
    """The news features of one symbol, online: ``on_news`` for each scored item as it arrives
    (any order), ``at_close`` for each bar as it closes (closes in time order), which returns
    the same values ``news_features`` gives that bar."""

    def __init__(self, symbol: str, *, spec: NewsFeatureSpec = DEFAULT_SPEC) -> None:
        self.asset = asset_of(symbol)
        self._symbol = _Stream(spec, SYMBOL_PREFIX)
        self._market = _Stream(spec, MARKET_PREFIX)
        self._last_close: int | None = None

    def on_news(
        self, ts: dt.datetime | int, score: float, symbols: tuple[str, ...] | list[str]
    ) -> None:
        if not math.isfinite(score):
            raise ValueError(f"news features: score {score!r} at {ts} is not a number")
        ts_ms = _ms(ts)
        self._market.add(ts_ms, float(score))
        if self.asset in symbols:
            self._symbol.add(ts_ms, float(score))

    def at_close(self, close: dt.datetime | int) -> dict[str, float | int | None]:
        close_ms = _ms(close)
        if self._last_close is not None and close_ms < self._last_close:
            raise ValueError(
                f"news features of {self.asset}: close {close} is before the last one "
                f"({self._last_close} ms); closes must come in time order"
            )
        self._last_close = close_ms
        return self._symbol.at_close(close_ms) | self._market.at_close(close_ms)
