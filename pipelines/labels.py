"""Labels, model input windows and time-ordered splits for training the signal models.

Label rule (per symbol and timeframe, rows sorted by candle open time ``ts``):

* forward return over ``h`` bars: ``r_t = close[t+h] / close[t] - 1`` (the ``h`` rows that
  follow ``t``; a label uses only data after ``t``, features only data up to the close of ``t``);
* recent volatility: the standard deviation of the one-bar log returns of the last
  ``vol_window_bars`` bars up to and including ``t`` (nothing after ``t``);
* threshold: ``thr_t = max(threshold_scale * vol_t * sqrt(h), min_threshold_fraction)``, the move
  that is large for the current regime (a calm market gets a small threshold, a wild one a large);
* class: ``buy`` (0) when ``r_t > thr_t``, ``sell`` (2) when ``r_t < -thr_t``, else ``hold`` (1).

Rows whose volatility window is incomplete or whose horizon runs past the data have a null
label. Class order everywhere is ``[buy, hold, sell]``.

Splits are contiguous in time (train, validation, test), never shuffled, with a purge gap of
``h`` timestamps between parts, so no training label looks into the validation or test period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

CLASSES: tuple[str, str, str] = ("buy", "hold", "sell")
BUY, HOLD, SELL = 0, 1, 2


@dataclass(frozen=True)
class LabelConfig:
    horizon_bars: int = 5
    vol_window_bars: int = 60
    threshold_scale: float = 0.5
    min_threshold_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.horizon_bars < 1:
            raise ValueError(f"horizon_bars must be >= 1, got {self.horizon_bars}")
        if self.vol_window_bars < 2:
            raise ValueError(f"vol_window_bars must be >= 2, got {self.vol_window_bars}")
        if self.threshold_scale <= 0:
            raise ValueError(f"threshold_scale must be > 0, got {self.threshold_scale}")


def make_labels(candles: pl.DataFrame, config: LabelConfig) -> pl.DataFrame:
    """Label every candle of ONE symbol/timeframe: ts, forward_return, threshold_fraction, label.

    ``candles`` needs ``ts`` and ``close``; it is sorted by ``ts`` here. ``label`` is Int8 (0 buy,
    1 hold, 2 sell) and null where it cannot be computed.
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
    frame = candles.select("ts", pl.col("close").cast(pl.Float64)).sort("ts")
    log_return = (pl.col("close") / pl.col("close").shift(1)).log()
    frame = frame.with_columns(
        forward_return=pl.col("close").shift(-h) / pl.col("close") - 1.0,
        vol=log_return.rolling_std(window_size=config.vol_window_bars),
    ).with_columns(
        threshold_fraction=pl.max_horizontal(
            pl.col("vol") * (config.threshold_scale * math.sqrt(h)),
            pl.lit(config.min_threshold_fraction),
        ).fill_nan(None)
    )
    label = (
        pl.when(pl.col("forward_return").is_null() | pl.col("threshold_fraction").is_null())
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
        label=pl.when(valid_vol).then(label).otherwise(None).cast(pl.Int8)
    ).select("ts", "forward_return", "threshold_fraction", "label")


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
