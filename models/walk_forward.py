"""One walk-forward fold's model: the real ensemble trained on one window of candles, exported.

``train_window`` is what ``tradeloop walk-forward`` retrains per fold: the same samples,
ensemble, calibration and ONNX export as ``retrain``, on the candles of ``[start, end)`` only
(labels that would look past ``end`` are dropped, so nothing after the window is learned). The
model is not registered: it is judged by the fold's backtest, and its file stays in
``directory``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from models.data import build_samples
from models.export import export_onnx
from models.registry import ModelRecord
from models.training import TrainConfig, label_config, train_ensemble


def window_frame(candles: pl.DataFrame, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
    """The candles opened in ``[start, end)``."""
    return candles.filter((pl.col("ts") >= start) & (pl.col("ts") < end))


def train_window(
    candles: pl.DataFrame,
    config: TrainConfig,
    directory: Path,
    model_id: str,
) -> ModelRecord:
    """Train and export the ensemble on ``candles`` (one fold's training window)."""
    samples = build_samples(
        candles, window_len=config.window_len, label_config=label_config(config)
    )
    ensemble = train_ensemble(samples, config)
    exported = export_onnx(ensemble, directory / f"{model_id}.onnx")
    metrics = {"test": ensemble.test.to_dict()} if ensemble.test is not None else {}
    return ModelRecord(
        model_id=model_id,
        version=0,
        name="walk-forward",
        created_at=dt.datetime.now(dt.UTC),
        feature_set_version=ensemble.feature_set_version,
        training_snapshot_id=None,
        hyperparameters=ensemble.hyperparameters(),
        metrics=metrics,
        onnx_path=exported.path,
        onnx_sha256=exported.sha256,
        status="walk-forward",
        promoted_at=None,
    )
