"""Labels, model input windows and time-ordered splits for training the signal models.

Two label rules (per symbol and timeframe, rows sorted by candle open time ``ts``), both with

* recent volatility ``vol_t``: the standard deviation of the one-bar log returns of the last
  ``vol_window_bars`` bars up to and including ``t`` (nothing after ``t``);
* threshold: ``thr_t = max(threshold_scale * vol_t * sqrt(h), min_threshold_fraction,
  round_trip_cost_fraction)``: the move that is large for the current regime (a calm market gets
  a small threshold, a wild one a large), and never smaller than what a round trip costs, so a
  ``buy`` label is a move a trade could have earned after fees.

``method="threshold"`` (default): the forward return over ``h`` bars,
``r_t = close[t+h] / close[t] - 1`` (the ``h`` rows that follow ``t``); ``buy`` (0) when
``r_t > thr_t``, ``sell`` (2) when ``r_t < -thr_t``, else ``hold`` (1).

``method="triple_barrier"``: the close path ``close[t+k] / close[t] - 1`` for ``k = 1..h`` is
watched against an upper barrier ``max(take_profit_vol * vol_t * sqrt(h), cost)`` and a lower
barrier ``-max(stop_loss_vol * vol_t * sqrt(h), cost)`` (barriers in units of the horizon's
recent volatility); the first one touched decides ``buy`` or ``sell``; neither by ``t+h`` (the
time barrier) is ``hold``.

Every row also carries the TRADEABLE forward return ``open[t+1+h] / open[t+1] - 1`` (entry at the
next bar's open, exit ``h`` bars later; null without an ``open`` column or past the data): a
label-side quantity for evaluation and for the per-class expected returns, never a feature.

Rows whose volatility window is incomplete or whose horizon runs past the data have a null
label. Class order everywhere is ``[buy, hold, sell]``.

Splits are contiguous in time (train, validation, test), never shuffled, with a purge gap of
``h`` timestamps between parts, so no training label looks into the validation or test period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

CLASSES: tuple[str, str, str] = ("buy", "hold", "sell")
BUY, HOLD, SELL = 0, 1, 2

LabelMethod = Literal["threshold", "triple_barrier"]


def round_trip_cost(
    taker_fee: float, slippage_fraction: float = 0.0, half_spread_fraction: float = 0.0
) -> float:
    """What a position costs in and out, as a fraction: ``2 * (fee + slippage + half spread)``."""
    return 2.0 * (taker_fee + slippage_fraction + half_spread_fraction)


@dataclass(frozen=True)
class LabelConfig:
    horizon_bars: int = 5
    vol_window_bars: int = 60
    threshold_scale: float = 0.5
    min_threshold_fraction: float = 0.0
    round_trip_cost_fraction: float = 0.0
    method: LabelMethod = "threshold"
    take_profit_vol: float = 1.0  # triple barrier: upper barrier in units of vol_t * sqrt(h)
    stop_loss_vol: float = 1.0  # triple barrier: lower barrier in the same units

    def __post_init__(self) -> None:
        if self.horizon_bars < 1:
            raise ValueError(f"horizon_bars must be >= 1, got {self.horizon_bars}")
        if self.vol_window_bars < 2:
            raise ValueError(f"vol_window_bars must be >= 2, got {self.vol_window_bars}")
        if self.threshold_scale <= 0:
            raise ValueError(f"threshold_scale must be > 0, got {self.threshold_scale}")
        if self.min_threshold_fraction < 0 or self.round_trip_cost_fraction < 0:
            raise ValueError("min_threshold_fraction and round_trip_cost_fraction must be >= 0")
        if self.method not in ("threshold", "triple_barrier"):
            raise ValueError(f"unknown label method {self.method!r}")
        if self.take_profit_vol <= 0 or self.stop_loss_vol <= 0:
            raise ValueError("take_profit_vol and stop_loss_vol must be > 0")

    @property
    def floor_fraction(self) -> float:
        """The smallest threshold/barrier any row gets (at least the round-trip cost)."""
        return max(self.min_threshold_fraction, self.round_trip_cost_fraction)


def make_labels(candles: pl.DataFrame, config: LabelConfig) -> pl.DataFrame:
    """Label every candle of ONE symbol/timeframe: ts, forward_return, tradeable_return,
    threshold_fraction, label.

    ``candles`` needs ``ts`` and ``close`` (``open`` for ``tradeable_return``); it is sorted by
    ``ts`` here. ``label`` is Int8 (0 buy, 1 hold, 2 sell) and null where it cannot be computed.
    ``threshold_fraction`` is the threshold (method ``threshold``) or the upper barrier
    (``triple_barrier``).
    """
    for column in ("ts", "close"):
        if column not in candles.columns:
            raise ValueError(f"make_labels: candles frame lacks column {column!r}")
    for column in ("symbol", "timeframe"):
        if column in candles.columns and candles[column].n_unique() > 1:
            raise ValueError(
                f"make_labels: one {column} at a time, got {candles[column].unique().to_list()}"
            )
    h = config.horizon_bars
    opens = pl.col("open").cast(pl.Float64) if "open" in candles.columns else pl.lit(None)
    frame = candles.select("ts", pl.col("close").cast(pl.Float64), opens.alias("open")).sort("ts")
    log_return = (pl.col("close") / pl.col("close").shift(1)).log()
    horizon_vol = pl.col("vol") * math.sqrt(h)
    floor = pl.lit(config.floor_fraction)
    frame = frame.with_columns(
        forward_return=pl.col("close").shift(-h) / pl.col("close") - 1.0,
        tradeable_return=(pl.col("open").shift(-(h + 1)) / pl.col("open").shift(-1) - 1.0).cast(
            pl.Float64
        ),
        vol=log_return.rolling_std(window_size=config.vol_window_bars),
    ).with_columns(
        threshold_fraction=pl.max_horizontal(horizon_vol * config.threshold_scale, floor).fill_nan(
            None
        ),
        upper=pl.max_horizontal(horizon_vol * config.take_profit_vol, floor).fill_nan(None),
        lower=pl.max_horizontal(horizon_vol * config.stop_loss_vol, floor).fill_nan(None),
    )
    if config.method == "triple_barrier":
        frame = frame.with_columns(
            threshold_fraction=pl.col("upper"),
            label=_triple_barrier(
                frame["close"].to_numpy(), frame["upper"].to_numpy(), frame["lower"].to_numpy(), h
            ),
        )
    else:
        frame = frame.with_columns(
            label=pl.when(
                pl.col("forward_return").is_null() | pl.col("threshold_fraction").is_null()
            )
            .then(None)
            .when(pl.col("forward_return") > pl.col("threshold_fraction"))
            .then(BUY)
            .when(pl.col("forward_return") < -pl.col("threshold_fraction"))
            .then(SELL)
            .otherwise(HOLD)
        )
    # A vol window containing a non-positive close gives NaN: no label then.
    valid_vol = pl.col("vol").is_not_null() & pl.col("vol").is_not_nan()
    return frame.with_columns(
        label=pl.when(valid_vol).then(pl.col("label")).otherwise(None).cast(pl.Int8)
    ).select("ts", "forward_return", "tradeable_return", "threshold_fraction", "label")


def _triple_barrier(close: np.ndarray, upper: np.ndarray, lower: np.ndarray, h: int) -> pl.Series:
    """First barrier touched by ``close[t+k]/close[t]-1``, k = 1..h (see the module docstring).

    Null where the barriers are unknown (NaN) or the horizon runs past the data. A path that
    touches both barriers at the same bar (possible only when a barrier is 0) counts as hold.
    """
    n = close.size
    upper = np.where(np.isfinite(upper), upper, np.nan)
    lower = np.where(np.isfinite(lower), lower, np.nan)
    first_up = np.full(n, h + 1, dtype=np.int64)
    first_down = np.full(n, h + 1, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(h, 0, -1):  # descending, so the smallest k that touches is kept
            path = np.full(n, np.nan)
            path[: n - k] = close[k:] / close[: n - k] - 1.0
            first_up[path >= upper] = k
            first_down[path <= -lower] = k
    label = np.full(n, HOLD, dtype=np.float64)
    label[first_up < first_down] = BUY
    label[first_down < first_up] = SELL
    unknown = np.isnan(upper) | np.isnan(lower) | (np.arange(n) + h >= n)
    label[unknown] = np.nan
    return pl.Series("label", label, dtype=pl.Float64, nan_to_null=True).cast(pl.Int8)


def class_weights(labels: np.ndarray, n_classes: int = 3) -> np.ndarray:
    """Balanced class weights ``n / (k * count_c)`` (a class absent from ``labels`` gets 0)."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes, dtype=np.float64)
    weights[present] = labels.size / (present.sum() * counts[present])
    return weights.astype(np.float32)


def make_windows(values: np.ndarray, window_len: int) -> np.ndarray:
    """All windows of ``window_len`` consecutive rows: (n - window_len + 1, window_len, n_features).

    Window ``i`` ends at row ``i + window_len - 1`` and holds rows up to that one only.
    """
    if values.ndim != 2:
        raise ValueError(
            f"make_windows: expected a 2-D (rows, features) array, got shape {values.shape}"
        )
    if window_len < 1:
        raise ValueError(f"make_windows: window_len must be >= 1, got {window_len}")
    if values.shape[0] < window_len:
        return np.empty((0, window_len, values.shape[1]), dtype=values.dtype)
    view = np.lib.stride_tricks.sliding_window_view(values, window_len, axis=0)
    return np.ascontiguousarray(view.transpose(0, 2, 1))


@dataclass(frozen=True)
class Splits:
    """Sample indices of each part, in time order."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def time_splits(
    ts: np.ndarray,
    *,
    purge_bars: int,
    validation_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> Splits:
    """Split samples by their (end) timestamps into train / validation / test.

    Works on the sorted distinct timestamps (several symbols can share one), so all samples of
    one timestamp fall in the same part. ``purge_bars`` distinct timestamps are dropped between
    train and validation and between validation and test.
    """
    if purge_bars < 0:
        raise ValueError(f"purge_bars must be >= 0, got {purge_bars}")
    if not (0 < validation_fraction < 1 and 0 < test_fraction < 1):
        raise ValueError("validation_fraction and test_fraction must be in (0, 1)")
    ts = np.asarray(ts)
    distinct, position = np.unique(ts, return_inverse=True)
    n = distinct.size
    usable = n - 2 * purge_bars
    n_test = int(round(usable * test_fraction))
    n_val = int(round(usable * validation_fraction))
    n_train = usable - n_test - n_val
    if n_train < 1 or n_val < 1 or n_test < 1:
        raise ValueError(
            f"time_splits: {n} distinct timestamps are too few for a purge gap of {purge_bars} "
            f"and validation/test fractions {validation_fraction}/{test_fraction}"
        )
    val_start = n_train + purge_bars
    test_start = val_start + n_val + purge_bars
    order = np.argsort(position, kind="stable")
    sorted_pos = position[order]
    return Splits(
        train=order[sorted_pos < n_train],
        validation=order[(sorted_pos >= val_start) & (sorted_pos < val_start + n_val)],
        test=order[sorted_pos >= test_start],
    )
