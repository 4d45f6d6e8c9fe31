"""Feature selection in the loop (issue 17): importance per feature family on the validation
part, the selection rule, the selected set recorded with the model, and the model served
through ONNX Runtime with only its features computed (online == batch on the pruned set)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import polars as pl

from models.data import SampleSet, split_samples
from models.export import ExportResult
from models.metrics import FamilyImportance, grouped_permutation_importance, select_families
from models.runtime import OnnxPredictor
from models.training import TrainedEnsemble, split_options, train_ensemble
from pipelines.features import FEATURE_SET_VERSION, build_features, feature_columns
from pipelines.features.prune import feature_families, plan
from tests.support.models import TINY

PARITY_RTOL = 1e-9
PARITY_ATOL = 1e-12


def test_family_importance_finds_the_family_a_model_reads() -> None:
    """A model that reads only the "rsi" columns: shuffling rsi raises its log-loss, shuffling
    any other family changes nothing (exactly 0), and the rule keeps rsi."""
    rng = np.random.default_rng(3)
    columns = ("rsi_14", "rsi_7", "sma_10", "hour", "rsi_14_1h")
    windows = rng.normal(size=(600, 4, len(columns))).astype(np.float32)
    labels = (windows[:, -1, 0] > 0).astype(np.int64) * 2  # 0 buy / 2 sell from rsi_14

    def predict(w: np.ndarray) -> np.ndarray:
        p_sell = 1.0 / (1.0 + np.exp(-4.0 * w[:, -1, 0]))
        return np.stack([1.0 - p_sell, np.zeros_like(p_sell), p_sell], axis=1)

    found = grouped_permutation_importance(
        predict, windows, labels, feature_families(columns), columns, horizon_bars=2, repeats=2
    )
    by = {f.family: f for f in found}
    assert set(by) == {"rsi", "moving averages", "time", "1h"}
    assert by["rsi"].columns == ("rsi_14", "rsi_7")
    assert by["rsi"].importance > 0.5 and by["rsi"].ci_low > 0
    for other in ("moving averages", "time", "1h"):
        assert by[other].importance == 0.0 and by[other].ci_low == by[other].ci_high == 0.0
    for rule in ("ci", "mean"):
        assert select_families(found, rule=rule, keep_at_least=1) == ["rsi"]
        assert select_families(found, rule=rule, keep_at_least=3)[0] == "rsi"


def test_the_rules_differ_on_a_noisy_family() -> None:
    """ "ci" keeps a family whose CI straddles zero, "mean" drops it when its mean is <= 0."""
    noisy = [
        FamilyImportance("rsi", ("rsi_14",), 0.02, 0.01, 0.03),
        FamilyImportance("time", ("hour",), -0.001, -0.004, 0.002),
        FamilyImportance("1h", ("rsi_14_1h",), -0.01, -0.02, -0.001),
    ]
    assert select_families(noisy, rule="ci", keep_at_least=1) == ["rsi", "time"]
    assert select_families(noisy, rule="mean", keep_at_least=1) == ["rsi"]
    assert select_families(noisy, rule="mean", keep_at_least=2) == ["rsi", "time"]


def test_selection_is_on_by_default_and_recorded(
    trained: TrainedEnsemble, exported: ExportResult
) -> None:
    """The default training selects families by the rule and the exported graph and the
    registry's hyperparameters name the selected set."""
    assert trained.config.feature_selection
    kept = select_families(
        trained.family_importance,
        rule=trained.config.selection_rule,
        keep_at_least=trained.config.selection_min_families,
    )
    assert set(trained.selected_families) == set(kept)
    families = feature_families(trained.input_columns)
    assert {f.family for f in trained.family_importance} == set(families)
    expected = [c for c in trained.input_columns if any(c in families[f] for f in kept)]
    assert list(trained.selected_features) == expected
    assert len(trained.selected_features) < len(trained.input_columns)  # something was dropped
    assert trained.hyperparameters()["selected_families"] == list(trained.selected_families)
    meta = {p.key: p.value for p in onnx.load(str(exported.path)).metadata_props}
    assert json.loads(meta["tradeloop.selected_features"]) == list(trained.selected_features)


def test_selection_never_reads_the_test_part(samples: SampleSet) -> None:
    """Scrambling the labels of the test part (the latest 15 %) changes nothing selection
    sees: the same families and importances."""
    config = TINY.with_updates(members=("gbm",))
    recent = samples.last(config.max_samples or len(samples))
    _, _, test = split_samples(recent, **split_options(config))
    in_test = recent.ts >= test.ts.min()
    labels = recent.labels.copy()
    labels[in_test] = np.random.default_rng(0).permutation(labels[in_test])
    assert (labels != recent.labels).any()
    a = train_ensemble(recent, config)
    b = train_ensemble(dataclasses.replace(recent, labels=labels), config)
    assert a.selected_features == b.selected_features
    assert a.importance == b.importance


def test_selected_model_serves_with_only_its_features(
    trained: TrainedEnsemble, exported: ExportResult, candles: pl.DataFrame
) -> None:
    """ONNX Runtime serves the selected-set model from an online engine that computes only
    the selected features; the same bars through the pruned batch pipeline agree within
    1e-9, and so do the model's outputs with the full feature set computed."""
    predictor = OnnxPredictor.load(exported.path, FEATURE_SET_VERSION)
    required = predictor.required_features
    assert required == trained.selected_features
    engine = predictor.feature_engine("1m")
    assert engine.columns == list(required)
    assert engine.plan.nodes < plan().nodes
    rows = [engine.step(row) for row in candles.iter_rows(named=True)]
    assert all(set(r) == set(required) for r in rows)

    batch = build_features(candles, columns=required)
    for c in required:  # batch/online parity on the pruned set
        a = batch.get_column(c).to_numpy().astype(float)
        b = np.array([np.nan if r[c] is None else r[c] for r in rows], dtype=float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), c
        ok = ~np.isnan(a)
        limit = PARITY_RTOL * np.maximum(np.abs(a[ok]), np.abs(b[ok])) + PARITY_ATOL
        assert (np.abs(a[ok] - b[ok]) <= limit).all(), c

    online = predictor.inputs(rows)
    pruned = predictor.input_matrix(list(required), batch.select(required).to_numpy())
    full = build_features(candles).select(feature_columns()).to_numpy().astype(np.float32)
    assert (
        np.isnan(online[:, [feature_columns().index(c) for c in required]]).sum()
        == np.isnan(pruned[:, predictor.used_index]).sum()
    )
    length = predictor.info.window_len
    used_ok = np.isfinite(online[:, predictor.used_index]).all(axis=1)
    ends = [i for i in range(length - 1, len(rows)) if used_ok[i - length + 1 : i + 1].all()]
    ends = ends[-200:]
    assert len(ends) == 200

    def windows(x: np.ndarray) -> np.ndarray:
        return np.stack([x[i - length + 1 : i + 1] for i in ends])

    served = predictor.predict(windows(online))
    from_batch = predictor.predict(windows(pruned))
    from_full = predictor.predict(windows(full))
    assert np.isnan(windows(online)).any()  # unselected columns were never computed
    np.testing.assert_allclose(served.probabilities, from_batch.probabilities, atol=1e-6)
    np.testing.assert_allclose(served.probabilities, from_full.probabilities, atol=1e-6)
