from __future__ import annotations

import re
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

from models import registry, retraining
from models.data import SampleSet, build_samples, split_samples
from models.export import ExportResult, export_onnx
from models.metrics import block_bootstrap_ic
from models.runtime import ModelFileError, OnnxPredictor
from models.training import (
    TrainConfig,
    TrainedEnsemble,
    label_config,
    split_options,
    train_ensemble,
)
from pipelines.features import FEATURE_SET_VERSION, feature_columns
from tests.support.models import TINY
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


WINDOW = "oos_2017-11-14T12:00_2017-11-14T20:00"
# figures as the retrain stores them on a window (models.metrics.window_scores)
GOOD = {
    "ic": 0.05,
    "ic_ci_low": 0.01,
    "ic_ci_high": 0.09,
    "log_loss": 1.00,
    "log_loss_train_frequency": 1.05,
    "ece": 0.03,
    "brier": 0.60,
}


def test_promotion_needs_log_loss_below_training_frequencies_then_a_better_ic(
    lake: duckdb.DuckDBPyConnection,
    settings: Settings,
    two_models: tuple[ExportResult, ExportResult],
) -> None:
    champ = _register(lake, settings, two_models[0].path)
    challenger = _register(lake, settings, two_models[1].path)

    # (a) no better than the training class frequencies on log-loss: refused, even unopposed
    registry.record_metrics(lake, settings, champ.model_id, WINDOW, {**GOOD, "log_loss": 1.05})
    refused = registry.promote_if_better(lake, settings, champ.model_id, WINDOW)
    assert not refused.promote and registry.champion(lake) is None
    assert refused.reason.startswith("log-loss: log-loss 1.0500 does not beat the "), refused.reason
    assert "training-frequency baseline's 1.0500" in refused.reason

    # the first model that beats them is promoted
    registry.record_metrics(lake, settings, champ.model_id, WINDOW, GOOD)
    first = registry.promote_if_better(lake, settings, champ.model_id, WINDOW)
    assert first.promote, first.reason
    assert first.reason.startswith("log-loss: log-loss 1.0000 beats")
    assert first.reason.endswith("no comparable champion")
    assert registry.champion(lake).model_id == champ.model_id  # type: ignore[union-attr]

    # (b) against the champion on the same window: an equal or lower IC is refused, and so is a
    # higher IC with a log-loss no better than the training frequencies
    for ic, loss in ((0.05, 0.90), (0.03, 0.90), (0.20, 1.06)):
        figures = {**GOOD, "ic": ic, "ic_ci_low": ic - 0.04, "ic_ci_high": ic + 0.04}
        registry.record_metrics(
            lake, settings, challenger.model_id, WINDOW, {**figures, "log_loss": loss}
        )
        decision = registry.promote_if_better(lake, settings, challenger.model_id, WINDOW)
        assert not decision.promote, decision.reason
        if loss < GOOD["log_loss_train_frequency"]:
            assert decision.reason.startswith(
                f"IC: {ic:.4f} (95% CI {ic - 0.04:.4f}..{ic + 0.04:.4f}) does not beat the "
                "champion's 0.0500 (95% CI 0.0100..0.0900) on the same window"
            ), decision.reason
        else:
            assert decision.reason.startswith("log-loss:"), decision.reason
        assert registry.champion(lake).model_id == champ.model_id  # type: ignore[union-attr]
        assert registry.get_model(lake, challenger.model_id).status == "challenger"

    registry.record_metrics(lake, settings, challenger.model_id, WINDOW, {**GOOD, "ic": 0.06})
    decision = registry.promote_if_better(lake, settings, challenger.model_id, WINDOW)
    assert decision.promote, decision.reason
    assert decision.reason.startswith("IC: 0.0600 (95% CI 0.0100..0.0900) beats the champion's")
    statuses = {r.model_id: r.status for r in registry.list_models(lake)}
    assert statuses == {champ.model_id: "retired", challenger.model_id: "champion"}
    rules = lake.execute(
        "SELECT rule FROM model_promotions WHERE action = 'promote' ORDER BY event_at"
    ).fetchall()
    assert [r[0] for r in rules] == [first.reason, decision.reason]


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
    assert "log-loss" in rule.describe() and "IC" in rule.describe()
    assert set(registry.PROMOTION_FIGURES) == set(GOOD)
    yes = registry.decide_promotion({**GOOD, "ic": 0.06}, GOOD, rule)
    no = registry.decide_promotion(GOOD, GOOD, rule)
    assert yes.promote and not no.promote
    # a figure that was not measured (NaN or absent) fails its rule
    assert not registry.decide_promotion({**GOOD, "log_loss": float("nan")}, None).promote
    assert not registry.decide_promotion({"ic": 0.5}, None).promote
    assert not registry.decide_promotion({**GOOD, "ic": float("nan")}, GOOD).promote
    # a champion whose score does not rank (constant: no IC) is beaten by any measured IC
    assert registry.decide_promotion(GOOD, {**GOOD, "ic": float("nan")}).promote
    # margins
    strict = registry.PromotionRule(min_ic_gain=0.02, min_log_loss_gain=0.1)
    assert not registry.decide_promotion({**GOOD, "ic": 0.06}, GOOD, strict).promote
    assert not registry.decide_promotion(GOOD, None, strict).promote
    assert np.isfinite(rule.min_ic_gain)


# --------------------------------------------------------------------- on real candles

# On the last 3,000 real LTC/BTC 5m candles both seeds beat the training class frequencies on
# log-loss (test window: 0.917 and 0.928 vs 0.971), and seed 0 ranks the tradeable returns
# better (IC 0.277 vs 0.266): measured when this test was written.
LTC = TINY.with_updates(max_samples=None, window_len=16, gbm_estimators=30)


def _ltc_samples(candles_dir: Path) -> SampleSet:
    frame = pl.read_ipc(candles_dir / "LTC_BTC-5m.feather").rename({"date": "ts"})
    frame = frame.with_columns(
        exchange=pl.lit("binance"), symbol=pl.lit("LTC/BTC"), timeframe=pl.lit("5m")
    ).select("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
    frame = frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC")).tail(3000)
    return build_samples(frame, window_len=LTC.window_len, label_config=label_config(LTC))


def _retrain_steps(
    settings: Settings, ensemble: TrainedEnsemble, samples: SampleSet, staging: Path
) -> retraining.RetrainOutcome:
    """export -> register -> decide and promote, as the retrain flow runs them."""
    exported, parity = retraining.export(ensemble, samples, staging)
    request = retraining.RetrainRequest(symbols=("X/Y",), config=ensemble.config)
    record = retraining.register(settings, request, ensemble, exported, 1, samples)
    return retraining.finish(settings, record, ensemble, samples, 1, exported, parity)


def _recomputed(
    probabilities: np.ndarray, samples: SampleSet, config: TrainConfig
) -> dict[str, float]:
    """The window figures written out from the definitions, not through the retrain code."""
    train, _, window = split_samples(samples, **split_options(config))
    order = np.lexsort((window.ts, window.symbol))
    score = (probabilities[:, 0] - probabilities[:, 2])[order]
    realized = window.tradeable_return[order]
    frequencies = np.bincount(train.labels, minlength=3) / len(train.labels)
    lo, hi = block_bootstrap_ic(score, realized, horizon_bars=config.horizon_bars)
    y = window.labels
    return {
        "ic": spearmanr(score[np.isfinite(realized)], realized[np.isfinite(realized)]).statistic,
        "ic_ci_low": lo,
        "ic_ci_high": hi,
        "log_loss": -np.log(np.clip(probabilities[np.arange(y.size), y], 1e-15, 1)).mean(),
        "log_loss_train_frequency": -np.log(frequencies[y]).mean(),
    }


def test_a_real_model_no_better_than_the_training_frequencies_is_refused(
    lake: duckdb.DuckDBPyConnection,
    settings: Settings,
    trained: TrainedEnsemble,
    samples: SampleSet,
    tmp_path: Path,
) -> None:
    """The tiny session model (700 real 1m samples, 2 epochs) ranks returns a little but its
    probabilities are worse than predicting the training class frequencies."""
    outcome = _retrain_steps(settings, trained, samples, tmp_path)
    c = outcome.challenger
    assert c["log_loss"] >= c["log_loss_train_frequency"]  # the premise (measured: 1.11 vs 1.02)
    assert not outcome.promoted and registry.champion(lake) is None
    assert outcome.reason.startswith(
        f"log-loss: log-loss {c['log_loss']:.4f} does not beat the training-frequency "
        f"baseline's {c['log_loss_train_frequency']:.4f}"
    ), outcome.reason
    # stored for the model's test window and its comparison window, and what the definitions give
    window = retraining.test_window(samples, trained.config)
    expected = _recomputed(trained.predict(window.windows)[0], samples, trained.config)
    for name in ("test", outcome.window_name):
        stored = registry.model_metrics(lake, outcome.model_id, name)
        assert set(registry.PROMOTION_FIGURES) <= set(stored)
        for key, value in expected.items():
            assert stored[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert c["log_loss"] == pytest.approx(trained.test.log_loss)  # type: ignore[union-attr]


def test_first_real_model_is_promoted_and_a_lower_ic_on_the_same_window_is_refused(
    lake: duckdb.DuckDBPyConnection, settings: Settings, candles_dir: Path, tmp_path: Path
) -> None:
    ltc = _ltc_samples(candles_dir)
    first = _retrain_steps(settings, train_ensemble(ltc, LTC), ltc, tmp_path / "a")
    c = first.challenger
    assert first.promoted, first.reason
    assert first.reason == (
        f"log-loss: log-loss {c['log_loss']:.4f} beats the training-frequency baseline's "
        f"{c['log_loss_train_frequency']:.4f} on the out-of-sample window; "
        "no comparable champion"
    )
    assert registry.champion(lake).model_id == first.model_id  # type: ignore[union-attr]

    second_ensemble = train_ensemble(ltc, LTC.with_updates(seed=1))
    second = _retrain_steps(settings, second_ensemble, ltc, tmp_path / "b")
    ours, theirs = second.challenger, second.previous
    assert theirs is not None and second.previous_champion_id == first.model_id
    assert ours["log_loss"] < ours["log_loss_train_frequency"]  # (a) passes: (b) decides
    assert ours["ic"] < theirs["ic"]
    assert not second.promoted
    assert registry.champion(lake).model_id == first.model_id  # type: ignore[union-attr]
    assert second.reason.startswith(
        f"IC: {ours['ic']:.4f} (95% CI {ours['ic_ci_low']:.4f}..{ours['ic_ci_high']:.4f}) "
        f"does not beat the champion's {theirs['ic']:.4f} "
        f"(95% CI {theirs['ic_ci_low']:.4f}..{theirs['ic_ci_high']:.4f}) on the same window"
    ), second.reason

    # The champion was scored through its ONNX file on the challenger's window: the figures
    # stored for it there are the definitions applied to what ONNX Runtime returns ...
    champion = registry.get_model(lake, first.model_id)
    window = retraining.test_window(ltc, LTC)
    onnx = OnnxPredictor.load(champion.onnx_path, ltc.feature_set_version)
    expected = _recomputed(onnx.predict(window.full_windows()).probabilities, ltc, LTC)
    stored = registry.model_metrics(lake, first.model_id, second.window_name)
    for key, value in expected.items():
        assert stored[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    # ... and, the window being the one the champion was tested on, its own test figures
    assert stored["ic"] == pytest.approx(c["ic"], abs=1e-3)
    assert second.window_name == first.window_name

    # the dashboard: calibration before/after, the reliability diagram's 10 bins, IC with CI
    markdown = retraining.dashboard_markdown(second, [])
    assert "## Calibration on the test window" in markdown
    assert (
        f"| log-loss | {ours['log_loss_before']:.4f} | {ours['log_loss_after']:.4f} "
        f"| {ours['log_loss_train_frequency']:.4f} |" in markdown
    )
    assert f"| ECE | {ours['ece_before']:.4f} | {ours['ece_after']:.4f} |" in markdown
    assert second.reliability_after is not None
    bins = [line for line in markdown.splitlines() if re.match(r"\| \d\.\d–\d\.\d \|", line)]
    assert len(bins) == 10
    after = second.reliability_after
    top = max(range(10), key=lambda b: after.count[b])  # the fullest bin, as a row
    assert bins[top].split(" | ")[3] == str(after.count[top])
    assert f"{after.accuracy[top]:.3f}" in bins[top]
    assert (
        f"| {ours['ic']:.4f} [{ours['ic_ci_low']:.4f}, {ours['ic_ci_high']:.4f}] "
        f"| {theirs['ic']:.4f} [{theirs['ic_ci_low']:.4f}, {theirs['ic_ci_high']:.4f}] |"
        in markdown
    )
