"""The `retrain` flow, twice: the first model, then a challenger against that champion, with the
first model's training data reproduced from its snapshot after more data has arrived."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from flows.retrain import retrain
from models import registry, retraining
from models.data import SampleSet
from models.training import TrainConfig
from pipelines.features import FEATURE_SET_VERSION
from tests.support.artifacts import artifact_texts
from tests.support.models import SYMBOL, TINY, candles_arrow, real_candles
from warehouse import Settings, upsert

TINY_OVERRIDES = {k: v for k, v in TINY.model_dump().items() if k not in ("horizon_bars", "epochs")}
TINY_OVERRIDES["cv_folds"] = 2  # promotion on 2 purged folds (models.cv); fewer trainings


def _retrain(settings: Settings) -> retraining.RetrainOutcome:
    return retrain(
        symbols=[SYMBOL],
        days=30,
        horizon=5,
        epochs=1,
        timeframe="1m",
        train_overrides=TINY_OVERRIDES,
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
    upsert(lake, "candles", candles_arrow(trained_on))

    # --- the first model: no champion yet ---------------------------------------------------
    first = _retrain(settings)
    record = registry.get_model(lake, first.model_id)
    assert record.feature_set_version == FEATURE_SET_VERSION
    assert record.training_snapshot_id == first.snapshot_id
    assert record.onnx_path.is_file() and first.parity_max_abs <= 1e-5
    # The decision follows the documented rule, written out here (no champion yet: the
    # challenger's log-loss must be below the training class frequencies' on its test window).
    rule = registry.PromotionRule()
    c = first.challenger
    # on the folds: the mean log-loss over the purged folds below their baselines' mean
    assert first.promoted == (c["cv_log_loss_mean"] < c["cv_log_loss_train_frequency_mean"])
    assert first.reason.startswith("log-loss: ")
    assert record.status == ("champion" if first.promoted else "challenger")
    assert first.previous is None and first.previous_champion_id is None
    metrics = registry.model_metrics(lake, first.model_id, "test")
    assert {"accuracy", "f1_macro", "baseline_accuracy", "calibration_error"} <= set(metrics)
    assert set(registry.PROMOTION_FIGURES) <= set(metrics)
    assert record.metrics["promotion_test"] == {k: c[k] for k in registry.PROMOTION_FIGURES}
    dashboard = artifact_texts("model-dashboard-signal")[0]
    assert first.model_id in dashboard and "Training samples" in dashboard
    assert "n/a (no comparable champion)" in dashboard
    assert "### Reliability diagram" in dashboard
    assert "## Calibration on the test window" in dashboard
    before = _samples_of(settings, record, None)  # what the first model was trained on

    # --- more data: newer candles, a backfill of older ones, a revised close ---------------
    revised = trained_on.slice(2000, 1).with_columns(pl.col("close") * 1.01)
    for part in (newer, older, revised):
        upsert(lake, "candles", candles_arrow(part))

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
        assert {"accuracy", "f1_macro", *registry.PROMOTION_FIGURES} <= set(m)
    assert second.previous is not None
    _assert_same(second.previous, champion)
    _assert_same(second.challenger, challenger)
    # against a champion: log-loss below the training frequencies', then a higher IC than the
    # champion's on the same window
    promote = (
        challenger["cv_log_loss_mean"] < challenger["cv_log_loss_train_frequency_mean"]
        # the same configuration: the newest out-of-sample window decides between the models
        and challenger["ic"] > champion["ic"] + rule.min_ic_gain
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

    assert f"| {challenger['ic']:.4f} [" in dashboard and f"| {champion['ic']:.4f} [" in dashboard

    # the leaderboard shows each model's test-window figures beside live_accuracy
    board = lake.execute(
        "SELECT model_id, ic, ic_ci_low, log_loss, log_loss_train_frequency, live_accuracy, "
        "live_resolved FROM model_leaderboard"
    ).fetchall()
    assert {row[0] for row in board} == {first.model_id, second.model_id}
    for row in board:
        test = registry.model_metrics(lake, row[0], "test")
        keys = ("ic", "ic_ci_low", "log_loss", "log_loss_train_frequency")
        assert list(row[1:5]) == [None if test[k] != test[k] else test[k] for k in keys]
        assert row[5:] == (None, 0)  # nothing served yet

    # `tradeloop models list -f json` carries the same figures
    listed = _models_list_json(settings)
    assert [m["model_id"] for m in listed] == [first.model_id, second.model_id]
    for m in listed:
        test = registry.model_metrics(lake, m["model_id"], "test")
        for key in ("ic", "ic_ci_low", "ic_ci_high", "log_loss", "log_loss_train_frequency"):
            assert m[key] == (None if test[key] != test[key] else round(test[key], 4)), key
    assert {m["status"] for m in listed} == {"champion", "retired" if promote else "challenger"}


def _assert_same(returned: dict[str, float], stored: dict[str, float]) -> None:
    """Every figure the outcome returned is the one stored (NaN, e.g. a CI on a short window,
    equal to NaN)."""
    for key, value in returned.items():
        assert stored[key] == value or (value != value and stored[key] != stored[key]), key


def _models_list_json(settings: Settings) -> list[dict[str, Any]]:
    """``tradeloop models list -f json`` in this process, on ``settings``' warehouse."""
    from typer.testing import CliRunner

    from flows.cli import app
    from warehouse import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app, ["models", "list", "-f", "json"], env={"TRADELOOP_HOME": str(settings.home)}
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def test_retrain_labels_are_priced_with_the_round_trip_the_decision_path_charges(
    tmp_path: Path,
) -> None:
    from flows.retrain import _request

    settings = Settings(
        home=tmp_path, taker_fee=0.002, slippage_fraction=0.001, half_spread_fraction=0.0005
    )
    request = _request(settings, [SYMBOL], 30, 5, 1, "1m", None, None, None)
    assert request.config.round_trip_cost_fraction == 2 * (0.002 + 0.001 + 0.0005)
    overridden = _request(
        settings, [SYMBOL], 30, 5, 1, "1m", None, None, {"round_trip_cost_fraction": 0.01}
    )
    assert overridden.config.round_trip_cost_fraction == 0.01
