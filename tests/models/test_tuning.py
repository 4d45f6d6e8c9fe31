"""The tuning loop on real 5m candles (ETH/BTC), small budget: the study resumes, its objective
is the purged cross-validated IC (a strategy measure), and the best trial's parameters are the
next retrain's defaults, recorded in the registry with the study."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import optuna
import polars as pl
import pytest

from flows.orchestration import direct_run
from flows.retrain import _request, retrain
from flows.tune import tune
from models import registry, retraining, tuning
from models.cv import cross_validate
from tests.support.models import TINY, candles_arrow
from warehouse import Settings, get_settings, upsert

SYMBOL = "ETH/BTC"
# searched: architecture (trees), training (their learning rate), labels (horizon, threshold)
SPACE = ["gbm_max_depth", "gbm_learning_rate", "horizon_bars", "threshold_scale"]
OVERRIDES = {
    **{k: v for k, v in TINY.model_dump().items() if k not in ("horizon_bars", "epochs")},
    "members": ["gbm"],
    "epochs": 1,
    "cv_folds": 2,
    "max_samples": 900,
}


def eth_btc(candles_dir: Path, rows: int = 1600) -> pl.DataFrame:
    frame = pl.read_ipc(candles_dir / "ETH_BTC-5m.feather").rename({"date": "ts"}).tail(rows)
    return frame.with_columns(
        pl.col("ts").dt.convert_time_zone("UTC"),
        exchange=pl.lit("binance"),
        symbol=pl.lit(SYMBOL),
        timeframe=pl.lit("5m"),
    ).select("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")


@pytest.fixture
def home(
    lake: duckdb.DuckDBPyConnection, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """The flows read the settings of the process: point them at the test's warehouse."""
    monkeypatch.setenv("TRADELOOP_HOME", str(settings.home))
    assert get_settings().home == settings.home
    yield settings


def _tune(trials: int) -> dict[str, object]:
    with direct_run():
        return tune(
            symbols=[SYMBOL],
            timeframe="5m",
            days=None,
            trials=trials,
            timeout_s=600,
            study="eth-test",
            seed=3,
            train_overrides=OVERRIDES,
            space=SPACE,
        )


@pytest.mark.slow
def test_tuning_resumes_and_its_best_trial_is_the_next_retrains_defaults(
    home: Settings, lake: duckdb.DuckDBPyConnection, candles_dir: Path
) -> None:
    upsert(lake, "candles", candles_arrow(eth_btc(candles_dir)), settings=home)

    # --- two trials, then the study is resumed for two more --------------------------------
    first = _tune(2)
    assert first["trials"] == 2 and first["ran"] == 2
    second = _tune(2)
    assert second["trials"] == 4 and second["ran"] == 2
    study = optuna.load_study(study_name="eth-test", storage=tuning.storage_url(home))
    assert len(study.trials) == 4
    assert Path(tuning.storage_url(home).removeprefix("sqlite:///")).is_relative_to(home.home)
    # the resumed run drew new configurations (its sampler seed moves with the study's size)
    drawn = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(drawn)) == 4
    # per-fold intermediate values: the running mean of the fold ICs (what the pruner reads)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete
    for t in complete:
        folds = [t.user_attrs["cv"][f"cv_fold_{k}_ic"] for k in range(2)]
        assert t.intermediate_values == pytest.approx({0: folds[0], 1: np.mean(folds)})
        assert t.value == pytest.approx(np.mean(folds))

    # --- the objective is the cross-validated IC, recomputed here from the best params -------
    best = study.best_trial
    params = tuning.to_config(best.params)
    assert second["best_trial"] == best.number and second["best_params"] == params
    request = _request(
        home, [SYMBOL], None, None, None, "5m", None, None, {**OVERRIDES, **params}, tuned=False
    )
    config = request.config
    samples = retraining.prepare_samples(retraining.load_training_data(home, request), config)
    again = cross_validate(samples, config)
    assert best.value == pytest.approx(again.ic_mean, abs=1e-12)
    assert isinstance(second["deflated_sharpe_note"], str) and second["deflated_sharpe_note"]

    # --- the next retrain starts from the best params and records the study ------------------
    defaults = tuning.tuned_defaults(home, "signal")
    assert defaults is not None and defaults.study == "eth-test"
    assert defaults.params == params and defaults.trial == best.number
    run_only = {k: v for k, v in OVERRIDES.items() if k not in params}
    with direct_run():
        outcome = retrain(symbols=[SYMBOL], timeframe="5m", days=None, train_overrides=run_only)
    record = registry.get_model(lake, outcome.model_id)
    hp = record.hyperparameters
    assert hp["tuning_study"] == "eth-test" and hp["tuning_trial"] == best.number
    assert hp["tuned_params"] == params
    for key, value in params.items():
        assert hp[key] == pytest.approx(value), key  # the model was trained with them
    # and its fold figures are the study's best: same configuration, same data, same folds
    assert outcome.cv is not None
    assert outcome.cv.ic_mean == pytest.approx(best.value, abs=1e-12)


def test_studies_live_beside_the_warehouse(settings: Settings, tmp_path: Path) -> None:
    url = tuning.storage_url(settings)
    assert url == f"sqlite:///{settings.home / 'tuning' / 'optuna.db'}"
    # a PostgreSQL catalog: the same database, through psycopg (SQLAlchemy's dialect name)
    pg = Settings(home=tmp_path / "pg", catalog_url="postgresql://tl:secret@db:5432/lake")
    assert tuning.storage_url(pg) == "postgresql+psycopg://tl:secret@db:5432/lake"


def test_retrain_defaults_come_from_the_study_under_explicit_parameters(
    settings: Settings,
) -> None:
    assert tuning.tuned_defaults(settings, "signal") is None
    plain = _request(settings, [SYMBOL], 30, None, None, "5m", None, None, None)
    assert plain.config.horizon_bars == 5 and plain.extra_hyperparameters == {}
    saved = tuning.TunedDefaults(
        study="s1",
        trial=3,
        value=0.05,
        params={"horizon_bars": 10, "gbm_max_depth": 2, "members": ["gbm"], "cost_margin": 1.5},
        written_at="2026-12-02T00:00:00+00:00",
    )
    tuning.save_defaults(settings, "signal", saved)
    assert tuning.tuned_defaults(settings, "signal") == saved
    tuned = _request(settings, [SYMBOL], 30, None, None, "5m", None, None, None)
    assert tuned.config.horizon_bars == 10 and tuned.config.gbm_max_depth == 2
    assert tuned.config.members == ("gbm",) and tuned.config.cost_margin == 1.5
    assert tuned.extra_hyperparameters["tuning_study"] == "s1"
    # explicit parameters win over the study; overrides win over both; tuned=False ignores it
    explicit = _request(
        settings, [SYMBOL], 30, 7, None, "5m", None, None, {"gbm_max_depth": 4}
    ).config
    assert explicit.horizon_bars == 7 and explicit.gbm_max_depth == 4
    assert explicit.cost_margin == 1.5
    off = _request(settings, [SYMBOL], 30, None, None, "5m", None, None, None, tuned=False)
    assert off.config.horizon_bars == 5 and off.extra_hyperparameters == {}
    # another model name has its own defaults
    other = _request(settings, [SYMBOL], 30, None, None, "5m", None, None, None, name="x")
    assert other.config.horizon_bars == 5


def test_the_labels_cost_floor_is_the_round_trip_times_the_margin() -> None:
    from models.training import TrainConfig, label_config

    config = TrainConfig(round_trip_cost_fraction=0.0032, cost_margin=1.5)
    assert label_config(config).round_trip_cost_fraction == pytest.approx(0.0048)
    with pytest.raises(ValueError, match="cv_folds"):
        TrainConfig(cv_folds=1)


def test_tune_command_checks_its_options_before_any_work() -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    for args in (["--trials", "0"], ["--timeout", "0"], ["--symbols", "ETHBTC"]):
        result = runner.invoke(app, ["tune", *args])
        assert result.exit_code == 2, (args, result.output)
