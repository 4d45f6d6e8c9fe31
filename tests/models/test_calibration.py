"""Calibration of the ensemble on real 5m candles, its place in the exported graph, the per-class
forward returns, and the probability metrics (log-loss, Brier, ECE, reliability bins)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import numpy as np
import onnx
import polars as pl
import pytest

from models.calibration import (
    Calibration,
    CalibrationMethod,
    class_forward_returns,
    fit_calibration,
)
from models.data import SampleSet, build_samples, split_samples
from models.export import ExportResult, export_onnx
from models.metrics import (
    brier_score,
    calibration_report,
    ece,
    log_loss,
    reliability_bins,
)
from models.retraining import oos_metrics
from models.runtime import OnnxPredictor
from models.training import TrainedEnsemble, label_config, split_options, train_ensemble
from pipelines.features import FEATURE_SET_VERSION
from tests.support.models import TINY

ETH = TINY.with_updates(max_samples=None, window_len=16, gbm_estimators=30)


@pytest.fixture(scope="module")
def eth_candles(candles_dir: Path) -> pl.DataFrame:
    """The last 3,000 real ETH/BTC 5m candles in the warehouse candle schema."""
    frame = pl.read_ipc(candles_dir / "ETH_BTC-5m.feather").rename({"date": "ts"})
    return (
        frame.with_columns(
            exchange=pl.lit("binance"), symbol=pl.lit("ETH/BTC"), timeframe=pl.lit("5m")
        )
        .select("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
        .with_columns(pl.col("ts").dt.convert_time_zone("UTC"))
        .tail(3000)
    )


@pytest.fixture(scope="module")
def eth_samples(eth_candles: pl.DataFrame) -> SampleSet:
    return build_samples(eth_candles, window_len=ETH.window_len, label_config=label_config(ETH))


@pytest.fixture(scope="module")
def eth_ensemble(eth_samples: SampleSet) -> TrainedEnsemble:
    return train_ensemble(eth_samples, ETH)


@pytest.fixture(scope="module")
def eth_exported(
    eth_ensemble: TrainedEnsemble, tmp_path_factory: pytest.TempPathFactory
) -> ExportResult:
    return export_onnx(eth_ensemble, tmp_path_factory.mktemp("cal") / "model.onnx")


def test_calibration_lowers_log_loss_and_ece_on_the_validation_part(
    eth_ensemble: TrainedEnsemble, eth_samples: SampleSet
) -> None:
    report = eth_ensemble.validation_calibration
    assert report is not None
    # figures recomputed here from the validation part, not read back from the report only
    _, validation, _ = split_samples(eth_samples, **split_options(ETH))
    raw = eth_ensemble.predict_uncalibrated(validation.windows)
    calibrated, _ = eth_ensemble.predict(validation.windows)
    assert report.samples == len(validation)
    assert log_loss(validation.labels, calibrated) < log_loss(validation.labels, raw) - 0.01
    assert ece(validation.labels, calibrated) < ece(validation.labels, raw)
    assert report.log_loss_after == pytest.approx(log_loss(validation.labels, calibrated))
    assert report.ece_after < report.ece_before
    assert eth_ensemble.calibration.method in ("temperature", "temperature_bias", "vector")
    assert eth_ensemble.calibration.fit_samples == len(validation)


def test_calibration_is_fit_on_the_validation_part_only(
    eth_ensemble: TrainedEnsemble, eth_samples: SampleSet
) -> None:
    """Refitting on the validation part gives the same map; the test part would give another."""
    _, validation, test = split_samples(eth_samples, **split_options(ETH))
    method = cast(CalibrationMethod, eth_ensemble.calibration.method)
    again = fit_calibration(
        eth_ensemble.predict_uncalibrated(validation.windows), validation.labels, method
    )
    assert np.allclose(again.scale, eth_ensemble.calibration.scale, atol=1e-6)
    on_test = fit_calibration(eth_ensemble.predict_uncalibrated(test.windows), test.labels, method)
    assert not np.allclose(on_test.scale, eth_ensemble.calibration.scale, atol=1e-3)


def test_onnx_returns_the_calibrated_probabilities(
    eth_ensemble: TrainedEnsemble, eth_exported: ExportResult, eth_samples: SampleSet
) -> None:
    windows = eth_samples.last(400)
    got = OnnxPredictor.load(eth_exported.path, FEATURE_SET_VERSION).predict(windows.full_windows())
    calibrated, confidence = eth_ensemble.predict(windows.windows)
    raw = eth_ensemble.predict_uncalibrated(windows.windows)
    assert np.abs(got.probabilities - calibrated).max() <= 1e-5
    assert np.abs(got.confidence - confidence).max() <= 1e-5
    np.testing.assert_allclose(got.confidence, got.probabilities.max(axis=1), atol=1e-7)
    np.testing.assert_allclose(got.probabilities.sum(axis=1), 1.0, atol=1e-5)
    # the calibration is really in the graph: the served probabilities are not the raw ones
    assert np.abs(got.probabilities - raw).max() > 0.01


def test_metadata_and_model_info_carry_calibration_and_class_returns(
    eth_ensemble: TrainedEnsemble, eth_exported: ExportResult
) -> None:
    meta = {p.key: p.value for p in onnx.load(str(eth_exported.path)).metadata_props}
    calibration = json.loads(meta["tradeloop.calibration"])
    returns = json.loads(meta["tradeloop.class_forward_returns"])
    info = OnnxPredictor.load(eth_exported.path, FEATURE_SET_VERSION).info
    assert info.calibration == calibration
    assert info.calibration["method"] == eth_ensemble.calibration.method
    assert info.calibration["scale"] == list(eth_ensemble.calibration.scale)
    assert info.class_forward_returns == tuple(returns) == eth_ensemble.class_forward_returns
    r_buy, r_hold, r_sell = info.class_forward_returns
    # buy labels are rises above at least the round-trip cost; sells are falls
    assert r_buy > 0 > r_sell and r_sell < r_hold < r_buy


def test_class_forward_returns_are_the_next_open_to_open_returns_of_validation_bars(
    eth_ensemble: TrainedEnsemble, eth_samples: SampleSet, eth_candles: pl.DataFrame
) -> None:
    """Recomputed from the candle file: open[t+1+h] / open[t+1] - 1 for each validation bar t."""
    _, validation, _ = split_samples(eth_samples, **split_options(ETH))
    h = ETH.horizon_bars
    opens = eth_candles.sort("ts")["open"].to_numpy()
    ts = eth_candles.sort("ts")["ts"].dt.replace_time_zone(None).to_numpy().astype("datetime64[us]")
    row = np.searchsorted(ts, validation.ts)
    assert (ts[row] == validation.ts).all()
    inside = row + 1 + h < opens.size
    expected = np.full(len(validation), np.nan)
    expected[inside] = opens[row[inside] + 1 + h] / opens[row[inside] + 1] - 1.0
    np.testing.assert_allclose(validation.tradeable_return, expected, rtol=1e-12)
    for c in range(3):
        chosen = (validation.labels == c) & np.isfinite(expected)
        assert eth_ensemble.class_forward_returns is not None
        assert eth_ensemble.class_forward_returns[c] == pytest.approx(expected[chosen].mean())


def test_models_exported_before_calibration_read_as_none(
    eth_exported: ExportResult, tmp_path: Path
) -> None:
    model = onnx.load(str(eth_exported.path))
    kept = [
        p
        for p in model.metadata_props
        if p.key not in ("tradeloop.calibration", "tradeloop.class_forward_returns")
    ]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    old = tmp_path / "old.onnx"
    onnx.save_model(model, str(old))
    info = OnnxPredictor.load(old, FEATURE_SET_VERSION).info
    assert info.class_forward_returns is None and info.calibration == {}


def test_test_window_metrics_hold_before_after_and_baselines(
    eth_ensemble: TrainedEnsemble,
) -> None:
    metrics = oos_metrics(eth_ensemble)
    for key in (
        "log_loss",
        "brier",
        "ece",
        "baseline_log_loss",
        "log_loss_before",
        "log_loss_after",
        "brier_before",
        "brier_after",
        "ece_before",
        "ece_after",
        "log_loss_majority",
        "log_loss_train_frequency",
        "precision_buy",
        "recall_sell",
    ):
        assert np.isfinite(metrics[key]), key
    assert metrics["log_loss"] == pytest.approx(metrics["log_loss_after"])
    assert metrics["baseline_log_loss"] == pytest.approx(metrics["log_loss_train_frequency"])
    assert eth_ensemble.test_calibration is not None
    bins = eth_ensemble.test_calibration.reliability_after
    assert sum(bins.count) == eth_ensemble.test_calibration.samples


def test_temperature_fit_recovers_a_known_temperature() -> None:
    """Labels drawn from softmax(logits / 2): the raw softmax(logits) is over-confident and the
    fit finds T close to 2; the vector fit then fits no worse."""
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, size=(20_000, 3))
    true = np.exp(logits / 2.0)
    true /= true.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in true])
    raw = np.exp(logits)
    raw /= raw.sum(axis=1, keepdims=True)
    fitted = fit_calibration(raw, labels, "temperature")
    assert fitted.temperature == pytest.approx(2.0, rel=0.05)
    assert log_loss(labels, fitted.apply(raw)) < log_loss(labels, raw)
    vector = fit_calibration(raw, labels, "vector")
    assert vector.log_loss_after <= fitted.log_loss_after + 1e-6
    assert fit_calibration(raw, labels, "auto").method == "temperature"  # vector not needed


def test_auto_picks_vector_scaling_for_a_shifted_class_balance() -> None:
    """A balanced loss over-predicts rare classes; only a per-class bias can undo that (a
    temperature cannot: it keeps uninformative probabilities at 1/3 each)."""
    rng = np.random.default_rng(5)
    n = 4000
    labels = rng.choice(3, size=n, p=[0.15, 0.7, 0.15])
    raw = np.full((n, 3), 1 / 3) + rng.normal(0, 0.01, size=(n, 3))
    raw /= raw.sum(axis=1, keepdims=True)
    chosen = fit_calibration(raw, labels, "auto")
    assert chosen.method in ("temperature_bias", "vector")
    q = chosen.apply(raw)
    np.testing.assert_allclose(q.mean(axis=0), [0.15, 0.7, 0.15], atol=0.03)


def test_calibration_apply_is_identity_for_none_and_keeps_probabilities() -> None:
    p = np.array([[0.2, 0.5, 0.3], [0.0, 1.0, 0.0]], dtype=np.float32)
    assert np.array_equal(fit_calibration(p, np.array([1, 1]), "none").apply(p), p)
    c = Calibration("temperature", (0.5, 0.5, 0.5), (0.0, 0.0, 0.0))
    q = c.apply(p)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-6)
    assert (q.argmax(axis=1) == p.argmax(axis=1)).all()  # a temperature keeps the order
    assert q[0].max() < p[0].max()  # T = 2 softens


def test_class_forward_returns_skip_unknown_returns() -> None:
    labels = np.array([0, 0, 1, 2, 2, 2])
    returns = np.array([0.01, 0.03, 0.0, -0.02, np.nan, -0.04])
    assert class_forward_returns(labels, returns) == pytest.approx((0.02, 0.0, -0.03))
    assert class_forward_returns(np.array([1]), np.array([0.5]))[0] == 0.0  # no buy: no edge


def test_probability_metrics_on_hand_computed_cases() -> None:
    y = np.array([0, 1, 2, 1])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]])
    assert log_loss(y, p) == pytest.approx(-np.mean(np.log([0.7, 0.8, 0.4, 0.3])))
    assert brier_score(y, p) == pytest.approx(
        np.mean([0.09 + 0.04 + 0.01, 0.01 + 0.04 + 0.01, 0.09 + 0.09 + 0.36, 0.36 + 0.49 + 0.01])
    )
    bins = reliability_bins(y, p, bins=10)
    # argmax probabilities 0.7, 0.8, 0.4, 0.6 (correct, correct, correct, wrong)
    assert bins.count[7] == bins.count[8] == bins.count[4] == bins.count[6] == 1
    assert sum(bins.count) == 4 and bins.accuracy[6] == 0.0 and bins.mean_confidence[0] is None
    assert ece(y, p) == pytest.approx((0.3 + 0.2 + 0.6 + 0.6) / 4)
    perfect = np.eye(3)[y]
    assert log_loss(y, perfect) == pytest.approx(0.0, abs=1e-12) and ece(y, perfect) == 0.0
    report = calibration_report(y, p, perfect, train_labels=np.array([1, 1, 1, 0]))
    assert report.log_loss_after < report.log_loss_before
    assert report.log_loss_majority > 10  # a one-hot majority predictor pays -ln(1e-15) per miss
    assert report.log_loss_train_frequency == pytest.approx(
        -np.mean(np.log([0.25, 0.75, 1e-15, 0.75]))
    )
