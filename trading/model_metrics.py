"""Measures of a model's per-bar output against what the market did (``EVALUATION.md``).

* ``tradeable_returns``: the return a trade decided at the close of bar ``t`` could earn, from
  the NEXT bar's open to the open ``h`` bars after it, ``open[t+1+h] / open[t+1] - 1`` (NaN where
  the data ends first). Close-to-close returns over the same span include bid-ask bounce.
* ``spearman``: the rank correlation (average ranks for ties; flat 5m crypto bars tie often).
* ``block_bootstrap_ic``: a moving-block bootstrap CI of the IC over time. Bars whose forward
  returns overlap are not independent, so blocks are at least ``10 * h`` bars long.
* ``log_loss``, ``brier_score``, ``ece``, ``precision_recall``: against realized classes.

numpy (and scipy's rank function) only: no torch, so it runs on a serving host.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

LOG_EPS = 1e-15  # probability floor of log_loss (as models.metrics)
ECE_BINS = 10
CLASS_NAMES = ("buy", "hold", "sell")


def tradeable_returns(open_: np.ndarray, horizon_bars: int) -> np.ndarray:
    """``open[t+1+h] / open[t+1] - 1`` for every bar ``t`` (NaN for the last ``h + 1`` bars)."""
    o = np.asarray(open_, dtype=np.float64)
    out = np.full(o.size, np.nan)
    h = int(horizon_bars)
    if h < 1:
        raise ValueError(f"tradeable_returns: horizon_bars must be >= 1, got {horizon_bars}")
    if o.size > h + 1:
        out[: o.size - h - 1] = o[h + 1 :] / o[1 : o.size - h] - 1.0
    return out


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (NaN if flat)."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=-1) / den, np.nan)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of the pairs where both are finite (NaN under 3 pairs)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return math.nan
    return float(_pearson_rows(rankdata(x[ok]), rankdata(y[ok])))


def block_bootstrap_ic(
    score: np.ndarray,
    realized: np.ndarray,
    *,
    horizon_bars: int,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    block: int | None = None,
) -> tuple[float, float]:
    """Moving-block bootstrap CI of ``spearman(score, realized)``.

    The pairs where both are finite, kept in time order, are cut into blocks of
    ``max(10 * horizon_bars, 1)`` bars (``block``) whose starts are drawn uniformly; each resample
    concatenates blocks to the original length and is re-ranked. Percentiles ``(1 - level) / 2``
    and ``1 - (1 - level) / 2`` of the resampled ICs; NaN when fewer than two blocks of pairs."""
    x, y = np.asarray(score, dtype=np.float64), np.asarray(realized, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = x.size
    b = int(block or max(10 * int(horizon_bars), 1))
    if n < 2 * b:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    n_blocks = math.ceil(n / b)
    starts = rng.integers(0, n - b + 1, size=(n_boot, n_blocks))
    idx = (starts[:, :, None] + np.arange(b)[None, None, :]).reshape(n_boot, -1)[:, :n]
    ics = _pearson_rows(rankdata(x[idx], axis=1), rankdata(y[idx], axis=1))
    ics = ics[np.isfinite(ics)]
    if ics.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(ics, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def _checked(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape != (y.size, 3):
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} do not match")
    return y, p


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean ``-ln p[true class]`` (natural log, floored at ``LOG_EPS``); NaN if empty."""
    y, p = _checked(labels, probabilities)
    if y.size == 0:
        return math.nan
    return float(-np.log(np.clip(p[np.arange(y.size), y], LOG_EPS, 1.0)).mean())


def brier_score(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean over bars of ``sum_c (p_c - 1[y = c])^2``; NaN if empty."""
    y, p = _checked(labels, probabilities)
    if y.size == 0:
        return math.nan
    return float(((p - np.eye(3)[y]) ** 2).sum(axis=1).mean())


def ece(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error over ``bins`` equal-width bins of the argmax probability:
    the bar-weighted mean of ``|share correct - mean probability|`` per bin; NaN if empty."""
    y, p = _checked(labels, probabilities)
    if y.size == 0:
        return math.nan
    conf = np.clip(p.max(axis=1), 0.0, 1.0)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    gap = np.abs(
        np.bincount(which, correct, minlength=bins) - np.bincount(which, conf, minlength=bins)
    )
    return float(gap.sum() / count.sum())


def precision_recall(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    """``precision_<class>`` and ``recall_<class>`` for buy/hold/sell (None where undefined:
    a class never predicted has no precision, one never realized no recall)."""
    y = np.asarray(labels, dtype=np.int64)
    q = np.asarray(predicted, dtype=np.int64)
    cm = np.zeros((3, 3), dtype=np.int64)
    np.add.at(cm, (y, q), 1)
    out: dict[str, float | None] = {}
    for k, name in enumerate(CLASS_NAMES):
        pred_k, true_k = int(cm[:, k].sum()), int(cm[k, :].sum())
        out[f"precision_{name}"] = float(cm[k, k] / pred_k) if pred_k else None
        out[f"recall_{name}"] = float(cm[k, k] / true_k) if true_k else None
    return out
