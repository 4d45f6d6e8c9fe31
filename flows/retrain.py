"""Flow `retrain`: last N days of candles -> features/labels -> ensemble -> ONNX -> registry ->
promote (or not) -> markdown dashboard artifact. Logic lives in ``models.retraining``."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flows.alerts import promotion_alert
from flows.orchestration import DEFAULT_TASK_RUNNER, NO_CACHE, create_markdown_artifact, flow, task
from models import retraining
from models.cv import CVResult
from models.data import CandleBatch, FeaturizedSeries, SampleSet, featurize_series
from models.export import ExportResult
from models.microstructure import SeriesInputs
from models.registry import ModelRecord
from models.training import TrainConfig, TrainedEnsemble
from warehouse import Settings, get_settings


@task(name="load-training-data", cache_policy=NO_CACHE)
def load_training_data(settings: Settings, request: retraining.RetrainRequest) -> CandleBatch:
    return retraining.load_training_data(settings, request)


@task(name="featurize-symbol", cache_policy=NO_CACHE)
def featurize_symbol(series: SeriesInputs) -> FeaturizedSeries:
    return featurize_series(series)


@task(name="assemble-samples", cache_policy=NO_CACHE)
def assemble_samples(featurized: list[FeaturizedSeries], config: TrainConfig) -> SampleSet:
    return retraining.assemble(featurized, config)


def prepare_samples(batch: CandleBatch, config: TrainConfig) -> SampleSet:
    """Features per symbol as mapped tasks (threads or Dask, as the flow's runner says), then
    labels and windows over all of them."""
    featurized = featurize_symbol.map(batch.series()).result()
    return assemble_samples(list(featurized), config)


@task(name="train-ensemble", cache_policy=NO_CACHE)
def train(samples: SampleSet, config: TrainConfig) -> TrainedEnsemble:
    return retraining.train(samples, config)


@task(name="cross-validate", cache_policy=NO_CACHE)
def cross_validate(samples: SampleSet, config: TrainConfig) -> CVResult | None:
    return retraining.cross_validate_config(samples, config)


@task(name="export-onnx", cache_policy=NO_CACHE)
def export(
    ensemble: TrainedEnsemble, samples: SampleSet, staging: Path
) -> tuple[ExportResult, float]:
    return retraining.export(ensemble, samples, staging)


@task(name="register-model", cache_policy=NO_CACHE)
def register(
    settings: Settings,
    request: retraining.RetrainRequest,
    ensemble: TrainedEnsemble,
    exported: ExportResult,
    snapshot_id: int,
    samples: SampleSet,
    cv: CVResult | None = None,
) -> ModelRecord:
    return retraining.register(
        settings, request, ensemble, exported, snapshot_id, samples, cv,
        request.extra_hyperparameters,
    )  # fmt: skip


@task(name="validate-and-promote", cache_policy=NO_CACHE)
def validate_and_promote(
    settings: Settings,
    record: ModelRecord,
    ensemble: TrainedEnsemble,
    samples: SampleSet,
    snapshot_id: int,
    exported: ExportResult,
    parity: float,
    cv: CVResult | None = None,
    batch: CandleBatch | None = None,
) -> retraining.RetrainOutcome:
    # the champion's configuration, when it differs, is cross-validated on its own samples
    rebuild = (lambda config: retraining.prepare_samples(batch, config)) if batch else None
    return retraining.finish(
        settings, record, ensemble, samples, snapshot_id, exported, parity, cv=cv,
        rebuild=rebuild,
    )  # fmt: skip


@task(name="publish-dashboard", cache_policy=NO_CACHE)
def publish_dashboard(settings: Settings, outcome: retraining.RetrainOutcome, name: str) -> str:
    markdown = retraining.dashboard_markdown(outcome, retraining.trend(settings, name))
    create_markdown_artifact(
        markdown=markdown,
        key=f"model-dashboard-{name}".lower(),
        description=f"retrain of {outcome.model_id}",
    )
    return markdown


def _request(
    settings: Settings,
    symbols: Sequence[str],
    days: float | None,
    horizon: int | None,
    epochs: int | None,
    timeframe: str | None,
    exchange: str | None,
    snapshot_id: int | None,
    train_overrides: dict[str, Any] | None,
    name: str = "signal",
    tuned: bool = True,
) -> retraining.RetrainRequest:
    """The flows' JSON parameters as a retraining request. Precedence: ``train_overrides``, then
    ``horizon``/``epochs`` when given, then the best parameters of the last tuning study of
    ``name`` (``models.tuning.tuned_defaults``, unless ``tuned`` is False), then TrainConfig's
    defaults. The study is recorded with the model's hyperparameters."""
    from models.tuning import tuned_defaults

    # Labels are priced with the same round trip the decision path charges (settings' costs).
    round_trip = 2.0 * (
        settings.taker_fee + settings.slippage_fraction + settings.half_spread_fraction
    )
    defaults = tuned_defaults(settings, name) if tuned else None
    explicit = {k: v for k, v in (("horizon_bars", horizon), ("epochs", epochs)) if v is not None}
    config = TrainConfig(
        **{
            "round_trip_cost_fraction": round_trip,
            **(defaults.params if defaults else {}),
            **explicit,
            **(train_overrides or {}),
        }
    )
    return retraining.RetrainRequest(
        symbols=tuple(symbols),
        timeframe=timeframe or settings.base_timeframe,
        days=days,
        exchange=exchange,
        snapshot_id=snapshot_id,
        name=name,
        config=config,
        extra_hyperparameters=defaults.hyperparameters() if defaults else {},
    )


@flow(name="retrain", task_runner=DEFAULT_TASK_RUNNER, log_prints=True)
def retrain(
    symbols: list[str] | None = None,
    days: float | None = 30,
    horizon: int | None = None,
    epochs: int | None = None,
    timeframe: str | None = None,
    exchange: str | None = None,
    snapshot_id: int | None = None,
    name: str = "signal",
    train_overrides: dict[str, Any] | None = None,
    tuned: bool = True,
) -> retraining.RetrainOutcome:
    """Retrain on the last ``days`` days (default 30), cross-validate K purged folds of the
    training part, validate out of sample, export, register, promote if the challenger passes
    the rule (on the folds: mean log-loss below the training-frequency baseline's, and mean
    fold IC minus its standard error above a champion configuration's), publish the dashboard.
    ``horizon``/``epochs`` left out: the last tuning study's best values (``tuned``), else 5/10."""
    settings = get_settings()
    request = _request(
        settings, symbols or settings.symbols, days, horizon, epochs, timeframe, exchange,
        snapshot_id, train_overrides, name=name, tuned=tuned,
    )  # fmt: skip
    config = request.config
    if request.extra_hyperparameters:
        print(
            f"training defaults from tuning study {request.extra_hyperparameters['tuning_study']}"
        )
    batch = load_training_data(settings, request)
    samples = prepare_samples(batch, config)
    ensemble = train(samples, config)
    cv = cross_validate(samples, config)
    staging = settings.home / "models" / "staging" / uuid.uuid4().hex
    try:
        exported, parity = export(ensemble, samples, staging)
        record = register(settings, request, ensemble, exported, batch.snapshot_id, samples, cv)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    outcome = validate_and_promote(
        settings, record, ensemble, samples, batch.snapshot_id, exported, parity, cv, batch
    )
    publish_dashboard(settings, outcome, name)
    # one notification: promoted, or refused with the rule's reason (flows/alerts.py)
    promotion_alert(
        settings,
        model_id=outcome.model_id,
        promoted=outcome.promoted,
        reason=outcome.reason,
        name=name,
        previous_champion_id=outcome.previous_champion_id,
        model_file=Path(record.onnx_path),
        symbols=request.symbols,
    )
    c = outcome.challenger
    print(
        f"{outcome.model_id}: IC {c.get('ic', float('nan')):.4f}, log-loss "
        f"{c.get('log_loss', float('nan')):.4f} (training frequencies "
        f"{c.get('log_loss_train_frequency', float('nan')):.4f}), accuracy {c['accuracy']:.3f}; "
        f"{'promoted' if outcome.promoted else 'not promoted'}: {outcome.reason}"
    )
    return outcome


@flow(name="walk-forward-retrain", log_prints=True)
def walk_forward_retrain(
    symbol: str = "BTC/USDT",
    days: float | None = 30,
    horizon: int = 5,
    epochs: int = 10,
    n_folds: int = 3,
    timeframe: str | None = None,
    exchange: str | None = None,
    snapshot_id: int | None = None,
    train_overrides: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Walk-forward retraining of the ensemble on one warehouse symbol (deployable: JSON
    parameters only): loads the last ``days`` days like ``retrain``, then one purged retrain
    per fold (the ``walk-forward-folds`` artifact). Returns the per-fold metrics; registers no
    model. The samples go to a task, not to the ``walk-forward`` subflow: a subflow's
    parameters are serialized for the API, which would copy every training window."""
    from flows.backtest import publish_fold_metrics, walk_forward_task

    settings = get_settings()
    request = _request(
        settings, [symbol], days, horizon, epochs, timeframe, exchange, snapshot_id,
        train_overrides, tuned=False,
    )  # fmt: skip
    config = request.config
    samples = prepare_samples(load_training_data(settings, request), config)
    result: Any = walk_forward_task(samples, config, n_folds)
    publish_fold_metrics(result)
    folds = [dict(m) for m in result.fold_metrics]
    for m in folds:
        print(f"fold {m['fold']}: accuracy {m['accuracy']:.3f}, macro F1 {m['f1_macro']:.3f}")
    return folds
