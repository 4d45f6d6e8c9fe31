from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest

from models import registry
from models.export import ExportResult, export_onnx
from models.runtime import ModelFileError, OnnxPredictor
from models.training import TrainedEnsemble
from pipelines.features import FEATURE_SET_VERSION, feature_columns
from warehouse import Settings


def _register(
    lake: duckdb.DuckDBPyConnection, settings: Settings, path: Path, **kw: object
) -> registry.ModelRecord:
    return registry.register_model(
        lake,
        settings,
        path,
        feature_set_version=kw.pop("feature_set_version", FEATURE_SET_VERSION),  # type: ignore[arg-type]
        training_snapshot_id=7,
        hyperparameters={"epochs": 2},
        metrics={"test": {"accuracy": 0.5}},
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def two_models(trained: TrainedEnsemble, tmp_path: Path) -> tuple[ExportResult, ExportResult]:
    """Two different real graphs (average and vote combination of the same members)."""
    a = export_onnx(trained, tmp_path / "a.onnx")
    vote = TrainedEnsemble(
        **{**trained.__dict__, "config": trained.config.with_updates(combine="vote")}
    )
    b = export_onnx(vote, tmp_path / "b.onnx")
    assert a.sha256 != b.sha256
    return a, b


def test_register_copies_file_records_sha_and_provenance(
    lake: duckdb.DuckDBPyConnection, settings: Settings, exported: ExportResult
) -> None:
    record = _register(lake, settings, exported.path)
    assert record.status == "challenger" and record.version == 1
    assert record.onnx_path.is_relative_to((settings.home / "models").resolve())
    assert record.onnx_sha256 == exported.sha256
    stored = registry.get_model(lake, record.model_id)
    assert stored.feature_set_version == FEATURE_SET_VERSION and stored.training_snapshot_id == 7
    # Registering the same file again is idempotent.
    assert _register(lake, settings, exported.path).model_id == record.model_id
    assert len(registry.list_models(lake)) == 1


def test_corrupt_onnx_is_refused_with_a_clear_error(
    lake: duckdb.DuckDBPyConnection, settings: Settings, exported: ExportResult, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    data = exported.path.read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"corrupt\.onnx: not a loadable ONNX model"):
        _register(lake, settings, corrupt)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a model")
    with pytest.raises(ModelFileError, match="garbage.onnx"):
        _register(lake, settings, garbage)
    assert registry.list_models(lake) == []
    assert not any((settings.home / "models").rglob("*.onnx"))


def test_mismatched_onnx_is_refused(
    lake: duckdb.DuckDBPyConnection, settings: Settings, exported: ExportResult
) -> None:
    with pytest.raises(
        ModelFileError, match="built for feature set .* but registration says 'other-version'"
    ):
        _register(lake, settings, exported.path, feature_set_version="other-version")
    wrong_columns = ["x", *feature_columns()[1:]]
    with pytest.raises(ModelFileError, match="feature columns .* differ"):
        _register(lake, settings, exported.path, expected_feature_columns=wrong_columns)
    with pytest.raises(ModelFileError, match="sha256"):
        _register(lake, settings, exported.path, expected_sha256="0" * 64)
    with pytest.raises(ModelFileError, match="features here are 'v-next'"):
        OnnxPredictor.load(exported.path, "v-next")
    assert registry.list_models(lake) == []


def test_promotion_only_for_a_better_challenger(
    lake: duckdb.DuckDBPyConnection,
    settings: Settings,
    two_models: tuple[ExportResult, ExportResult],
) -> None:
    champ = _register(lake, settings, two_models[0].path)
    challenger = _register(lake, settings, two_models[1].path)
    window = "oos_2017-11-14T12:00_2017-11-14T20:00"
    base = {
        "f1_macro": 0.40,
        "accuracy": 0.50,
        "baseline_f1_macro": 0.23,
        "baseline_accuracy": 0.55,
    }
    registry.record_metrics(lake, settings, champ.model_id, window, base)
    first = registry.promote_if_better(lake, settings, champ.model_id, window)
    assert first.promote  # no champion yet: it beats the majority baseline
    assert registry.champion(lake).model_id == champ.model_id

    # Equal or slightly better F1 (below the margin), or better F1 with an accuracy collapse: no.
    for f1, accuracy in ((0.40, 0.50), (0.404, 0.55), (0.50, 0.40)):
        registry.record_metrics(
            lake,
            settings,
            challenger.model_id,
            window,
            {**base, "f1_macro": f1, "accuracy": accuracy},
        )
        decision = registry.promote_if_better(lake, settings, challenger.model_id, window)
        assert not decision.promote, decision.reason
        assert registry.champion(lake).model_id == champ.model_id
        assert registry.get_model(lake, challenger.model_id).status == "challenger"

    registry.record_metrics(
        lake, settings, challenger.model_id, window, {**base, "f1_macro": 0.45, "accuracy": 0.49}
    )
    decision = registry.promote_if_better(lake, settings, challenger.model_id, window)
    assert decision.promote, decision.reason
    statuses = {r.model_id: r.status for r in registry.list_models(lake)}
    assert statuses == {champ.model_id: "retired", challenger.model_id: "champion"}


def test_rollback_restores_the_previous_champion(
    lake: duckdb.DuckDBPyConnection,
    settings: Settings,
    two_models: tuple[ExportResult, ExportResult],
) -> None:
    first = _register(lake, settings, two_models[0].path)
    second = _register(lake, settings, two_models[1].path)
    with pytest.raises(registry.RegistryError, match="nothing to roll back"):
        registry.rollback(lake, settings)
    registry.promote(lake, settings, first.model_id)
    with pytest.raises(registry.RegistryError, match="replaced no earlier champion"):
        registry.rollback(lake, settings)
    registry.promote(lake, settings, second.model_id)
    assert registry.champion(lake).model_id == second.model_id
    restored = registry.rollback(lake, settings)
    assert restored.model_id == first.model_id
    statuses = {r.model_id: r.status for r in registry.list_models(lake)}
    assert statuses == {first.model_id: "champion", second.model_id: "retired"}
    champions = lake.execute("SELECT count(*) FROM models WHERE status = 'champion'").fetchone()
    assert champions == (1,)
    events = lake.execute("SELECT action FROM model_promotions ORDER BY event_at").fetchall()
    assert [e[0] for e in events] == ["promote", "promote", "rollback"]


def test_promotion_refuses_a_tampered_file(
    lake: duckdb.DuckDBPyConnection, settings: Settings, exported: ExportResult
) -> None:
    record = _register(lake, settings, exported.path)
    record.onnx_path.chmod(0o644)
    with open(record.onnx_path, "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ModelFileError, match="sha256"):
        registry.promote(lake, settings, record.model_id)
    assert registry.champion(lake) is None


def test_decide_promotion_rule_is_documented() -> None:
    rule = registry.PromotionRule()
    assert "macro F1" in rule.describe()
    yes = registry.decide_promotion(
        {"f1_macro": 0.5, "accuracy": 0.5}, {"f1_macro": 0.4, "accuracy": 0.5}, rule
    )
    no = registry.decide_promotion(
        {"f1_macro": 0.4, "accuracy": 0.5}, {"f1_macro": 0.4, "accuracy": 0.5}, rule
    )
    assert yes.promote and not no.promote
    assert np.isfinite(rule.min_f1_gain)
