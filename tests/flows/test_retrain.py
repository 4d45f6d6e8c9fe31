"""The `retrain` flow, twice: the first model, then a challenger against that champion, with the
first model's training data reproduced from its snapshot after more data has arrived."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from flows.retrain import retrain
from models import registry, retraining
from models.data import SampleSet
from models.training import TrainConfig
from pipelines.features import FEATURE_SET_VERSION
from tests.flows.conftest import artifact_texts
from tests.models.conftest import SYMBOL, TINY, candles_arrow, real_candles
from warehouse import Settings, upsert

TINY_OVERRIDES = {k: v for k, v in TINY.model_dump().items() if k not in ("horizon_bars", "epochs")}


def _retrain(settings: Settings) -> retraining.RetrainOutcome:
    return retrain(
        symbols=[SYMBOL],
        days=30,
        horizon=5,
        epochs=1,
        timeframe="1m",
        train_overrides=TINY_OVERRIDES,
        settings=settings,
    )


def _samples_of(
    settings: Settings, record: registry.ModelRecord, snapshot_id: int | None
) -> SampleSet:
    """The training samples of ``record`` rebuilt from its recorded hyperparameters (symbols,
    timeframe, days, exchange, training config) at ``snapshot_id`` (None: the current data)."""
    hp = record.hyperparameters
    config = TrainConfig(**{k: hp[k] for k in TrainConfig.model_fields})
    request = retraining.RetrainRequest(
        symbols=tuple(hp["symbols"]),
        timeframe=hp["timeframe"],
        days=hp["days"],
        exchange=hp["exchange"],
        snapshot_id=snapshot_id,
        config=config,
    )
    return retraining.prepare_samples(retraining.load_training_data(settings, request), config)


def test_retrain_twice_promotes_by_the_rule_and_reproduces_training_data_from_its_snapshot(
    prefect_server: None, lake: duckdb.DuckDBPyConnection, settings: Settings, candles_dir: Path
) -> None:
    candles = real_candles(candles_dir, rows=3400)  # the newest 3,400 real 1m candles
    older, trained_on, newer = candles.head(400), candles.slice(400, 2600), candles.tail(400)
    upsert(lake, "candles", candles_arrow(trained_on), settings=settings)

    # --- the first model: no champion yet ---------------------------------------------------
    first = _retrain(settings)
    record = registry.get_model(lake, first.model_id)
    assert record.feature_set_version == FEATURE_SET_VERSION
    assert record.training_snapshot_id == first.snapshot_id
    assert record.onnx_path.is_file() and first.parity_max_abs <= 1e-5
    # The decision follows the documented rule, written out here (no champion yet: the
    # challenger's macro F1 must beat the majority baseline's by more than the minimum gain).
    rule = registry.PromotionRule()
    c = first.challenger
    assert first.promoted == (c["f1_macro"] > c["baseline_f1_macro"] + rule.min_f1_gain)
    assert record.status == ("champion" if first.promoted else "challenger")
    assert first.previous is None and first.previous_champion_id is None
    metrics = registry.model_metrics(lake, first.model_id, "test")
    assert {"accuracy", "f1_macro", "baseline_accuracy", "calibration_error"} <= set(metrics)
    dashboard = artifact_texts("model-dashboard-signal")[0]
    assert first.model_id in dashboard and "Training samples" in dashboard
    assert "n/a (no comparable champion)" in dashboard
    before = _samples_of(settings, record, None)  # what the first model was trained on

    # --- more data: newer candles, a backfill of older ones, a revised close ---------------
    revised = trained_on.slice(2000, 1).with_columns(pl.col("close") * 1.01)
    for part in (newer, older, revised):
        upsert(lake, "candles", candles_arrow(part), settings=settings)

    # The model's snapshot and hyperparameters still give exactly its training samples ...
    again = _samples_of(settings, record, record.training_snapshot_id)
    assert again.feature_columns == before.feature_columns and len(again.labels) > 1000
    np.testing.assert_array_equal(again.ts, before.ts)
    np.testing.assert_array_equal(again.windows, before.windows)
    np.testing.assert_array_equal(again.labels, before.labels)
    # ... while the current data gives other samples (so the check above is not vacuous).
    now = _samples_of(settings, record, None)
    assert len(now.labels) > len(before.labels) and now.ts.max() > before.ts.max()

    # --- the second model, against a champion ------------------------------------------------
    if not first.promoted:  # the rule refused it against the baseline: make it the champion
        registry.promote(lake, settings, first.model_id, reason="test: a champion to beat")
    second = _retrain(settings)
    assert second.previous_champion_id == first.model_id
    assert second.snapshot_id > first.snapshot_id and second.window_name != first.window_name
    window = second.window_name
    assert window.startswith("oos_")
    challenger = registry.model_metrics(lake, second.model_id, window)
    champion = registry.model_metrics(lake, first.model_id, window)
    for m in (challenger, champion):
        assert {"accuracy", "f1_macro", "baseline_f1_macro"} <= set(m)
    assert second.previous is not None
    assert {k: champion[k] for k in second.previous} == second.previous
    assert {k: challenger[k] for k in second.challenger} == second.challenger
    # against a champion: more macro F1 than the minimum gain, at most the allowed accuracy drop
    promote = (
        challenger["f1_macro"] - champion["f1_macro"] > rule.min_f1_gain
        and champion["accuracy"] - challenger["accuracy"] <= rule.max_accuracy_drop
    )
    assert second.promoted == promote
    assert second.reason == registry.decide_promotion(challenger, champion).reason
    assert registry.champion(lake).model_id == (  # type: ignore[union-attr]
        second.model_id if promote else first.model_id
    )
    assert registry.get_model(lake, first.model_id).status == ("retired" if promote else "champion")

    dashboard = artifact_texts("model-dashboard-signal")[0]
    assert second.model_id in dashboard and "n/a" not in dashboard
    accuracy_change = challenger["accuracy"] - champion["accuracy"]
    f1_change = challenger["f1_macro"] - champion["f1_macro"]
    assert (
        f"| accuracy | {challenger['accuracy']:.2%} | {champion['accuracy']:.2%} "
        f"| {accuracy_change:+.2%} |" in dashboard
    )
    assert (
        f"| macro F1 | {challenger['f1_macro']:.3f} | {champion['f1_macro']:.3f} "
        f"| {f1_change:+.2%} |" in dashboard
    )
