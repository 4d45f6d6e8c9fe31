"""Classification and calibration metrics for the signal models (numpy and scipy, no torch: usable
from serving and trading code too).

Everything is computed on held-out samples and reported beside the majority-class baseline
(always predicting the most frequent TRAINING class), so a model that only learned the class
balance is visible as such. Probability metrics (``../shared/EVALUATION.md``):

* ``log_loss``: mean ``-ln p[true class]`` (natural log, probabilities clipped at ``LOG_EPS``);
* ``brier_score``: mean over samples of ``sum_c (p_c - 1[y = c])^2`` (0 perfect, 2 worst);
* ``ece``: expected calibration error over 10 equal-width bins of the predicted (argmax) class's
  probability: the sample-weighted mean ``|accuracy - mean probability|`` per bin;
* ``reliability_bins``: the same bins as plain numbers, to draw a reliability diagram;
* baselines: the majority class of the training labels as a one-hot prediction (its log-loss is
  huge: every miss costs ``-ln LOG_EPS``), and the training-set class frequencies as the
  prediction for every bar (the meaningful "knows only the class balance" reference).

Ranking measures (the model's score against what a trade could have earned):

* ``tradeable_returns``: the return a trade decided at the close of bar ``t`` could earn, from
  the NEXT bar's open to the open ``h`` bars after it, ``open[t+1+h] / open[t+1] - 1`` (NaN where
  the data ends first). Close-to-close returns over the same span include bid-ask bounce.
* ``spearman``: the rank correlation (average ranks for ties; flat 5m crypto bars tie often).
* ``block_bootstrap_ic``: a moving-block bootstrap CI of the IC over time. Bars whose forward
  returns overlap are not independent, so blocks are at least ``10 * h`` bars long.
* ``window_scores``: what the promotion rule compares on one out-of-sample window (IC of
  ``p_buy - p_sell`` with its CI, log-loss beside the training-frequency baseline, Brier, ECE).

Feature selection (``grouped_permutation_importance``, ``select_families``): the increase of the
validation log-loss when one feature family is shuffled, with a block-bootstrap CI, and the
documented rule that keeps families by it (docs/models.md, "Feature selection").

numpy and scipy's rank function only: no torch, so it runs on a serving host (``trading`` re-exports
the ranking measures from here).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from pipelines.labels import CLASSES

LOG_EPS = 1e-15  # probability floor of log_loss (sklearn's historical default)
ECE_BINS = 10


def _check(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} do not match")
    return y, p


def log_loss(labels: np.ndarray, probabilities: np.ndarray, eps: float = LOG_EPS) -> float:
    """Mean negative natural log of the probability given to the true class (NaN if empty)."""
    y, p = _check(labels, probabilities)
    if y.size == 0:
        return float("nan")
    return float(-np.log(np.clip(p[np.arange(y.size), y], eps, 1.0)).mean())


def brier_score(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Multi-class Brier score: mean of ``sum_c (p_c - onehot_c)^2`` (NaN if empty)."""
    y, p = _check(labels, probabilities)
    if y.size == 0:
        return float("nan")
    onehot = np.eye(p.shape[1])[y]
    return float(((p - onehot) ** 2).sum(axis=1).mean())


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width bins of the predicted class's probability (a reliability diagram's data).

    Bin ``b`` covers ``[edges[b], edges[b+1])`` (the last one includes 1.0); an empty bin has
    ``count`` 0 and None for its means."""

    edges: tuple[float, ...]
    mean_confidence: tuple[float | None, ...]
    accuracy: tuple[float | None, ...]
    count: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reliability_bins(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS
) -> ReliabilityBins:
    """Per bin of the argmax probability: its mean, the share of argmax == label, the count."""
    y, p = _check(labels, probabilities)
    confidence = np.clip(p.max(axis=1), 0.0, 1.0) if y.size else np.empty(0)
    correct = (p.argmax(axis=1) == y) if y.size else np.empty(0, dtype=bool)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    means: list[float | None] = []
    accuracy: list[float | None] = []
    counts: list[int] = []
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        counts.append(n)
        means.append(float(confidence[mask].mean()) if n else None)
        accuracy.append(float(correct[mask].mean()) if n else None)
    edges = tuple(float(e) for e in np.linspace(0.0, 1.0, bins + 1))
    return ReliabilityBins(edges, tuple(means), tuple(accuracy), tuple(counts))


def ece(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the argmax class's probability (``bins`` equal-width bins);
    NaN if there are no samples."""
    y, p = _check(labels, probabilities)
    if y.size == 0:
        return float("nan")
    return expected_calibration_error(p.max(axis=1), p.argmax(axis=1) == y, bins)


def class_frequencies(labels: np.ndarray, n_classes: int = 3) -> np.ndarray:
    """Share of each class in ``labels`` (the "training frequency" predictor)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    return counts / max(1, counts.sum())


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


def _rankdata(values: np.ndarray, axis: int = 0) -> np.ndarray:
    # scipy is imported on first use, not with the module: importing scipy.stats probes for
    # torch (its array-API shim), and the serving path's no-torch guard (torch set to None in
    # sys.modules) breaks that probe; the classification metrics need no scipy at all
    from scipy.stats import rankdata

    return np.asarray(rankdata(values, axis=axis))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of the pairs where both are finite (NaN under 3 pairs)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return math.nan
    return float(_pearson_rows(_rankdata(x[ok]), _rankdata(y[ok])))


def block_resamples(n: int, block: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) indices of moving-block resamples: blocks of ``block`` consecutive
    positions with uniformly drawn starts, concatenated to length ``n``."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n - block + 1, size=(n_boot, math.ceil(n / block)))
    return (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(n_boot, -1)[:, :n]


def _block_ics(
    scores: tuple[np.ndarray, ...],
    realized: np.ndarray,
    *,
    block: int,
    n_boot: int,
    seed: int,
) -> list[np.ndarray] | None:
    """Per score, the Spearman ICs against ``realized`` of the same ``n_boot`` moving-block
    resamples of the bars where every array is finite (in time order); None when fewer than
    two blocks of such bars."""
    y = np.asarray(realized, dtype=np.float64)
    xs = [np.asarray(x, dtype=np.float64) for x in scores]
    ok = np.isfinite(y)
    for x in xs:
        ok &= np.isfinite(x)
    n = int(ok.sum())
    if n < 2 * block:
        return None
    idx = block_resamples(n, block, n_boot, seed)
    ranked_y = _rankdata(y[ok][idx], axis=1)
    return [_pearson_rows(_rankdata(x[ok][idx], axis=1), ranked_y) for x in xs]


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


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
    b = int(block or max(10 * int(horizon_bars), 1))
    ics = _block_ics((score,), realized, block=b, n_boot=n_boot, seed=seed)
    return (math.nan, math.nan) if ics is None else _percentiles(ics[0], level)


def block_bootstrap_ic_difference(
    score: np.ndarray,
    other: np.ndarray,
    realized: np.ndarray,
    *,
    horizon_bars: int,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Moving-block bootstrap CI of ``spearman(score, realized) - spearman(other, realized)``:
    two scores of the SAME bars (in time order), each resample drawing the same blocks for
    both (a paired difference; blocks as in ``block_bootstrap_ic``). NaN when fewer than two
    blocks of bars where all three are finite."""
    b = max(10 * int(horizon_bars), 1)
    ics = _block_ics((score, other), realized, block=b, n_boot=n_boot, seed=seed)
    return (math.nan, math.nan) if ics is None else _percentiles(ics[0] - ics[1], level)


# The figures the promotion rule reads from a window (``window_scores``), stored per model.
WINDOW_SCORES = (
    "ic",
    "ic_ci_low",
    "ic_ci_high",
    "log_loss",
    "log_loss_train_frequency",
    "ece",
    "brier",
)


def window_scores(
    labels: np.ndarray,
    probabilities: np.ndarray,
    realized: np.ndarray,
    train_labels: np.ndarray,
    *,
    horizon_bars: int,
    order: np.ndarray | None = None,
    n_boot: int = 1000,
) -> dict[str, float]:
    """A model's figures on one out-of-sample window (``WINDOW_SCORES`` and ``ic_pairs``).

    * ``ic``: Spearman of the score ``p_buy - p_sell`` against ``realized`` (the tradeable
      return of each bar), with ``ic_ci_low``/``ic_ci_high`` from ``block_bootstrap_ic``. The
      bootstrap needs the bars in time order: ``order`` (e.g. ``np.lexsort((ts, symbol))``, one
      symbol after the other) puts them so; None keeps the given order.
    * ``log_loss`` beside ``log_loss_train_frequency``: the training-set class frequencies
      predicted for every bar (what a model that only learned the class balance scores);
      ``ece`` and ``brier`` of the same probabilities.
    """
    y, p = _check(labels, probabilities)
    r = np.asarray(realized, dtype=np.float64)
    if order is not None:
        y, p, r = y[order], p[order], r[order]
    score = p[:, 0] - p[:, 2]
    lo, hi = block_bootstrap_ic(score, r, horizon_bars=horizon_bars, n_boot=n_boot)
    frequencies = np.tile(class_frequencies(train_labels), (y.size, 1))
    return {
        "ic": spearman(score, r),
        "ic_ci_low": lo,
        "ic_ci_high": hi,
        "ic_pairs": float((np.isfinite(score) & np.isfinite(r)).sum()),
        "log_loss": log_loss(y, p),
        "log_loss_train_frequency": log_loss(y, frequencies),
        "ece": ece(y, p),
        "brier": brier_score(y, p),
    }


@dataclass(frozen=True)
class CalibrationReport:
    """Probability quality on one window, before and after the calibration step, beside the
    baselines (majority class one-hot, training class frequencies)."""

    samples: int
    log_loss_before: float
    log_loss_after: float
    brier_before: float
    brier_after: float
    ece_before: float
    ece_after: float
    log_loss_majority: float
    log_loss_train_frequency: float
    brier_majority: float
    brier_train_frequency: float
    reliability_before: ReliabilityBins
    reliability_after: ReliabilityBins

    def flat(self) -> dict[str, float]:
        """Scalar metrics by name (what goes into the model_metrics table)."""
        out = {k: float(v) for k, v in asdict(self).items() if isinstance(v, (int, float))}
        out.pop("samples")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration_report(
    labels: np.ndarray,
    raw_probabilities: np.ndarray,
    calibrated_probabilities: np.ndarray,
    train_labels: np.ndarray,
    bins: int = ECE_BINS,
) -> CalibrationReport:
    """Log-loss, Brier and ECE of the raw and the calibrated probabilities on the same bars."""
    y = np.asarray(labels, dtype=np.int64)
    frequencies = class_frequencies(train_labels)
    frequency_probs = np.tile(frequencies, (y.size, 1))
    majority_probs = np.tile(np.eye(3)[int(frequencies.argmax())], (y.size, 1))
    return CalibrationReport(
        samples=int(y.size),
        log_loss_before=log_loss(y, raw_probabilities),
        log_loss_after=log_loss(y, calibrated_probabilities),
        brier_before=brier_score(y, raw_probabilities),
        brier_after=brier_score(y, calibrated_probabilities),
        ece_before=ece(y, raw_probabilities, bins),
        ece_after=ece(y, calibrated_probabilities, bins),
        log_loss_majority=log_loss(y, majority_probs),
        log_loss_train_frequency=log_loss(y, frequency_probs),
        brier_majority=brier_score(y, majority_probs),
        brier_train_frequency=brier_score(y, frequency_probs),
        reliability_before=reliability_bins(y, raw_probabilities, bins),
        reliability_after=reliability_bins(y, calibrated_probabilities, bins),
    )


@dataclass(frozen=True)
class ClassificationReport:
    samples: int
    accuracy: float
    precision: tuple[float, float, float]  # per class, order [buy, hold, sell]
    recall: tuple[float, float, float]
    f1: tuple[float, float, float]
    precision_macro: float
    recall_macro: float
    f1_macro: float
    confusion: tuple[tuple[int, ...], ...]  # rows: true class, columns: predicted class
    confidence_mean: float | None
    calibration_error: float | None  # expected calibration error of the confidence
    baseline_accuracy: float  # majority class of the training labels
    baseline_f1_macro: float
    log_loss: float = float("nan")  # of the probabilities given (see the module docstring)
    brier: float = float("nan")
    ece: float = float("nan")  # of the argmax class's probability
    baseline_log_loss: float = float("nan")  # training class frequencies as the prediction

    def flat(self) -> dict[str, float]:
        """Scalar metrics by name (what goes into the model_metrics table)."""
        out: dict[str, float] = {
            "samples": float(self.samples),
            "accuracy": self.accuracy,
            "precision_macro": self.precision_macro,
            "recall_macro": self.recall_macro,
            "f1_macro": self.f1_macro,
            "baseline_accuracy": self.baseline_accuracy,
            "baseline_f1_macro": self.baseline_f1_macro,
            "log_loss": self.log_loss,
            "brier": self.brier,
            "ece": self.ece,
            "baseline_log_loss": self.baseline_log_loss,
        }
        for i, name in enumerate(CLASSES):
            out[f"precision_{name}"] = self.precision[i]
            out[f"recall_{name}"] = self.recall[i]
            out[f"f1_{name}"] = self.f1[i]
        if self.confidence_mean is not None:
            out["confidence_mean"] = self.confidence_mean
        if self.calibration_error is not None:
            out["calibration_error"] = self.calibration_error
        return out

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 3) -> np.ndarray:
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def _prf(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    actual = matrix.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE: sample-weighted mean |accuracy - mean confidence| over equal-width confidence bins
    (0.0 if there are no samples). Per bin, ``n_b * |acc_b - conf_b|`` is
    ``|sum correct - sum confidence|``, so the bins are sums, not a loop over masks."""
    confidence = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    correct = np.asarray(correct, dtype=np.float64)
    if confidence.size == 0:
        return 0.0
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    gap = np.abs(
        np.bincount(which, correct, minlength=bins) - np.bincount(which, confidence, minlength=bins)
    )
    return float(gap.sum() / confidence.size)


def classification_report(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    *,
    confidence: np.ndarray | None = None,
    train_labels: np.ndarray | None = None,
) -> ClassificationReport:
    """Metrics of the argmax predictions of ``probabilities`` (n, 3) against ``y_true``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities)
    y_pred = probabilities.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred)
    precision, recall, f1 = _prf(matrix)
    reference = y_true if train_labels is None else np.asarray(train_labels, dtype=np.int64)
    majority = int(np.bincount(reference, minlength=3).argmax()) if reference.size else 1
    base_matrix = confusion_matrix(y_true, np.full_like(y_true, majority))
    _, _, base_f1 = _prf(base_matrix)
    n = int(y_true.size)
    accuracy = float((y_pred == y_true).mean()) if n else 0.0
    conf_mean = confidence_ece = None
    if confidence is not None and n:
        conf_mean = float(np.mean(confidence))
        confidence_ece = expected_calibration_error(confidence, y_pred == y_true)

    def triple(values: np.ndarray) -> tuple[float, float, float]:
        return (float(values[0]), float(values[1]), float(values[2]))

    return ClassificationReport(
        samples=n,
        accuracy=accuracy,
        precision=triple(precision),
        recall=triple(recall),
        f1=triple(f1),
        precision_macro=float(precision.mean()),
        recall_macro=float(recall.mean()),
        f1_macro=float(f1.mean()),
        confusion=tuple(tuple(int(v) for v in row) for row in matrix),
        confidence_mean=conf_mean,
        calibration_error=confidence_ece,
        baseline_accuracy=float((y_true == majority).mean()) if n else 0.0,
        baseline_f1_macro=float(base_f1.mean()),
        log_loss=log_loss(y_true, probabilities),
        brier=brier_score(y_true, probabilities),
        ece=ece(y_true, probabilities),
        baseline_log_loss=log_loss(y_true, np.tile(class_frequencies(reference), (n, 1))),
    )


def block_bootstrap_mean(
    values: np.ndarray,
    *,
    block: int,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Moving-block bootstrap CI of the mean of ``values`` (in time order; non-finite dropped),
    blocks of ``block`` values as in ``block_bootstrap_ic``; NaN when under two blocks."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n, b = v.size, max(int(block), 1)
    if n < 2 * b:
        return math.nan, math.nan
    means = v[block_resamples(n, b, n_boot, seed)].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class FamilyImportance:
    """How much a model relies on one feature family, measured on the validation part.

    ``importance``: the mean increase of the per-bar log-loss when the family's columns are
    shuffled together across bars (every step of the window, ``repeats`` permutations);
    ``ci_low``/``ci_high``: its moving-block bootstrap CI over the validation bars."""

    family: str
    columns: tuple[str, ...]
    importance: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bar_log_loss(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float64)
    return -np.log(np.clip(p[np.arange(labels.size), labels], LOG_EPS, 1.0))


def permutation_increase(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    windows: np.ndarray,
    labels: np.ndarray,
    index: list[int],
    *,
    repeats: int,
    rng: np.random.Generator,
    base: np.ndarray | None = None,
) -> np.ndarray:
    """Per bar, the mean increase of the log-loss when the columns ``index`` of ``windows``
    are shuffled together across bars (every step of the window), over ``repeats``
    permutations. ``base``: the per-bar log-loss of the unshuffled windows, when known."""
    y = np.asarray(labels, dtype=np.int64)
    if base is None:
        base = _bar_log_loss(y, predict_proba(windows))
    increase = np.zeros(y.size)
    for _ in range(max(1, repeats)):
        shuffled = windows.copy()
        order = rng.permutation(windows.shape[0])
        shuffled[:, :, index] = windows[order][:, :, index]
        increase += _bar_log_loss(y, predict_proba(shuffled)) - base
    return increase / max(1, repeats)


def grouped_permutation_importance(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    windows: np.ndarray,
    labels: np.ndarray,
    families: dict[str, tuple[str, ...]],
    columns: tuple[str, ...] | list[str],
    *,
    horizon_bars: int,
    repeats: int = 3,
    seed: int = 0,
    n_boot: int = 1000,
) -> list[FamilyImportance]:
    """Permutation importance per feature family (``FamilyImportance``), best first.

    ``windows`` (n, window_len, len(columns)) are validation windows in time order and
    ``families`` maps each family to its columns (``pipelines.features.prune.feature_families``);
    families without a column in ``columns`` are skipped. The bootstrap blocks are
    ``10 * horizon_bars`` bars long (EVALUATION.md)."""
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    base = _bar_log_loss(y, predict_proba(windows))
    out: list[FamilyImportance] = []
    for family, members in families.items():
        index = [columns.index(c) for c in members if c in columns]
        if not index:
            continue
        increase = permutation_increase(
            predict_proba, windows, y, index, repeats=repeats, rng=rng, base=base
        )
        lo, hi = block_bootstrap_mean(
            increase, block=10 * int(horizon_bars), n_boot=n_boot, seed=seed
        )
        out.append(
            FamilyImportance(
                family, tuple(columns[i] for i in index), float(increase.mean()), lo, hi
            )
        )
    return sorted(out, key=lambda f: f.importance, reverse=True)


# The selection rule (docs/models.md, "Feature selection"). "ci" (the default): drop a family
# only when the whole 95 % CI of its importance is at or below zero (shuffling it does not
# hurt the validation log-loss, with confidence); a family whose CI cannot be computed (too
# few validation bars) is kept. "mean": keep a family only when its mean importance is above
# zero. Either way at least MIN_FAMILIES families (the most important ones) are kept.
MIN_FAMILIES = 3
SelectionRule = Literal["ci", "mean"]


def select_families(
    importance: list[FamilyImportance],
    *,
    rule: SelectionRule = "ci",
    keep_at_least: int = MIN_FAMILIES,
) -> list[str]:
    """The families kept by the selection rule (above), most important first."""
    ranked = sorted(importance, key=lambda f: f.importance, reverse=True)
    if rule == "ci":
        kept = [f.family for f in ranked if not f.ci_high <= 0.0]  # NaN CI: kept
    elif rule == "mean":
        kept = [f.family for f in ranked if f.importance > 0.0]
    else:
        raise ValueError(f"unknown selection rule {rule!r}; known: 'ci', 'mean'")
    if len(kept) < keep_at_least:
        kept = [f.family for f in ranked[:keep_at_least]]
    return kept
