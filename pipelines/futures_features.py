"""Perpetual-futures features, as of each bar's close: the "+ funding/basis" group (issue 15).

For a bar of the traded contract opening at ``t`` (timeframe ``tf``, so closing at
``t + tf``), only what was stamped before ``t + tf`` is used (strictly, the project's as-of
rule, as for order-book snapshots and headlines):

* ``funding_rate_last``: the last funding rate stamped before ``t + tf``;
* ``funding_rate_mean_3``: the mean of the last three such rates (null before three);
* ``basis``: the bar's close over the close of the mark-price candle of the same bar, minus 1
  (null when that mark candle is missing: no older mark price stands in for it);
* ``oi_change``: the last open interest stamped before ``t + tf`` over the one before
  it, minus 1 (a relative change per open-interest period).

:func:`futures_features` computes them in batch (polars); :class:`OnlineFuturesFeatures`
event by event, with the same arithmetic, so the two agree to 1e-9 (tested). Neither
depends on the order the events arrive in: a value stamped after a bar's close is never used
for that bar.
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from dataclasses import dataclass, field

import polars as pl

from expectations.derive import timeframe_ms

FEATURES = ("funding_rate_last", "funding_rate_mean_3", "basis", "oi_change")
_TS = pl.Datetime("ms", "UTC")


def _period_ms(timeframe: str) -> int:
    ms = timeframe_ms(timeframe)
    if ms is None:
        raise ValueError(f"unknown timeframe {timeframe!r} (like 5m, 1h, 8h, 1d)")
    return ms


def _epoch(frame: pl.DataFrame, column: str = "ts") -> pl.Expr:
    dtype = frame.schema[column]
    return (pl.col(column).dt.epoch("ms") if dtype.is_temporal() else pl.col(column)).cast(pl.Int64)


def futures_features(
    candles: pl.DataFrame,
    timeframe: str,
    *,
    funding: pl.DataFrame | None = None,
    mark: pl.DataFrame | None = None,
    open_interest: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """``ts`` and the four features for each candle (``ts``, ``close``) of one series.

    ``funding``: ``ts``, ``funding_rate``; ``mark``: ``ts``, ``close`` (mark candles of the
    same timeframe); ``open_interest``: ``ts``, ``open_interest``. ``ts`` as datetimes or
    epoch ms. A missing input gives null features."""
    step = _period_ms(timeframe)
    bars = candles.select(_epoch(candles).alias("ts"), pl.col("close").cast(pl.Float64)).sort("ts")
    # the last instant before the close: a value stamped at the close itself is not used
    bars = bars.with_columns((pl.col("ts") + step - 1).alias("_close_ts"))
    if funding is not None and funding.height:
        f = (
            funding.select(_epoch(funding).alias("_f_ts"), pl.col("funding_rate").cast(pl.Float64))
            .sort("_f_ts", maintain_order=True)
            .unique("_f_ts", keep="last", maintain_order=True)
        )
        f = f.with_columns(
            pl.col("funding_rate").alias("funding_rate_last"),
            (
                (
                    pl.col("funding_rate").shift(2)
                    + pl.col("funding_rate").shift(1)
                    + pl.col("funding_rate")
                )
                / 3.0
            ).alias("funding_rate_mean_3"),
        ).drop("funding_rate")
        bars = bars.join_asof(f, left_on="_close_ts", right_on="_f_ts", strategy="backward")
    else:
        bars = bars.with_columns(
            pl.lit(None, pl.Float64).alias("funding_rate_last"),
            pl.lit(None, pl.Float64).alias("funding_rate_mean_3"),
        )
    if mark is not None and mark.height:
        m = mark.select(_epoch(mark).alias("ts"), pl.col("close").cast(pl.Float64).alias("_mark"))
        bars = bars.join(m.unique("ts", keep="last"), on="ts", how="left")
        bars = bars.with_columns((pl.col("close") / pl.col("_mark") - 1.0).alias("basis"))
    else:
        bars = bars.with_columns(pl.lit(None, pl.Float64).alias("basis"))
    if open_interest is not None and open_interest.height:
        oi = (
            open_interest.select(
                _epoch(open_interest).alias("_oi_ts"), pl.col("open_interest").cast(pl.Float64)
            )
            .sort("_oi_ts", maintain_order=True)
            .unique("_oi_ts", keep="last", maintain_order=True)
        )
        oi = oi.with_columns(
            (pl.col("open_interest") / pl.col("open_interest").shift(1) - 1.0).alias("oi_change")
        ).drop("open_interest")
        bars = bars.join_asof(oi, left_on="_close_ts", right_on="_oi_ts", strategy="backward")
    else:
        bars = bars.with_columns(pl.lit(None, pl.Float64).alias("oi_change"))
    return bars.select(pl.col("ts").cast(_TS), *FEATURES)


@dataclass
class OnlineFuturesFeatures:
    """The same features event by event: feed funding rates, mark candles and open interest
    as they come (any order), then ``on_candle`` for each closed bar of the traded contract."""

    timeframe: str
    keep: int = 64  # values kept per input below the newest bar's close
    _funding: list[tuple[int, float]] = field(default_factory=list)
    _oi: list[tuple[int, float]] = field(default_factory=list)
    _mark: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._step = _period_ms(self.timeframe)

    def on_funding(self, ts_ms: int, rate: float) -> None:
        _put(self._funding, ts_ms, rate)

    def on_open_interest(self, ts_ms: int, open_interest: float) -> None:
        _put(self._oi, ts_ms, open_interest)

    def on_mark(self, ts_ms: int, close: float) -> None:
        self._mark[ts_ms] = close

    def on_candle(self, ts_ms: int, close: float) -> dict[str, float | None]:
        """The features of the bar opening at ``ts_ms`` (closed), with its ``close``."""
        close_ts = ts_ms + self._step - 1  # the last instant before the close
        n = bisect_right(self._funding, (close_ts, math.inf))
        rates = [r for _, r in self._funding[max(0, n - 3) : n]]
        k = bisect_right(self._oi, (close_ts, math.inf))
        mark = self._mark.get(ts_ms)
        out: dict[str, float | None] = {
            "funding_rate_last": rates[-1] if rates else None,
            "funding_rate_mean_3": (rates[0] + rates[1] + rates[2]) / 3.0
            if len(rates) == 3
            else None,
            "basis": close / mark - 1.0 if mark is not None else None,
            "oi_change": self._oi[k - 1][1] / self._oi[k - 2][1] - 1.0 if k >= 2 else None,
        }
        # bounded memory: drop what no later bar can use
        del self._funding[: max(0, n - self.keep)]
        del self._oi[: max(0, k - self.keep)]
        if len(self._mark) > 2 * self.keep:
            for t in [t for t in self._mark if t < ts_ms - self.keep * self._step]:
                del self._mark[t]
        return out


def _put(values: list[tuple[int, float]], ts_ms: int, value: float) -> None:
    """Insert in time order; a second value at the same time replaces the first (as the
    batch path's ``unique(keep='last')`` on rows in arrival order)."""
    i = bisect_right(values, (ts_ms, -math.inf))
    if i < len(values) and values[i][0] == ts_ms:
        values[i] = (ts_ms, value)
    else:
        insort(values, (ts_ms, value))
