from __future__ import annotations

import numpy as np

from models.data import SampleSet, split_samples
from models.training import (
    TrainConfig,
    TrainedEnsemble,
    fit_predict,
    label_config,
    loss_weights,
    split_options,
    train_ensemble,
)
from pipelines.features import FEATURE_SET_VERSION, feature_columns
from tests.support.models import TINY, assert_probabilities


def test_tiny_model_trains_on_real_data(samples: SampleSet) -> None:
    # How fast is benchmarks/bench_models.py's to measure (a wall clock judged on a loaded
    # 2-core machine fails for the machine's load, not for the code).
    ensemble = train_ensemble(samples, TINY)
    assert [m.name for m in ensemble.members] == ["hybrid", "conv", "gbm"]
    assert ensemble.feature_set_version == FEATURE_SET_VERSION
    assert ensemble.feature_columns == tuple(feature_columns())
    assert np.isclose(ensemble.weights.sum(), 1.0) and (ensemble.weights > 0).all()
    test = ensemble.test
    assert test is not None and test.samples > 50
    assert sum(map(sum, test.confusion)) == test.samples
    assert 0.0 <= test.accuracy <= 1.0 and 0.0 <= test.baseline_accuracy <= 1.0
    assert test.calibration_error is not None and 0.0 <= test.calibration_error <= 1.0
    for member in ensemble.members:
        assert member.history, f"{member.name} recorded no training history"
    # The scaler saw only the training window, which ends before the test window starts.
    assert ensemble.test_window is not None
    assert ensemble.scaler.fit_end < ensemble.test_window[0]


def test_training_is_reproducible_with_fixed_seeds(
    samples: SampleSet, trained: TrainedEnsemble
) -> None:
    again = train_ensemble(samples, TINY)
    window = samples.last(100).windows
    np.testing.assert_array_equal(again.predict(window)[0], trained.predict(window)[0])


def test_confidence_is_a_probability(trained: TrainedEnsemble, recent_windows: SampleSet) -> None:
    probabilities, confidence = trained.predict(recent_windows.windows)
    assert_probabilities(probabilities)
    assert confidence.shape == (len(recent_windows),)
    assert np.all((confidence >= 0) & (confidence <= 1))


def test_fit_predict_for_walk_forward(samples: SampleSet) -> None:
    recent = samples.last(600)
    cut = recent.ts[450]
    train = recent.take(np.flatnonzero(recent.ts < cut))
    test = recent.take(np.flatnonzero(recent.ts > cut + np.timedelta64(5, "m")))
    probabilities = fit_predict(train, test, TINY.with_updates(members=("hybrid", "gbm")))
    assert probabilities.shape == (len(test), 3)
    assert_probabilities(probabilities)


def test_train_config_labels_know_costs_and_weigh_classes() -> None:
    """The default labels never call a move smaller than a 0.3 % round trip a buy or a sell;
    every member's loss is class-balanced unless turned off."""
    config = label_config(TrainConfig())
    assert config.round_trip_cost_fraction == 0.003 and config.floor_fraction == 0.003
    for method in ("threshold", "triple_barrier"):
        cfg = label_config(TrainConfig(label_method=method, round_trip_cost_fraction=0.01))
        assert cfg.method == method and cfg.floor_fraction == 0.01
    labels = np.array([1] * 90 + [0] * 5 + [2] * 5)
    weights = loss_weights(labels, TrainConfig())
    assert weights[0] == weights[2] == 18 * weights[1]
    assert (loss_weights(labels, TrainConfig(class_weighting=False)) == 1).all()


def test_balanced_gbm_predicts_the_minority_classes_more(samples: SampleSet) -> None:
    """The gradient-boosting member gets the class weights as sample weights: with them it calls
    buy/sell on more validation bars than without (same data, same seed)."""
    config = TINY.with_updates(members=("gbm",), calibration_method="none")
    train, validation, _ = split_samples(samples, **split_options(config))
    calls = []
    for weighted in (True, False):
        ensemble = train_ensemble(samples, config.with_updates(class_weighting=weighted))
        predicted = ensemble.predict_uncalibrated(validation.windows).argmax(axis=1)
        calls.append(int((predicted != 1).sum()))
    assert calls[0] > calls[1]
