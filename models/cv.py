"""Purged, embargoed K-fold cross-validation of a training configuration (Lopez de Prado, ch. 7).

What a retrain (``models.retraining``) and the tuner (``models.tuning``) measure a
configuration by, on the TRAINING part only: the samples before the test window (and the purge
gap in front of it), which the retrain keeps for its own out-of-sample figures.

* The training part's distinct timestamps are cut into ``cv_folds`` contiguous folds
  (``trading.walkforward.purged_kfold``). For each fold, the training rows are every other
  row whose label span (bars ``t..t+h``) shares no bar with the fold's labels (purged on
  BOTH sides of the fold), minus ``embargo_bars`` more after it (default: the window length,
  so no training window after the fold contains one of its bars).
* Each fold's model is ``models.training.fit_ensemble`` on those rows (its own latest part
  validates and calibrates), scored on the fold with ``models.metrics.window_scores``: IC of
  ``p_buy - p_sell`` against the tradeable return, log-loss beside the fold-training class
  frequencies, ECE, Brier.
* ``CVResult`` gives the mean, standard deviation and standard error (``std / sqrt(K)``) of
  the fold ICs and the mean log-loss and baseline: what the promotion rule
  (``models.registry.decide_promotion``) and the tuner's objective read.
* ``after_fee_returns``: a plain after-fee strategy on each fold, for the deflated Sharpe of a
  search: long for ``h`` bars when the expected return ``sum_c p_c r_c`` (per-class
  forward returns of the fold model's validation part) exceeds the round trip, flat otherwise,
  decided every ``h`` bars (non-overlapping holding periods), each position paying the whole
  round trip.

Folds are time intervals (first and last timestamp), so another configuration (another window
length or horizon, hence other samples) is scored on the SAME folds by passing ``bounds``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from models.data import SampleSet
from models.metrics import window_scores
from models.training import TrainConfig, fit_ensemble, split_options
from pipelines.labels import time_splits
from trading.walkforward import purged_kfold

FoldBounds = tuple[np.datetime64, np.datetime64]  # first and last timestamp of a fold


@dataclass(frozen=True)
class FoldScore:
    fold: int
    start: str  # ISO timestamps of the fold's first and last sample
    end: str
    samples: int
    train_samples: int
    ic: float
    ic_ci_low: float
    ic_ci_high: float
    log_loss: float
    log_loss_train_frequency: float
    ece: float
    brier: float
    seconds: float


@dataclass(frozen=True)
class CVResult:
    folds: tuple[FoldScore, ...]
    bounds: tuple[FoldBounds, ...]
    purge_bars: int
    embargo_bars: int
    seconds: float
    # non-overlapping after-fee h-bar returns of every fold (``after_fee_returns``), in order
    strategy_returns: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def _values(self, name: str) -> np.ndarray:
        return np.array([getattr(f, name) for f in self.folds], dtype=np.float64)

    @property
    def ic_mean(self) -> float:
        return float(np.mean(self._values("ic"))) if self.folds else math.nan

    @property
    def ic_std(self) -> float:
        return float(np.std(self._values("ic"), ddof=1)) if len(self.folds) > 1 else math.nan

    @property
    def ic_se(self) -> float:
        return self.ic_std / math.sqrt(len(self.folds)) if len(self.folds) > 1 else math.nan

    def figures(self) -> dict[str, float]:
        """Scalars by name, as ``model_metrics`` stores them (``cv_`` prefix)."""
        out = {
            "cv_folds": float(len(self.folds)),
            "cv_ic_mean": self.ic_mean,
            "cv_ic_std": self.ic_std,
            "cv_ic_se": self.ic_se,
            "cv_log_loss_mean": float(np.mean(self._values("log_loss"))),
            "cv_log_loss_train_frequency_mean": float(
                np.mean(self._values("log_loss_train_frequency"))
            ),
            "cv_ece_mean": float(np.mean(self._values("ece"))),
            "cv_brier_mean": float(np.mean(self._values("brier"))),
            "cv_purge_bars": float(self.purge_bars),
            "cv_embargo_bars": float(self.embargo_bars),
            "cv_seconds": self.seconds,
        }
        for f in self.folds:
            out[f"cv_fold_{f.fold}_ic"] = f.ic
            out[f"cv_fold_{f.fold}_log_loss"] = f.log_loss
            out[f"cv_fold_{f.fold}_log_loss_train_frequency"] = f.log_loss_train_frequency
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            **self.figures(),
            "folds": [asdict(f) for f in self.folds],
            "strategy_periods": int(self.strategy_returns.size),
        }


def training_part(samples: SampleSet, config: TrainConfig) -> SampleSet:
    """The samples before the retrain's test window and its purge gap (train + validation
    parts of ``models.data.split_samples``, and the gap between them)."""
    options = split_options(config)
    if options["max_samples"] is not None and len(samples) > options["max_samples"]:
        samples = samples.last(options["max_samples"])
    splits = time_splits(
        samples.ts,
        purge_bars=options["purge_bars"],
        validation_fraction=options["validation_fraction"],
        test_fraction=options["test_fraction"],
    )
    distinct = np.unique(samples.ts)
    test_start = samples.ts[splits.test].min()
    last = distinct[max(0, int(np.searchsorted(distinct, test_start)) - config.horizon_bars - 1)]
    return samples.take(np.flatnonzero(samples.ts <= last))


def fold_rows(
    ts: np.ndarray,
    k: int,
    *,
    horizon_bars: int,
    embargo_bars: int,
    bounds: Sequence[FoldBounds] | None = None,
) -> list[tuple[np.ndarray, np.ndarray, FoldBounds]]:
    """(training rows, fold rows, (first, last) timestamp) per fold, as indices into ``ts``.

    Folds are cut on the distinct timestamps (several symbols share one), so every sample of a
    timestamp falls in the same fold and the purge and embargo count bars. With ``bounds``
    (from another configuration's folds) the folds are those time intervals."""
    distinct, position = np.unique(ts, return_inverse=True)
    cuts = None
    if bounds is not None:
        k = len(bounds)
        cuts = np.array(
            [np.searchsorted(distinct, b[0], side="left") for b in bounds]
            + [np.searchsorted(distinct, bounds[-1][1], side="right")],
            dtype=np.int64,
        )
    out = []
    for train_pos, fold_pos in purged_kfold(
        distinct.size, k, label_horizon_bars=horizon_bars, embargo_bars=embargo_bars, bounds=cuts
    ):
        train_rows = np.flatnonzero(np.isin(position, train_pos))
        fold_rows_ = np.flatnonzero(np.isin(position, fold_pos))
        out.append((train_rows, fold_rows_, (distinct[fold_pos[0]], distinct[fold_pos[-1]])))
    return out


def after_fee_returns(
    probabilities: np.ndarray,
    part: SampleSet,
    class_returns: tuple[float, float, float] | None,
    *,
    round_trip_cost: float,
    horizon_bars: int,
) -> np.ndarray:
    """Per ``h``-bar period, per symbol in time order: the tradeable return minus the round trip
    when the bar's expected return beats the cost (long), else 0 (flat). See module docs."""
    if class_returns is None or len(part) == 0:
        return np.zeros(0)
    expected = np.asarray(probabilities, dtype=np.float64) @ np.asarray(class_returns)
    long = expected > round_trip_cost
    out: list[np.ndarray] = []
    for symbol in np.unique(part.symbol):
        rows = np.flatnonzero(part.symbol == symbol)
        rows = rows[np.argsort(part.ts[rows], kind="stable")][:: max(1, horizon_bars)]
        realized = part.tradeable_return[rows]
        ok = np.isfinite(realized)
        out.append(np.where(long[rows], realized - round_trip_cost, 0.0)[ok])
    return np.concatenate(out) if out else np.zeros(0)


def cross_validate(
    samples: SampleSet,
    config: TrainConfig,
    *,
    bounds: Sequence[FoldBounds] | None = None,
    on_fold: Callable[[FoldScore], None] | None = None,
) -> CVResult:
    """Purged, embargoed K-fold CV of ``config`` on the training part of ``samples`` (see
    module docs). ``on_fold`` is called after each fold (the tuner reports and prunes there:
    an exception it raises stops the CV). ``bounds`` scores on another run's folds."""
    if config.cv_folds < 2 and bounds is None:
        raise ValueError("cross_validate: config.cv_folds must be at least 2")
    started = time.perf_counter()
    part = training_part(samples, config)
    rows = fold_rows(
        part.ts,
        config.cv_folds,
        horizon_bars=config.horizon_bars,
        embargo_bars=config.embargo_bars,
        bounds=bounds,
    )
    scores: list[FoldScore] = []
    returns: list[np.ndarray] = []
    cost = config.round_trip_cost_fraction
    for number, (train_rows, test_rows, (first, last)) in enumerate(rows):
        fold_started = time.perf_counter()
        train, test = part.take(train_rows), part.take(test_rows)
        ensemble = fit_ensemble(train, config)
        probabilities, _ = ensemble.predict(test.windows)
        figures = window_scores(
            test.labels,
            probabilities,
            test.tradeable_return,
            train.labels,
            horizon_bars=config.horizon_bars,
            order=np.lexsort((test.ts, test.symbol)),
        )
        returns.append(
            after_fee_returns(
                probabilities,
                test,
                ensemble.class_forward_returns,
                round_trip_cost=cost,
                horizon_bars=config.horizon_bars,
            )
        )
        score = FoldScore(
            fold=number,
            start=str(first),
            end=str(last),
            samples=len(test),
            train_samples=len(train),
            ic=figures["ic"],
            ic_ci_low=figures["ic_ci_low"],
            ic_ci_high=figures["ic_ci_high"],
            log_loss=figures["log_loss"],
            log_loss_train_frequency=figures["log_loss_train_frequency"],
            ece=figures["ece"],
            brier=figures["brier"],
            seconds=time.perf_counter() - fold_started,
        )
        scores.append(score)
        if on_fold is not None:
            on_fold(score)
    return CVResult(
        folds=tuple(scores),
        bounds=tuple(r[2] for r in rows),
        purge_bars=config.horizon_bars,
        embargo_bars=config.embargo_bars,
        seconds=time.perf_counter() - started,
        strategy_returns=np.concatenate(returns) if returns else np.zeros(0),
    )
