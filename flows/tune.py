"""Flow `tune`: an Optuna study over the ensemble, its training and its labels, judged by the
purged cross-validated IC; the best parameters become the next retrain's defaults. Logic lives
in ``models.tuning``; ``tradeloop tune`` and the ``tune/weekly`` deployment run this flow."""

from __future__ import annotations

from typing import Any

from flows.orchestration import NO_CACHE, create_markdown_artifact, flow, task
from models import retraining
from models.data import FeaturizedSeries, featurize_series
from warehouse import get_settings


@task(name="featurize-symbol", cache_policy=NO_CACHE)
def featurize_symbol(candles: Any) -> FeaturizedSeries:
    return featurize_series(candles)


@task(name="run-study", cache_policy=NO_CACHE)
def run_study(
    featurized: list[FeaturizedSeries],
    base: Any,
    study_name: str,
    trials: int,
    timeout_s: float | None,
    seed: int,
    name: str,
    attributes: dict[str, Any],
    space: list[str] | None,
) -> Any:
    """torch is imported here, in the task, not when the flow module loads."""
    from models.tuning import DEFAULT_SPACE
    from models.tuning import run_study as run

    unknown = sorted(set(space or ()) - set(DEFAULT_SPACE))
    if unknown:
        raise ValueError(f"unknown search parameters {unknown}; known: {sorted(DEFAULT_SPACE)}")
    searched = {k: DEFAULT_SPACE[k] for k in space} if space else None
    return run(
        get_settings(), featurized, base, study_name=study_name, n_trials=trials,
        timeout_s=timeout_s, seed=seed, model_name=name, attributes=attributes, space=searched,
    )  # fmt: skip


@flow(name="tune", log_prints=True)
def tune(
    symbols: list[str] | None = None,
    timeframe: str | None = None,
    exchange: str | None = None,
    days: float | None = 30,
    trials: int = 20,
    timeout_s: float | None = 3600,
    study: str | None = None,
    seed: int = 7,
    name: str = "signal",
    train_overrides: dict[str, Any] | None = None,
    space: list[str] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the study ``study`` (default ``<name>-<symbols>-<timeframe>``) for up to
    ``trials`` trials within ``timeout_s`` seconds on the last ``days`` days of candles, write
    the best parameters as the next retrain's defaults, publish the summary. ``space``: the
    names of ``models.tuning.DEFAULT_SPACE`` to search (default: all); the rest come from
    ``train_overrides`` or TrainConfig's defaults."""
    from flows.retrain import _request
    from models import tuning

    settings = get_settings()
    request = _request(
        settings, symbols or settings.symbols, days, None, None, timeframe, exchange, None,
        train_overrides, name=name, tuned=False,
    )  # fmt: skip
    batch = retraining.load_training_data(settings, request)
    featurized = list(featurize_symbol.map(batch.series()).result())
    study_name = study or tuning.study_name_for(name, request.symbols, request.timeframe)
    result = run_study(
        featurized,
        request.config,
        study_name,
        trials,
        timeout_s,
        seed,
        name,
        {
            "symbols": list(request.symbols),
            "timeframe": request.timeframe,
            "exchange": request.exchange,
            "days": days,
            "snapshot_id": batch.snapshot_id,
        },
        space,
    )
    markdown = tuning.markdown(result)
    create_markdown_artifact(
        markdown=markdown, key=f"tuning-{name}".lower(), description=study_name
    )
    print(
        f"study {result.study}: {result.trials} trials ({result.ran} this run), best trial "
        f"{result.best_trial} mean fold IC {result.best_value:.4f}, deflated Sharpe "
        f"{result.deflated_sharpe:.4f}"
    )
    return dict(result.to_dict())
