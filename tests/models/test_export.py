from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from models import export, retraining
from models.data import SampleSet
from models.export import OPSET, ExportResult, export_onnx
from models.runtime import OnnxPredictor
from models.training import TrainedEnsemble
from pipelines.features import FEATURE_SET_VERSION
from tests.support.models import assert_probabilities


def test_export_parity_with_torch_on_real_inputs(
    trained: TrainedEnsemble, exported: ExportResult, recent_windows: SampleSet
) -> None:
    predictor = OnnxPredictor.load(exported.path, FEATURE_SET_VERSION)
    got = predictor.predict(recent_windows.full_windows())
    reference, reference_confidence = trained.predict(recent_windows.windows)
    assert np.abs(got.probabilities - reference).max() <= 1e-5
    assert np.abs(got.confidence - reference_confidence).max() <= 1e-5
    assert_probabilities(got.probabilities)


def test_hybrid_member_alone_matches_torch_eager(
    trained: TrainedEnsemble, tmp_path: Path, recent_windows: SampleSet
) -> None:
    """The hybrid graph on its own vs torch eager (no trees, no combination, no calibration in
    between); the confidence output is the top probability, not the member's own head."""
    hybrid_only = TrainedEnsemble(
        config=trained.config,
        feature_columns=trained.feature_columns,
        input_columns=trained.input_columns,
        selected_features=trained.selected_features,
        feature_set_version=trained.feature_set_version,
        scaler=trained.scaler,
        members=[trained.members[0]],
        weights=np.array([1.0], dtype=np.float32),
    )
    path = export_onnx(hybrid_only, tmp_path / "hybrid.onnx").path
    got = OnnxPredictor.load(path, FEATURE_SET_VERSION).predict(recent_windows.full_windows())
    model = trained.members[0].model.eval()
    z = torch.from_numpy(
        trained.scaler.transform(recent_windows.windows[:, :, trained.input_index])
    )
    with torch.no_grad():
        logits, _ = model(z)
    expected = torch.softmax(logits, 1).numpy()
    assert np.abs(got.probabilities - expected).max() <= 1e-5
    assert np.abs(got.confidence - expected.max(axis=1)).max() <= 1e-5


def test_majority_vote_graph_matches_python(
    trained: TrainedEnsemble, tmp_path: Path, recent_windows: SampleSet
) -> None:
    voting = TrainedEnsemble(
        **{**trained.__dict__, "config": trained.config.with_updates(combine="vote")}
    )
    path = export_onnx(voting, tmp_path / "vote.onnx").path
    got = OnnxPredictor.load(path, FEATURE_SET_VERSION).predict(recent_windows.full_windows())
    reference, _ = voting.predict(recent_windows.windows)
    assert np.abs(got.probabilities - reference).max() <= 1e-5
    # Vote shares are sums of member weights.
    assert np.allclose(got.probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_graph_has_dynamic_batch_opset_and_metadata(
    exported: ExportResult, recent_windows: SampleSet
) -> None:
    model = onnx.load(str(exported.path))
    assert {o.domain or "": o.version for o in model.opset_import}[""] == OPSET
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param and not dim.dim_value
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["tradeloop.feature_set_version"] == FEATURE_SET_VERSION
    predictor = OnnxPredictor.load(exported.path, FEATURE_SET_VERSION)
    windows = recent_windows.full_windows()
    for batch in (1, 7, 64):
        assert predictor.predict(windows[:batch]).probabilities.shape == (batch, 3)
    single = predictor.predict(windows[3])  # one (window_len, n_features) window
    np.testing.assert_allclose(
        single.probabilities[0], predictor.predict(windows[:5]).probabilities[3], atol=1e-6
    )


def test_retrain_export_refuses_parity_worse_than_1e5(
    trained: TrainedEnsemble, samples: SampleSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert retraining.PARITY_MAX_ABS == 1e-5  # the documented requirement
    _, parity = retraining.export(trained, samples, tmp_path / "ok")
    assert 0 <= parity <= 1e-5

    real_predict = OnnxPredictor.predict

    def drifted(self: OnnxPredictor, windows: np.ndarray) -> object:
        got = real_predict(self, windows)
        return dataclasses.replace(got, confidence=got.confidence + np.float32(3e-5))

    monkeypatch.setattr(OnnxPredictor, "predict", drifted)
    with pytest.raises(RuntimeError, match=r"ensemble by 3\.\d+e-05 .*\(allowed 1e-05\)"):
        retraining.export(trained, samples, tmp_path / "drifted")


def test_selected_columns_are_sliced_and_equal_a_gather(
    trained: TrainedEnsemble,
    exported: ExportResult,
    tmp_path: Path,
    recent_windows: SampleSet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The model's columns are taken from the raw window by Slice + Concat of runs of
    consecutive columns (a Gather on the last axis was ~11 % of batched inference); the numbers
    are those of a Gather of the same columns."""
    index = trained.feature_index
    assert not np.array_equal(index, np.arange(len(trained.feature_columns)))  # real selection
    consumers = {n.op_type for n in onnx.load(str(exported.path)).graph.node if "window" in n.input}
    assert "Slice" in consumers and "Gather" not in consumers, consumers
    monkeypatch.setattr(export, "MAX_SLICE_RUNS", 0)  # -> one Gather, as before
    gathered = export_onnx(trained, tmp_path / "gather.onnx").path
    consumers = {n.op_type for n in onnx.load(str(gathered)).graph.node if "window" in n.input}
    assert "Gather" in consumers and "Slice" not in consumers, consumers
    windows = recent_windows.full_windows()
    sliced = OnnxPredictor.load(exported.path, FEATURE_SET_VERSION).predict(windows)
    gather = OnnxPredictor.load(gathered, FEATURE_SET_VERSION).predict(windows)
    np.testing.assert_array_equal(sliced.probabilities, gather.probabilities)
    np.testing.assert_array_equal(sliced.confidence, gather.confidence)


def test_runs_of_consecutive_columns() -> None:
    assert export._runs(np.array([0, 1, 2, 5, 6, 9])) == [(0, 3), (5, 7), (9, 10)]
    assert export._runs(np.array([3, 2])) == [(3, 4), (2, 3)]  # order kept
    assert export._runs(np.array([], dtype=np.int64)) == []
