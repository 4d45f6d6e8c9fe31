"""Scoring a registered ONNX model on a window of samples (no torch: ONNX Runtime only)."""

from __future__ import annotations

import numpy as np

from models.data import SampleSet
from models.metrics import ClassificationReport, classification_report
from models.registry import ModelRecord
from models.runtime import ModelFileError, OnnxPredictor


def registered_probabilities(
    record: ModelRecord, samples: SampleSet, *, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray] | None:
    """The model's (probabilities, confidence) on ``samples`` through its ONNX file, or None
    when it cannot run on them (another feature set, other columns or window length): such a
    model cannot serve today's features either."""
    if record.feature_set_version != samples.feature_set_version:
        return None
    try:
        predictor = OnnxPredictor.load(record.onnx_path, samples.feature_set_version)
    except ModelFileError:
        return None
    if (
        predictor.info.feature_columns != samples.serving_columns
        or predictor.info.window_len != samples.windows.shape[1]
    ):
        return None
    probs, conf = [], []
    for start in range(0, len(samples), batch_size):
        prediction = predictor.predict(samples.full_windows()[start : start + batch_size])
        probs.append(prediction.probabilities)
        conf.append(prediction.confidence)
    if not probs:
        return np.empty((0, 3), dtype=np.float32), np.empty(0, dtype=np.float32)
    return np.concatenate(probs), np.concatenate(conf)


def evaluate_registered(
    record: ModelRecord,
    samples: SampleSet,
    *,
    train_labels: np.ndarray | None = None,
    batch_size: int = 4096,
) -> ClassificationReport | None:
    """The model's report on ``samples``, or None when it cannot run on them
    (``registered_probabilities``)."""
    outputs = registered_probabilities(record, samples, batch_size=batch_size)
    if outputs is None:
        return None
    probabilities, confidence = outputs
    return classification_report(
        samples.labels, probabilities, confidence=confidence, train_labels=train_labels
    )
