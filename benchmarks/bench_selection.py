"""Tuning and feature selection (issue 17) on ONE walk-forward: the real ETH/BTC and LTC/BTC 5m
files, 3 folds of 3 test days after 6 training days each, 3 epochs (``tradeloop walk-forward
-s ETH/BTC,LTC/BTC -t 5m --folds 3 --train-days 6 --test-days 3 --epochs 3``: smaller than the
documented example so it fits a loaded shared 2-core machine), run as:

* ``defaults``: today's defaults (feature selection on, rule "ci");
* ``selection_mean``: selection with the other rule, "mean" (keep a family only when its mean
  importance is above zero);
* ``selection_off``: the same with ``feature_selection=False``;
* ``tuned``: the defaults updated with the best parameters of a small Optuna study
  (``models.tuning.run_study``: mean purged-CV IC) run on the candles BEFORE the first fold's
  test window less the purge, so no test bar of the walk-forward is seen by the study.

Each step is a separate command so they can run in separate processes:
``python -m benchmarks.bench_selection STEP`` with STEP one of setup, defaults, selection_mean,
selection_off, tune, tuned, record (no argument: all of them in turn, what ``make bench``
runs). Steps write JSON under ``$TMPDIR/tradeloop-bench-selection``; ``record`` writes the
RESULTS.md section.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from benchmarks.results import record as record_section

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "candles"
WORK = Path(tempfile.gettempdir()) / "tradeloop-bench-selection"
SYMBOLS = ("ETH/BTC", "LTC/BTC")
TIMEFRAME = "5m"
FOLDS, TRAIN_DAYS, TEST_DAYS, EPOCHS, HORIZON = 3, 6.0, 3.0, 3, 5
STUDY_TRIALS, STUDY_TIMEOUT_S = 4, 1200
# the study searches the ensemble, its training and the label thresholds; horizon and window
# length stay fixed so the tuned walk-forward is judged on the same bars and returns
STUDY_SPACE = (
    "members",
    "combine",
    "d_model",
    "lstm_hidden",
    "conv_channels",
    "dropout",
    "learning_rate",
    "gbm_max_depth",
    "gbm_estimators",
    "gbm_learning_rate",
    "threshold_scale",
    "cost_margin",
)
CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "selection_mean": {"selection_rule": "mean"},
    "selection_off": {"feature_selection": False, "importance_repeats": 0},
}


def _home() -> Path:
    return WORK / "home"


def _candles(path: Path, symbol: str) -> pa.Table:
    frame = pl.read_ipc(path).rename({"date": "ts"})
    return (
        frame.with_columns(
            pl.col("ts").dt.convert_time_zone("UTC").dt.cast_time_unit("ms"),
            exchange=pl.lit("binance"),
            symbol=pl.lit(symbol),
            timeframe=pl.lit(TIMEFRAME),
        )
        .select("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
        .to_arrow()
    )


def setup() -> None:
    """A warehouse under WORK holding the two real 5m files (once)."""
    from warehouse import Settings, connect, migrate, upsert

    if (WORK / "setup.json").is_file():
        return
    WORK.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=_home())
    con = connect(settings)
    try:
        migrate(con)
        for symbol in SYMBOLS:
            path = DATA / f"{symbol.replace('/', '_')}-{TIMEFRAME}.feather"
            upsert(con, "candles", _candles(path, symbol), settings=settings)
    finally:
        con.close()
    (WORK / "setup.json").write_text(json.dumps({"home": str(_home())}))


def _use_home() -> None:
    os.environ["TRADELOOP_HOME"] = str(_home())


def _models_of(model_ids: list[str]) -> list[dict[str, Any]]:
    """The selected features of each fold's exported model."""
    from models.runtime import model_info, open_session

    out = []
    for model_id in model_ids:
        path = next((_home() / "models" / "walk-forward").glob(f"*/{model_id}.onnx"))
        info = model_info(open_session(path), str(path))
        out.append(
            {
                "model": path.stem,
                "n_features": info.n_features,
                "selected": len(info.selected_features),
            }
        )
    return out


# a maker-fee account's costs (docs/models.md): at the default costs the models do not trade
LOW_FEE, LOW_SLIPPAGE = 0.0002, 0.0


def walk_forward(name: str, overrides: dict[str, Any], *, low_fee: bool = False) -> dict[str, Any]:
    """One walk-forward configuration; its pooled figures saved as WORK/<name>.json."""
    _use_home()
    import torch

    from flows.orchestration import direct_run
    from flows.walk_forward import walk_forward as flow

    torch.set_num_threads(1)
    started, cpu = time.perf_counter(), time.process_time()
    with direct_run(threads=1):
        report = flow(
            symbols=list(SYMBOLS),
            timeframe=TIMEFRAME,
            exchange="binance",
            folds=FOLDS,
            train_days=TRAIN_DAYS,
            test_days=TEST_DAYS,
            epochs=EPOCHS,
            horizon=int(overrides.get("horizon_bars", HORIZON)),
            train_overrides={"threads": 1, "progress": False, **overrides},
            fee=LOW_FEE if low_fee else None,
            slippage=LOW_SLIPPAGE if low_fee else None,
        )
    model_ids = list(dict.fromkeys(row["model_id"] for row in report["per_fold"]))
    pooled = {k: v for k, v in report["pooled"].items() if k != "reliability"}
    curve = [v for _, v in report.get("curves", {}).get("model", [])]
    result = {
        "name": name,
        "overrides": overrides,
        "pooled": pooled,
        "model_curve": curve,
        "per_fold": report["per_fold"],
        "skipped_folds": report["skipped_folds"],
        "models": _models_of(model_ids),
        "wall_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,
        "load": os.getloadavg(),
    }
    (WORK / f"{name}.json").write_text(json.dumps(result, default=str, indent=1))
    return result


def tune() -> dict[str, Any]:
    """A small study on the candles before the first fold's test window (less the purge)."""
    _use_home()
    import torch

    from models.data import featurize_series, split_series
    from models.training import TrainConfig
    from models.tuning import DEFAULT_SPACE, run_study
    from pipelines.resample import timeframe_ms
    from trading.loop import LoopConfig
    from trading.model_walkforward import fold_windows
    from warehouse import connect, get_settings, read_candles

    torch.set_num_threads(1)
    settings = get_settings()
    con = connect(settings, read_only=True)
    try:
        frame = pl.from_arrow(
            read_candles(con, symbols=list(SYMBOLS), timeframe=TIMEFRAME, exchange="binance")
        )
    finally:
        con.close()
    assert isinstance(frame, pl.DataFrame)
    ts_ms = frame["ts"].dt.epoch("ms")
    spans = frame.group_by("symbol").agg(
        pl.col("ts").min().dt.epoch("ms").alias("first"),
        pl.col("ts").max().dt.epoch("ms").alias("last"),
    )
    first, last = int(spans["first"].to_numpy().max()), int(spans["last"].to_numpy().min())
    windows = fold_windows(
        first,
        last,
        timeframe=TIMEFRAME,
        folds=FOLDS,
        train_days=TRAIN_DAYS,
        test_days=TEST_DAYS,
        purge_bars=HORIZON,
    )
    cutoff = windows[0].test_start_ms - HORIZON * timeframe_ms(TIMEFRAME)
    part = frame.filter(ts_ms < cutoff)
    featurized = [featurize_series(g) for g in split_series(part)]
    loop = LoopConfig.from_settings(settings, exchange="binance")
    base = TrainConfig(
        epochs=EPOCHS,
        horizon_bars=HORIZON,
        round_trip_cost_fraction=loop.costs.round_trip,
        # the study judges configurations on all features (half the cost of a trial);
        # the tuned walk-forward then runs them with selection on, as the defaults do
        feature_selection=False,
        importance_repeats=0,
        threads=1,
        progress=False,
    )
    started, cpu = time.perf_counter(), time.process_time()
    result = run_study(
        settings,
        featurized,
        base,
        study_name="bench-selection",
        n_trials=STUDY_TRIALS,
        timeout_s=STUDY_TIMEOUT_S,
        space={k: DEFAULT_SPACE[k] for k in STUDY_SPACE},
        write_defaults=False,
    )
    out = {
        "cutoff": dt.datetime.fromtimestamp(cutoff / 1000, dt.UTC).isoformat(),
        "first_test": dt.datetime.fromtimestamp(
            windows[0].test_start_ms / 1000, dt.UTC
        ).isoformat(),
        "candles": part.height,
        "trials": result.trials,
        "complete": result.complete,
        "pruned": result.pruned,
        "failed": result.failed,
        "best_trial": result.best_trial,
        "best_value": result.best_value,
        "best_params": result.best_params,
        "deflated_sharpe": result.deflated_sharpe,
        "deflated_sharpe_note": result.deflated_sharpe_note,
        "default_value": next(
            (h["value"] for h in result.history if h["number"] == 0), None
        ),  # not the defaults: trial 0 is a draw
        "wall_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,
    }
    (WORK / "tune.json").write_text(json.dumps(out, default=str, indent=1))
    return out


def tuned(*, low_fee: bool = False) -> dict[str, Any]:
    study = json.loads((WORK / "tune.json").read_text())
    if not study["best_params"]:
        raise RuntimeError("the study has no complete trial: no tuned configuration to run")
    name = "lowfee_tuned" if low_fee else "tuned"
    return walk_forward(name, dict(study["best_params"]), low_fee=low_fee)


def _paired_sharpe_difference(a: list[float], b: list[float], horizon: int) -> tuple[float, ...]:
    """Per-bar Sharpe of a minus b on the same bars (equity curves -> returns), with a
    moving-block bootstrap CI (blocks of 10 x horizon bars)."""
    ea, eb = np.asarray(a), np.asarray(b)
    if ea.size != eb.size or ea.size < 3:
        return (math.nan, math.nan, math.nan)
    ra = np.diff(np.concatenate(([1.0], ea))) / np.concatenate(([1.0], ea[:-1]))
    rb = np.diff(np.concatenate(([1.0], eb))) / np.concatenate(([1.0], eb[:-1]))

    def sharpe(r: np.ndarray) -> float:
        sd = r.std(ddof=1)
        return float(r.mean() / sd) if sd > 0 else 0.0

    point = sharpe(ra) - sharpe(rb)
    from models.metrics import block_resamples

    idx = block_resamples(ra.size, 10 * horizon, 1000, 0)
    diffs = [sharpe(ra[i]) - sharpe(rb[i]) for i in idx]
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return (point, float(lo), float(hi))


HEADER = (
    "| configuration | IC [95 % CI] | after-fee return | Sharpe [95 % CI] | deflated Sharpe "
    "| max drawdown | log-loss | selected columns per fold | CPU s |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def _row(label: str, r: dict[str, Any]) -> str:
    p, s = r["pooled"], r["pooled"].get("strategy", {})
    feats = ", ".join(f"{m['selected']}" for m in r["models"]) or "?"
    return (
        f"| {label} | {p['ic']:.4f} [{p['ic_ci_low']:.4f}, {p['ic_ci_high']:.4f}] | "
        f"{s.get('total_return', math.nan):.4f} | {s.get('sharpe', math.nan):.3f} "
        f"[{s.get('sharpe_ci_low', math.nan):.3f}, {s.get('sharpe_ci_high', math.nan):.3f}] | "
        f"{s.get('deflated_sharpe', math.nan):.3f} | {s.get('max_drawdown', math.nan):.4f} | "
        f"{p['log_loss']:.4f} | {feats} | {r['cpu_s']:.0f} |"
    )


LABELS = {
    "defaults": "defaults (selection on, rule ci, not tuned)",
    "selection_mean": "selection on, rule mean (not tuned)",
    "selection_off": "selection off (not tuned)",
    "tuned": "tuned (selection on, rule ci)",
}
COMPARISONS = (
    ("selection_off", "defaults", "selection (rule ci)"),
    ("selection_off", "selection_mean", "selection (rule mean)"),
    ("defaults", "tuned", "tuning"),
)


def _load(name: str) -> dict[str, Any] | None:
    path = WORK / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _costs_table(prefix: str) -> tuple[str, list[str], float]:
    """The table, the comparison lines and the highest load of one cost setting's runs."""
    results = {k: r for k in LABELS if (r := _load(prefix + k)) is not None}
    if not results:
        return "(not run)", [], math.nan
    rows = "\n".join(_row(LABELS[k], r) for k, r in results.items())
    first = next(iter(results.values()))["pooled"]
    bh = first.get("buy_and_hold", {})
    said = []
    paired = [
        "| comparison | IC difference | per-bar Sharpe difference [95 % CI] |",
        "|---|---|---|",
    ]
    for base, other, what in COMPARISONS:
        if base not in results or other not in results:
            continue
        a, b = results[other], results[base]
        d = _paired_sharpe_difference(a["model_curve"], b["model_curve"], HORIZON)
        pa, pb = a["pooled"], b["pooled"]
        paired.append(
            f"| {LABELS[other]} minus {LABELS[base]} | {pa['ic'] - pb['ic']:+.4f} | "
            f"{d[0]:+.5f} [{d[1]:+.5f}, {d[2]:+.5f}] |"
        )
        overlap = pa["ic_ci_low"] <= pb["ic_ci_high"] and pb["ic_ci_low"] <= pa["ic_ci_high"]
        trades = any(r["trades"] for r in a["per_fold"]) or any(r["trades"] for r in b["per_fold"])
        sharpe_text = (
            "neither places a trade, so their after-fee returns are both 0"
            if not trades
            else (
                "after fees it does better (paired Sharpe CI above zero)"
                if d[1] > 0
                else "after fees it does worse (paired Sharpe CI below zero)"
                if d[2] < 0
                else "no measurable after-fee difference (the paired Sharpe CI includes zero)"
            )
        )
        helps = (not overlap and pa["ic"] > pb["ic"]) or (trades and d[1] > 0)
        said.append(
            f"- **{what} {'helps' if helps else 'does not help'} here**: "
            f"IC {pa['ic']:.4f} vs {pb['ic']:.4f} without it "
            f"({'CIs overlap: no measurable IC difference' if overlap else 'CIs do not overlap'}); "
            f"{sharpe_text}."
        )
    table = (
        f"Buy and hold on the same bars: return {bh.get('total_return', math.nan):.4f}, "
        f"Sharpe {bh.get('sharpe', math.nan):.3f}.\n\n{HEADER}\n{rows}\n\n"
        + "\n".join(paired)
        + "\n\n"
        + "\n".join(f"- {LABELS[k]}: {r['pooled']['verdict']}." for k, r in results.items())
    )
    return table, said, max(r["load"][1] for r in results.values())


def record() -> None:
    study = _load("tune") or {}
    default_costs, said, load = _costs_table("")
    low_costs, said_low, load_low = _costs_table("lowfee_")
    units = (_load("defaults") or {}).get("pooled", {}).get("strategy", {}).get("sharpe_units")
    params = ", ".join(
        f"`{k}`={v:.4g}" if isinstance(v, float) else f"`{k}`={v}"
        for k, v in sorted(study.get("best_params", {}).items())
    )
    note = study.get("deflated_sharpe_note", "")
    record_section(
        "Tuning and feature selection (issue 17)",
        f"""
One walk-forward configuration on the real ETH/BTC and LTC/BTC 5m files, `tradeloop
walk-forward -s ETH/BTC,LTC/BTC -t 5m --folds {FOLDS} --train-days {TRAIN_DAYS:g} --test-days
{TEST_DAYS:g} --epochs {EPOCHS}` (horizon {HORIZON} bars; smaller than docs/models.md's
10-day, 5-epoch example so that every configuration fits a loaded shared machine), each
configuration run once by `python -m benchmarks.bench_selection`. Pooled over the 3 test
windows (9 days, both symbols). IC: Spearman of `p_buy - p_sell` against the next-open
tradeable return; CIs are moving-block bootstraps (EVALUATION.md). Sharpe {units}, not
annualized (the test windows are under 30 days); the deflated Sharpe counts the folds as
trials. "Selected columns per fold": the exported
models' inputs, out of the 93 columns with data (107 in the feature set). The paired table
compares per-bar Sharpe ratios of the equal-weight book on the same bars, with a block
bootstrap CI of the difference.

**At the settings' costs** (0.1 % taker fee, 0.05 % slippage and a 0.01 % half spread per
side):

{default_costs}

**At a maker-fee account's costs** (`--fee {LOW_FEE} --slippage {LOW_SLIPPAGE:g}`; labels and
decisions know the lower round trip):

{low_costs}

In plain words:

{chr(10).join(said)}
{chr(10).join(s.replace("- **", "- **(maker fee) ", 1) for s in said_low)}

The selection rule "mean" (keep a family only when its mean importance is above zero) was
the first default: its run above is that first run. It was replaced by "ci" (drop a family
only when its whole importance CI is at or below zero) after that run: the choice of the
rule has therefore seen these test windows, and the "ci" figures are not an untouched
out-of-sample estimate.

Tuning: Optuna study of {study.get("trials", 0)} trials ({study.get("complete", 0)} complete,
{study.get("pruned", 0)} pruned, {study.get("failed", 0)} failed; budget {STUDY_TRIALS} trials
or {STUDY_TIMEOUT_S} s of wall time, which the machine's load cut to those) on the
{study.get("candles", 0):,} candles before {str(study.get("cutoff", "?"))[:16]} (the first
test window starts {str(study.get("first_test", "?"))[:16]}; the {HORIZON}-bar purge between
them), so no test bar was seen. Objective: the mean IC over 3 purged folds, all features
(selection off inside the study). Searched: {", ".join(STUDY_SPACE)}. Best trial
{study.get("best_trial")} (mean fold IC {study.get("best_value", math.nan):.4f}; deflated
Sharpe {study.get("deflated_sharpe", math.nan):.3f}, {note}): {params}. The study took
{study.get("cpu_s", math.nan):.0f} CPU s. A study this small is hardly a search: read the
tuned rows as "these drawn parameters vs the defaults".

Shared 2-core machine; the 5-minute load average reached {max(load, load_low):.1f} during
the runs (other engineers' jobs). CPU seconds are each run's own process time.
""",
    )


STEPS = {
    "setup": setup,
    "defaults": lambda: walk_forward("defaults", CONFIGS["defaults"]),
    "selection_mean": lambda: walk_forward("selection_mean", CONFIGS["selection_mean"]),
    "selection_off": lambda: walk_forward("selection_off", CONFIGS["selection_off"]),
    "tune": tune,
    "tuned": tuned,
    "lowfee_defaults": lambda: walk_forward("lowfee_defaults", CONFIGS["defaults"], low_fee=True),
    "lowfee_selection_off": lambda: walk_forward(
        "lowfee_selection_off", CONFIGS["selection_off"], low_fee=True
    ),
    "lowfee_tuned": lambda: tuned(low_fee=True),
    "record": record,
}


def main(steps: list[str] | None = None) -> None:
    for step in steps or list(STEPS):
        if step != "setup":
            setup()
        STEPS[step]()


if __name__ == "__main__":
    main(sys.argv[1:])
