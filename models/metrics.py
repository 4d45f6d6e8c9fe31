"""Classification metrics for the signal models (numpy only: usable from serving code too).

Everything is computed on held-out samples and reported beside the majority-class baseline
(always predicting the most frequent TRAINING class), so a model that only learned the class
balance is visible as such.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from pipelines.labels import CLASSES


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
    confidence: np.ndarray, correct: np.ndarray, bins: int = 10
) -> float:
    """ECE: sample-weighted mean |accuracy - mean confidence| over equal-width confidence bins."""
    confidence = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    correct = np.asarray(correct, dtype=np.float64)
    if confidence.size == 0:
        return 0.0
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            error += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(error)


def classification_report(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    *,
    confidence: np.ndarray | None = None,
    train_labels: np.ndarray | None = None,
) -> ClassificationReport:
    """Metrics of the argmax predictions of ``probabilities`` (n, 3) against ``y_true``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(probabilities).argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred)
    precision, recall, f1 = _prf(matrix)
    reference = y_true if train_labels is None else np.asarray(train_labels, dtype=np.int64)
    majority = int(np.bincount(reference, minlength=3).argmax()) if reference.size else 1
    base_matrix = confusion_matrix(y_true, np.full_like(y_true, majority))
    _, _, base_f1 = _prf(base_matrix)
    n = int(y_true.size)
    accuracy = float((y_pred == y_true).mean()) if n else 0.0
    conf_mean = ece = None
    if confidence is not None and n:
        conf_mean = float(np.mean(confidence))
        ece = expected_calibration_error(confidence, y_pred == y_true)

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
        calibration_error=ece,
        baseline_accuracy=float((y_true == majority).mean()) if n else 0.0,
        baseline_f1_macro=float(base_f1.mean()),
    )


def permutation_importance(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    windows: np.ndarray,
    labels: np.ndarray,
    feature_columns: tuple[str, ...] | list[str],
    *,
    repeats: int = 2,
    seed: int = 0,
) -> dict[str, float]:
    """Drop in macro F1 when one feature is shuffled across samples (whole window column).

    Positive = the model relies on the feature; ~0 or negative = it does not.
    """
    rng = np.random.default_rng(seed)
    base = classification_report(labels, predict_proba(windows)).f1_macro
    importance: dict[str, float] = {}
    for j, name in enumerate(feature_columns):
        drops = []
        for _ in range(repeats):
            shuffled = windows.copy()
            shuffled[:, :, j] = windows[rng.permutation(windows.shape[0]), :, j]
            drops.append(base - classification_report(labels, predict_proba(shuffled)).f1_macro)
        importance[name] = float(np.mean(drops))
    return importance


def select_features(
    importance: dict[str, float], *, min_importance: float = 0.0, keep_at_least: int = 4
) -> list[str]:
    """Features whose permutation importance exceeds ``min_importance`` (best first), at least
    ``keep_at_least`` of them."""
    ranked = sorted(importance, key=lambda name: importance[name], reverse=True)
    chosen = [name for name in ranked if importance[name] > min_importance]
    if len(chosen) < keep_at_least:
        chosen = ranked[:keep_at_least]
    return chosen
