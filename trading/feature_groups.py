"""What each feature group adds: a walk-forward ablation over feature groups (issue 15, item 4).

The groups (``pipelines.features.groups``: candles, multi-timeframe, order book/trades,
funding/basis, sentiment) are added one at a time, in that order: "candles only", "+
multi-timeframe", and so on. For each step the ensemble is retrained per fold on exactly the
columns of the groups so far, with feature selection off (the comparison is of the groups
themselves). ``fit`` is injected (the benchmark passes ``models.training.fit_ensemble``), so
``trading`` imports no torch, as in ``trading.model_walkforward``.

Each fold trains on its training window and is judged on its test window (``FoldWindow``:
contiguous, a purge of the label horizon between them). Pooled over folds (test bars
concatenated, never per-fold figures averaged; EVALUATION.md), per step:

* **permutation importance** of the added group on the test bars (out of sample): the mean
  increase of the per-bar log-loss when the group's columns are shuffled together across bars
  (``models.metrics.permutation_increase``), with a moving-block bootstrap CI;
* **IC** of ``p_buy - p_sell`` against the tradeable return (next open to the open ``h`` bars
  later) with its block-bootstrap CI, and the difference with the step before (without the
  group) with a paired block-bootstrap CI: both models score the SAME bars;
* **after fees**, two strategies read off the probabilities and replayed per symbol by the
  vectorized engine (``trading.backtest.run_vectorized``) at the given costs, as one
  equal-weight book: ``edge`` (long when the expected tradeable return ``p . r`` exceeds the
  round-trip cost, short when it is below minus that cost, where the limits allow shorts, flat
  otherwise; ``r``: the model's mean tradeable return per true class on its validation part)
  and ``sign`` (the sign of ``p_buy - p_sell``: always in the market, the regime rules'
  "score sign"). Total return, Sharpe with its CI, and the mean per-bar difference with the
  step before in bps with a block-bootstrap CI. The serving loop's own decision path
  (confidence gate, adaptive thresholds, protections) is not run here: at the settings' costs
  it placed no trade in the walk-forwards of benchmarks/RESULTS.md.

Every step is measured on the same samples: a bar is a sample when the windows of all the
columns that have data are finite, whichever of them the step uses. A group whose columns have
no value in the data (no order book collected, no funding rates, no headlines) is reported
"not measurable on this data" and skipped; the next group is compared with the last measured
step.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from models.data import SampleSet
from models.metrics import (
    block_bootstrap_ic,
    block_bootstrap_ic_difference,
    block_bootstrap_mean,
    log_loss,
    permutation_increase,
    spearman,
)
from pipelines.features.groups import GROUPS, columns_of, group_columns
from pipelines.progress import Progress, each
from trading.backtest import BacktestConfig, Candles, SignalSeries, buy_and_hold, run_vectorized
from trading.metrics import bar_returns, sharpe
from trading.model_walkforward import FoldWindow, _book, _strategy_figures

STRATEGIES = ("edge", "sign")


class GroupModel(Protocol):
    """A model fit on one step's columns: calibrated [buy, hold, sell] probabilities for raw
    windows over those columns, and its mean tradeable return per true class (None: unknown)."""

    @property
    def class_forward_returns(self) -> tuple[float, float, float] | None: ...

    def probabilities(self, windows: np.ndarray) -> np.ndarray: ...


Fit = Callable[[SampleSet], GroupModel]


def select_columns(samples: SampleSet, columns: Sequence[str]) -> SampleSet:
    """``samples`` with only ``columns`` (in that order) as the model's inputs."""
    missing = [c for c in columns if c not in samples.feature_columns]
    if missing:
        raise ValueError(f"select_columns: the samples have no columns {missing}")
    index = [samples.feature_columns.index(c) for c in columns]
    return dataclasses.replace(
        samples,
        windows=np.ascontiguousarray(samples.windows[:, :, index]),
        feature_columns=tuple(columns),
        all_feature_columns=tuple(columns),
    )


def edge_signals(
    probabilities: np.ndarray, class_returns: tuple[float, float, float] | None, cost: float
) -> np.ndarray:
    """+1 where ``p . class_returns`` exceeds ``cost``, -1 where it is below ``-cost``, else 0
    (all 0 without class returns)."""
    if class_returns is None:
        return np.zeros(len(probabilities), dtype=np.int8)
    expected = np.asarray(probabilities, dtype=np.float64) @ np.asarray(class_returns, np.float64)
    return (np.where(expected > cost, 1, 0) - np.where(expected < -cost, 1, 0)).astype(np.int8)


def sign_signals(probabilities: np.ndarray) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float64)
    return np.sign(np.nan_to_num(p[:, 0] - p[:, 2])).astype(np.int8)


class _Step:
    """What one step's pooled figures are computed from (test bars of every fold)."""

    def __init__(self) -> None:
        self.score: list[np.ndarray] = []
        self.realized: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.probabilities: list[np.ndarray] = []
        self.importance: list[np.ndarray] = []
        self.returns: dict[str, dict[int, list[float]]] = {s: defaultdict(list) for s in STRATEGIES}
        self.fold_sharpes: dict[str, list[float]] = {s: [] for s in STRATEGIES}
        self.trades: dict[str, int] = {s: 0 for s in STRATEGIES}


def _ms(ts: np.ndarray) -> np.ndarray:
    return np.asarray(ts).astype("datetime64[ms]").astype(np.int64)


def _window(samples: SampleSet, start_ms: int, end_ms: int) -> SampleSet:
    ts = _ms(samples.ts)
    part = samples.take(np.flatnonzero((ts >= start_ms) & (ts < end_ms)))
    return part.take(np.lexsort((part.ts, part.symbol)))  # symbol by symbol, in time order


def _backtest(
    step: _Step,
    probabilities: np.ndarray,
    test: SampleSet,
    candles: Mapping[str, Candles],
    fold: FoldWindow,
    model: GroupModel,
    config: BacktestConfig,
    cost: float,
) -> None:
    """Each symbol's test window replayed with each strategy's signals into ``step``."""
    signals = {
        "edge": edge_signals(probabilities, model.class_forward_returns, cost),
        "sign": sign_signals(probabilities),
    }
    test_ms = _ms(test.ts)
    for symbol, series in candles.items():
        ts = series.ts_ms
        bars = series.slice(
            int(np.searchsorted(ts, fold.test_start_ms)), int(np.searchsorted(ts, fold.test_end_ms))
        )
        if len(bars) == 0:
            continue
        rows = np.flatnonzero(test.symbol == symbol)
        at = np.searchsorted(bars.ts_ms, test_ms[rows])
        for name, signal in signals.items():
            per_bar = np.zeros(len(bars), dtype=np.int8)  # no sample (warm-up, data end): flat
            per_bar[at] = signal[rows]
            result = run_vectorized(bars, SignalSeries.of(per_bar), config)
            returns = bar_returns(result.equity, config.initial_cash)
            step.fold_sharpes[name].append(sharpe(returns, 1.0))
            step.trades[name] += len(result.trades)
            for t, r in zip(bars.ts_ms, returns, strict=True):
                step.returns[name][int(t)].append(float(r))


def _hold_returns(
    candles: Mapping[str, Candles], folds: Sequence[FoldWindow], config: BacktestConfig
) -> dict[int, list[float]]:
    out: dict[int, list[float]] = defaultdict(list)
    for fold in folds:
        for series in candles.values():
            ts = series.ts_ms
            bars = series.slice(
                int(np.searchsorted(ts, fold.test_start_ms)),
                int(np.searchsorted(ts, fold.test_end_ms)),
            )
            if len(bars) == 0:
                continue
            equity = buy_and_hold(bars, config).equity
            for t, r in zip(bars.ts_ms, bar_returns(equity, config.initial_cash), strict=True):
                out[int(t)].append(float(r))
    return out


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0)


def _verdict(lo: float, hi: float, what: str) -> str:
    if math.isfinite(lo) and lo > 0:
        return f"{what} higher (CI above zero)"
    if math.isfinite(hi) and hi < 0:
        return f"{what} lower (CI below zero)"
    return f"no measurable {what} difference"


def feature_group_ablation(
    samples: SampleSet,
    candles: Mapping[str, Candles],
    *,
    folds: Sequence[FoldWindow],
    fit: Fit,
    config: BacktestConfig,
    round_trip_cost: float,
    horizon_bars: int,
    groups: Sequence[str] = GROUPS,
    importance_repeats: int = 2,
    n_boot: int = 1000,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The ablation of the module docs over ``groups`` (added in that order).

    ``samples``: every column with data (``models.data.assemble_samples``), of the symbols in
    ``candles`` (each symbol's candles, for the after-fee replays). Returns plain data: the
    columns per group, one row per step (``steps``), buy and hold on the same bars, the folds
    and the folds skipped (a fold whose training window cannot be fit is skipped for every
    step, so all steps keep the same bars). Raises ValueError when no fold can be fit."""
    defined = group_columns(samples.serving_columns)
    present = group_columns(samples.feature_columns)
    ladder: list[tuple[str, tuple[str, ...]]] = []  # (group, columns so far) of measured steps
    steps_out: list[dict[str, Any]] = []
    for group in groups:
        if not present[group]:
            absent = defined[group]
            steps_out.append(
                {
                    "group": group,
                    "measurable": False,
                    "reason": "not measurable on this data: "
                    + (
                        f"its {len(absent)} columns have no value in it"
                        if absent
                        else "the data has none of its columns"
                    ),
                    "columns": list(absent),
                }
            )
            continue
        so_far = tuple(g for g, _ in ladder) + (group,)
        ladder.append((group, columns_of(so_far, samples.feature_columns)))
    if not ladder:
        raise ValueError("feature-group ablation: no group has any column with data")
    pieces = [_Step() for _ in ladder]
    skipped: list[dict[str, Any]] = []
    rng = np.random.default_rng(seed)
    for fold in each(folds, "feature groups (folds)", progress):
        train = _window(samples, fold.train_start_ms, fold.train_end_ms)
        test = _window(samples, fold.test_start_ms, fold.test_end_ms)
        if len(train) == 0 or len(test) == 0:
            skipped.append(
                {"fold": fold.number, "reason": "no samples in its train or test window"}
            )
            continue
        try:
            models = [fit(select_columns(train, columns)) for _, columns in ladder]
        except ValueError as exc:  # e.g. a class missing from the training window
            skipped.append({"fold": fold.number, "reason": str(exc)})
            continue
        for (group, columns), model, step in zip(ladder, models, pieces, strict=True):
            windows = select_columns(test, columns).windows
            probs = model.probabilities(windows)
            step.probabilities.append(probs)
            step.score.append(probs[:, 0] - probs[:, 2])
            step.realized.append(test.tradeable_return)
            step.labels.append(test.labels)
            if importance_repeats > 0:
                index = [columns.index(c) for c in present[group] if c in columns]
                step.importance.append(
                    permutation_increase(
                        model.probabilities,
                        windows,
                        test.labels,
                        index,
                        repeats=importance_repeats,
                        rng=rng,
                    )
                )
            _backtest(step, probs, test, candles, fold, model, config, round_trip_cost)
    used = [f for f in folds if f.number not in {s["fold"] for s in skipped}]
    if not used:
        reasons = "; ".join(f"fold {s['fold']}: {s['reason']}" for s in skipped)
        raise ValueError(f"feature-group ablation: no fold could be fit ({reasons})")
    block = max(10 * horizon_bars, 1)
    measured: list[dict[str, Any]] = []
    for k, ((group, columns), step) in enumerate(zip(ladder, pieces, strict=True)):
        score, realized = _concat(step.score), _concat(step.realized)
        labels = _concat(step.labels).astype(np.int64)
        lo, hi = block_bootstrap_ic(score, realized, horizon_bars=horizon_bars, n_boot=n_boot)
        importance = _concat(step.importance)
        imp_lo, imp_hi = block_bootstrap_mean(importance, block=block, n_boot=n_boot, seed=seed)
        row: dict[str, Any] = {
            "group": group,
            "measurable": True,
            "reason": None,
            "columns": list(present[group]),
            "inputs": len(columns),
            "ic": spearman(score, realized),
            "ic_ci_low": lo,
            "ic_ci_high": hi,
            "test_bars": int(score.size),
            "log_loss": log_loss(labels, np.concatenate(step.probabilities)),
            "importance": float(importance.mean()) if importance.size else math.nan,
            "importance_ci_low": imp_lo,
            "importance_ci_high": imp_hi,
            "strategies": {},
            "versus": None,
        }
        books = {name: _book(step.returns[name]) for name in STRATEGIES}
        for name, (_, returns) in books.items():
            row["strategies"][name] = _strategy_figures(
                returns, _timeframe(candles), horizon_bars, len(used), step.fold_sharpes[name]
            ) | {"trades": step.trades[name]}
        row["_books"] = books
        if k > 0:
            before, before_row = pieces[k - 1], measured[k - 1]
            d_lo, d_hi = block_bootstrap_ic_difference(
                score,
                _concat(before.score),
                realized,
                horizon_bars=horizon_bars,
                n_boot=n_boot,
                seed=seed,
            )
            row["versus"] = before_row["group"]
            row["ic_difference"] = row["ic"] - before_row["ic"]
            row["ic_difference_ci_low"], row["ic_difference_ci_high"] = d_lo, d_hi
            verdicts = [_verdict(d_lo, d_hi, "IC")]
            row["after_fee_difference"] = {}
            for name in STRATEGIES:
                diff = (books[name][1] - before_row["_books"][name][1]) * 1e4
                a_lo, a_hi = block_bootstrap_mean(diff, block=block, n_boot=n_boot, seed=seed)
                row["after_fee_difference"][name] = {
                    "bps_per_bar": float(diff.mean()) if diff.size else math.nan,
                    "ci_low": a_lo,
                    "ci_high": a_hi,
                }
                verdicts.append(f"{name}: " + _verdict(a_lo, a_hi, "after-fee return"))
            row["verdict"] = "; ".join(verdicts)
        else:
            row["verdict"] = (
                "the reference; its IC's CI excludes zero"
                if math.isfinite(lo) and (lo > 0 or hi < 0)
                else "the reference; no measurable edge: its IC's CI includes zero"
            )
        measured.append(row)
    for row in measured:
        row.pop("_books")
    by_group = {r["group"]: r for r in measured}
    _, hold = _book(_hold_returns(candles, used, config))
    return {
        "groups": list(groups),
        "columns": {g: list(c) for g, c in present.items()},
        "steps": [by_group.get(g) or next(s for s in steps_out if s["group"] == g) for g in groups],
        "buy_and_hold": _strategy_figures(hold, _timeframe(candles), horizon_bars, 1, []),
        "folds": [{"fold": f.number, "describe": f.describe()} for f in folds],
        "skipped_folds": skipped,
        "horizon_bars": horizon_bars,
        "round_trip_cost_fraction": round_trip_cost,
        "fee_fraction": config.fees.taker_fraction,
        "slippage_fraction": config.slippage_fraction,
        "samples": len(samples),
    }


def _timeframe(candles: Mapping[str, Candles]) -> str:
    frames = {c.timeframe for c in candles.values()}
    if len(frames) != 1:
        raise ValueError(f"feature-group ablation: candles of several timeframes {sorted(frames)}")
    return frames.pop()
