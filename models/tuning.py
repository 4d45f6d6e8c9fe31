"""Hyperparameter search with Optuna over the ensemble, its training and its labels.

* **Objective**: the mean IC over the purged, embargoed folds of ``models.cv`` (Spearman of
  ``p_buy - p_sell`` against the tradeable return, on the training part only; the retrain's
  test window is never seen). A strategy measure, never accuracy. Trials with other horizons
  are judged against the tradeable return over their own horizon.
* **Pruning**: after each fold the running mean IC is reported (``trial.report``, step = fold)
  and Optuna's median pruner stops a trial that is below the median of earlier trials at the
  same fold (from the second fold on, after ``PRUNE_STARTUP_TRIALS`` complete trials).
* **Budget and seed**: ``n_trials`` and ``timeout_s`` (Optuna stops starting trials after it);
  a TPE sampler seeded with ``seed + trials already in the study``, so a resumed study draws
  new configurations instead of repeating the first run's.
* **Storage**: an Optuna RDB storage beside the warehouse: ``TRADELOOP_HOME/tuning/optuna.db``
  (SQLite), or the PostgreSQL catalog database when the DuckLake catalog is PostgreSQL. A study
  is named; running the same name again resumes it (``load_if_exists``), and studies can be
  compared with ``optuna`` tools on the same storage. An interrupted run (Ctrl-C: Optuna marks
  the trial failed; a killed process: its trial's heartbeat stops and the next run marks it
  failed) resumes the same way.
* **Next retrain's defaults**: the best trial's parameters are written to
  ``TRADELOOP_HOME/tuning/<model name>.json`` with the study name and trial number;
  ``tuned_defaults`` reads them, the retrain flow merges them under explicit parameters, and the
  registry stores the study with the model's hyperparameters (``tuning_study``, ...).
* **Deflated Sharpe** (``models.cv.after_fee_returns`` of the best trial: long when the expected
  return beats the round trip, non-overlapping ``h``-bar periods, after fees), deflated for every
  trial tried (complete or pruned) with the variance of the complete trials' Sharpe ratios
  (``trading.metrics.deflated_sharpe``). NaN when the best configuration never trades at the
  cost (all periods flat): there is then no Sharpe to deflate, and the report says so.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.cv import FoldScore, cross_validate
from models.data import FeaturizedSeries, SampleSet, assemble_samples
from models.training import TrainConfig, label_config
from trading.metrics import deflated_sharpe
from warehouse import Settings

PRUNE_STARTUP_TRIALS = 3
HEARTBEAT_S = 60
OBJECTIVE = "mean IC over the purged, embargoed folds of the training part (models.cv)"


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Floats:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Ints:
    low: int
    high: int
    step: int = 1


Param = Choice | Floats | Ints

# Members are searched as one categorical value ("hybrid+conv+gbm"): Optuna stores plain values.
DEFAULT_SPACE: dict[str, Param] = {
    # ensemble architecture
    "members": Choice(("hybrid+conv+gbm", "hybrid+gbm", "conv+gbm", "gbm")),
    "combine": Choice(("average", "vote")),
    "d_model": Choice((16, 32, 64)),
    "lstm_hidden": Choice((16, 32, 64)),
    "transformer_layers": Ints(1, 2),
    "conv_channels": Choice((16, 32, 64)),
    "dropout": Floats(0.0, 0.3),
    "gbm_max_depth": Ints(2, 4),
    "gbm_estimators": Ints(40, 120, 20),
    # training
    "learning_rate": Floats(1e-4, 3e-3, log=True),
    "gbm_learning_rate": Floats(0.03, 0.3, log=True),
    "window_len": Choice((16, 32, 48)),
    # labels and decision
    "horizon_bars": Choice((3, 5, 10)),
    "label_method": Choice(("threshold", "triple_barrier")),
    "threshold_scale": Floats(0.25, 1.0),
    "take_profit_vol": Floats(0.5, 2.0),
    "stop_loss_vol": Floats(0.5, 2.0),
    "cost_margin": Floats(1.0, 2.0),
}


def suggest(trial: Any, space: dict[str, Param]) -> dict[str, Any]:
    """Draw one configuration of ``space`` (Optuna parameter values, before ``to_config``)."""
    out: dict[str, Any] = {}
    for name, spec in space.items():
        if isinstance(spec, Choice):
            out[name] = trial.suggest_categorical(name, list(spec.values))
        elif isinstance(spec, Floats):
            out[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
        else:
            out[name] = trial.suggest_int(name, spec.low, spec.high, step=spec.step)
    return out


def to_config(params: dict[str, Any]) -> dict[str, Any]:
    """Optuna parameter values as TrainConfig fields (``members`` "a+b" -> ("a", "b"))."""
    out = dict(params)
    if isinstance(out.get("members"), str):
        out["members"] = tuple(out["members"].split("+"))
    return out


def storage_url(settings: Settings) -> str:
    """Where studies live: the PostgreSQL catalog database, else SQLite under the home."""
    if settings.catalog_kind == "postgres" and settings.catalog_dsn:
        scheme, rest = settings.catalog_dsn.split("://", 1)
        return f"postgresql+psycopg://{rest}"
    path = settings.home / "tuning" / "optuna.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def defaults_path(settings: Settings, name: str) -> Path:
    return settings.home / "tuning" / f"{name}.json"


@dataclass(frozen=True)
class TunedDefaults:
    """What the next retrain of ``name`` starts from (``defaults_path``)."""

    study: str
    trial: int
    value: float
    params: dict[str, Any]  # TrainConfig fields
    written_at: str

    def hyperparameters(self) -> dict[str, Any]:
        """What the registry stores with a model trained on these defaults."""
        return {
            "tuning_study": self.study,
            "tuning_trial": self.trial,
            "tuning_value": self.value,
            "tuned_params": self.params,
        }


def save_defaults(settings: Settings, name: str, defaults: TunedDefaults) -> Path:
    """Write ``defaults`` as the next retrain's defaults for model ``name`` (atomically)."""
    path = defaults_path(settings, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(defaults), indent=2, default=str))
    tmp.replace(path)
    return path


def tuned_defaults(settings: Settings, name: str) -> TunedDefaults | None:
    """The best parameters of the last study run for model ``name``, or None."""
    path = defaults_path(settings, name)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return TunedDefaults(
        study=str(data["study"]),
        trial=int(data["trial"]),
        value=float(data["value"]),
        params=dict(data["params"]),
        written_at=str(data["written_at"]),
    )


class SampleCache:
    """Samples per (window length, label settings) from series featurized once: a trial that
    changes only the model reuses them; one that changes the labels assembles new ones."""

    def __init__(self, featurized: Sequence[FeaturizedSeries]) -> None:
        self.featurized = list(featurized)
        self._cache: dict[tuple[int, Any], SampleSet] = {}

    def __call__(self, config: TrainConfig) -> SampleSet:
        key = (config.window_len, label_config(config))
        if key not in self._cache:
            self._cache[key] = assemble_samples(
                self.featurized, window_len=config.window_len, label_config=label_config(config)
            )
        return self._cache[key]


@dataclass(frozen=True)
class TuneResult:
    study: str
    storage: str
    trials: int  # every trial in the study (all runs)
    complete: int
    pruned: int
    failed: int
    ran: int  # trials this run started
    best_trial: int | None
    best_value: float  # mean fold IC of the best trial
    best_params: dict[str, Any]  # TrainConfig fields
    best_cv: dict[str, float]
    sharpe_per_period: float  # of the best trial's after-fee returns
    periods: int
    periods_long: int
    deflated_sharpe: float
    deflated_sharpe_note: str
    seconds: float
    defaults_file: str | None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _sharpe(returns: np.ndarray) -> float:
    sd = float(np.std(returns, ddof=1)) if returns.size > 1 else 0.0
    return float(np.mean(returns)) / sd if sd > 0 else math.nan


def objective_for(
    samples_for: Callable[[TrainConfig], SampleSet],
    base: TrainConfig,
    space: dict[str, Param],
) -> Callable[[Any], float]:
    """The Optuna objective: the mean fold IC of ``base`` updated with the trial's draw."""
    import optuna

    def objective(trial: optuna.Trial) -> float:
        config = base.with_updates(**to_config(suggest(trial, space)))
        seen: list[float] = []

        def report(fold: FoldScore) -> None:
            seen.append(fold.ic)
            trial.report(float(np.nanmean(seen)), step=fold.fold)
            if trial.should_prune():
                raise optuna.TrialPruned(f"fold {fold.fold}: running mean IC {np.nanmean(seen)}")

        cv = cross_validate(samples_for(config), config, on_fold=report)
        returns = cv.strategy_returns
        trial.set_user_attr("cv", {k: _json_float(v) for k, v in cv.figures().items()})
        trial.set_user_attr("returns", [round(float(r), 10) for r in returns])
        trial.set_user_attr("sharpe_per_period", _json_float(_sharpe(returns)))
        return cv.ic_mean  # NaN fails the trial (Optuna records it as FAIL)

    return objective


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def run_study(
    settings: Settings,
    featurized: Sequence[FeaturizedSeries],
    base: TrainConfig,
    *,
    study_name: str,
    n_trials: int | None,
    timeout_s: float | None,
    seed: int = 7,
    space: dict[str, Param] | None = None,
    model_name: str = "signal",
    write_defaults: bool = True,
    attributes: dict[str, Any] | None = None,
) -> TuneResult:
    """Create or resume ``study_name`` and run up to ``n_trials`` more trials within
    ``timeout_s``; write the best parameters as the next retrain's defaults (module docs)."""
    import time

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if base.cv_folds < 2:
        raise ValueError("tuning needs cross-validation: base.cv_folds must be at least 2")
    space = DEFAULT_SPACE if space is None else space
    started = time.perf_counter()
    url = storage_url(settings)
    # A heartbeat per running trial: a run killed mid-trial (no chance to mark it failed) leaves
    # a RUNNING trial whose heartbeat stops; the next run marks it FAIL and carries on.
    storage = optuna.storages.RDBStorage(
        url, heartbeat_interval=HEARTBEAT_S, grace_period=3 * HEARTBEAT_S
    )
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS, n_warmup_steps=1),
    )
    before = len(study.trials)
    study.sampler = optuna.samplers.TPESampler(seed=seed + before)
    for key, value in {
        "objective": OBJECTIVE,
        "base_config": base.model_dump(mode="json"),
        "space": sorted(space),
        **(attributes or {}),
    }.items():
        study.set_user_attr(key, value)
    objective = objective_for(SampleCache(featurized), base, space)
    study.optimize(
        objective, n_trials=n_trials, timeout=timeout_s, catch=(ValueError,), gc_after_trial=True
    )
    result = summarize(study, url, ran=len(study.trials) - before, seconds=0.0)
    defaults_file = None
    if write_defaults and result.best_trial is not None:
        defaults = TunedDefaults(
            study=study_name,
            trial=result.best_trial,
            value=result.best_value,
            params=result.best_params,
            written_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        defaults_file = str(save_defaults(settings, model_name, defaults))
    return TuneResult(
        **{
            **result.to_dict(),
            "seconds": time.perf_counter() - started,
            "defaults_file": defaults_file,
        }
    )


def summarize(study: Any, url: str, *, ran: int = 0, seconds: float = 0.0) -> TuneResult:
    """The study's trials, best trial and deflated Sharpe (module docs)."""
    from optuna.trial import TrialState

    trials = study.trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    best = max(complete, key=lambda t: t.value) if complete else None
    returns = np.asarray(best.user_attrs.get("returns", []) if best else [], dtype=np.float64)
    tried = len(complete) + len(pruned)
    sharpes = [s for t in complete if (s := t.user_attrs.get("sharpe_per_period")) is not None]
    variance = float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else None
    dsr = deflated_sharpe(returns, tried, variance) if returns.size else math.nan
    longs = int(np.count_nonzero(returns))
    if best is None:
        note = "no complete trial"
    elif longs == 0:
        note = (
            "undefined: the best configuration never trades at the round trip on the folds "
            "(every period flat), so there is no Sharpe to deflate"
        )
    else:
        note = f"PSR against the expected best Sharpe of {tried} trials" + (
            "" if variance is not None else " (trial variance from this Sharpe's estimate)"
        )
    history = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "intermediate": dict(t.intermediate_values),
        }
        for t in trials
    ]
    return TuneResult(
        study=study.study_name,
        storage=url.split("@")[-1] if "@" in url else url,  # no password in reports
        trials=len(trials),
        complete=len(complete),
        pruned=len(pruned),
        failed=len(failed),
        ran=ran,
        best_trial=best.number if best else None,
        best_value=float(best.value) if best and best.value is not None else math.nan,
        best_params=to_config(best.params) if best else {},
        best_cv=dict(best.user_attrs.get("cv", {})) if best else {},
        sharpe_per_period=_sharpe(returns),
        periods=int(returns.size),
        periods_long=longs,
        deflated_sharpe=dsr,
        deflated_sharpe_note=note,
        seconds=seconds,
        defaults_file=None,
        history=history,
    )


def markdown(result: TuneResult) -> str:
    """The study's summary as markdown (the flow's artifact, the command's output)."""
    lines = [
        f"# Tuning study {result.study}",
        "",
        f"Objective: {OBJECTIVE}. Storage: {result.storage}.",
        "",
        f"- trials in the study: {result.trials} ({result.complete} complete, "
        f"{result.pruned} pruned, {result.failed} failed); this run: {result.ran} in "
        f"{result.seconds:.1f} s",
        f"- best trial: {result.best_trial} with mean fold IC {result.best_value:.4f}"
        if result.best_trial is not None
        else "- best trial: none",
        f"- best trial's after-fee strategy on the folds: {result.periods_long} of "
        f"{result.periods} periods long, Sharpe per period {result.sharpe_per_period:.4f}",
        f"- deflated Sharpe: {result.deflated_sharpe:.4f} ({result.deflated_sharpe_note})",
        f"- next retrain's defaults: {result.defaults_file or 'not written'}",
        "",
        "| parameter | best value |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in sorted(result.best_params.items())),
    ]
    return "\n".join(lines) + "\n"


def study_name_for(name: str, symbols: Sequence[str], timeframe: str) -> str:
    """The default study of a model name, series and timeframe (resumed by a later run)."""
    return f"{name}-{'+'.join(s.replace('/', '_') for s in symbols)}-{timeframe}"
