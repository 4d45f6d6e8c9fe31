"""Fixtures for the model tests: real candles, a tiny config, one trained + exported ensemble."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch

from models.data import SampleSet, build_samples
from models.export import ExportResult, export_onnx
from models.training import TrainConfig, TrainedEnsemble, label_config, train_ensemble
from tests.support.models import TINY, real_candles

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_config() -> TrainConfig:
    return TINY


@pytest.fixture(scope="session")
def candles(candles_dir: Path) -> pl.DataFrame:
    return real_candles(candles_dir)


@pytest.fixture(scope="session")
def samples(candles: pl.DataFrame) -> SampleSet:
    return build_samples(candles, window_len=TINY.window_len, label_config=label_config(TINY))


@pytest.fixture(scope="session")
def trained(samples: SampleSet) -> TrainedEnsemble:
    return train_ensemble(samples, TINY)


@pytest.fixture(scope="session")
def exported(trained: TrainedEnsemble, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    return export_onnx(trained, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="session")
def recent_windows(samples: SampleSet) -> SampleSet:
    """Real inputs for parity checks: the 300 most recent samples."""
    return samples.last(300)
