"""`tradeloop walk-forward`: retrain the real ensemble per fold, backtest the next window.

Folds are consecutive test windows of ``test_days`` at the end of the stored candles, oldest
first. Each fold's model is trained on the ``train_days`` before its test window, less a purge
gap of the label horizon (``train`` is injected: ``models.walk_forward.train_window`` in
production, so ``trading`` imports no torch), then run over the test window of every symbol by
``backtest --model``'s engine (``trading.model_backtest.backtest_candles``: the serving loop's
decision path, after fees and slippage), warmed on the candles before it.

Per fold and symbol, and pooled (EVALUATION.md): pooled figures CONCATENATE the folds' test
bars, never average per-fold figures.

* IC of ``p_buy - p_sell`` against the tradeable return, with its moving-block bootstrap CI;
* calibration (log-loss, ECE) against the realized classes of each model's own label rule;
* the strategy's after-fee bar returns, as one equal-weight book over the symbols, fold after
  fold: total return, Sharpe with a block-bootstrap CI, max drawdown, turnover; the same for the
  baselines (buy and hold, the RSI rule, flat, the majority class) on the same bars and costs;
* a deflated Sharpe that counts each fold as a trial (the variance of the per-fold Sharpe
  ratios stands in for the trials' spread);
* the pooled results broken down by market regime (bull / bear / sideways, high / low
  volatility: ``trading.regimes``, docs/regimes.md), and the regime-dependent rules
  (``trading.regimes.REGIME_RULES``) measured against no rule: the loop's target signals, and
  the sign of the model's score, replayed by the vectorized engine with and without each rule,
  on the same bars and costs, with a block-bootstrap CI of the difference and a deflated Sharpe
  counting every rule.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.metrics import block_bootstrap_mean, ece, log_loss, reliability_bins
from models.registry import ModelRecord
from pipelines.progress import Progress, each
from pipelines.resample import timeframe_ms
from trading.backtest import BacktestConfig
from trading.loop import LoopConfig
from trading.metrics import (
    bar_returns,
    bars_per_year,
    bootstrap_sharpe_ci,
    deflated_sharpe,
    drawdown,
    sharpe,
)
from trading.model_backtest import (
    evaluate_run,
    label_config_of,
    load_range,
    realized_classes,
    run_model,
)
from trading.model_metrics import block_bootstrap_ic, spearman, tradeable_returns
from trading.regimes import (
    REGIME_RULES,
    RegimeBook,
    add_model_run,
    rule_bar_returns,
)
from trading.report import REGIME_NOTE, line_chart, table
from trading.risk import RiskLimits

DAY_MS = 86_400_000
# the signals the regime rules are applied to: the serving loop's targets, and the model's
# expected direction alone (sign of p_buy - p_sell, flat where it did not decide), a strategy
# the loop does not run: its cost gate can hold every bar, and a rule then changes nothing
LOOP_SIGNALS = "loop"
SCORE_SIGNALS = "score sign"
BASELINES = ("buy_and_hold", "rsi_rule", "flat", "majority_class")
MIN_ANNUALIZED_DAYS = 30.0


@dataclass(frozen=True, slots=True)
class FoldWindow:
    """Times in epoch ms; training ``[train_start, train_end)``, test ``[test_start, test_end)``."""

    number: int
    train_start_ms: int
    train_end_ms: int
    test_start_ms: int
    test_end_ms: int

    def describe(self) -> str:
        def day(ms: int) -> str:
            return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")

        return (
            f"fold {self.number}: train {day(self.train_start_ms)}..{day(self.train_end_ms)}, "
            f"test {day(self.test_start_ms)}..{day(self.test_end_ms)}"
        )


def fold_windows(
    first_ms: int,
    last_ms: int,
    *,
    timeframe: str,
    folds: int,
    train_days: float,
    test_days: float,
    purge_bars: int,
) -> list[FoldWindow]:
    """``folds`` consecutive test windows ending with the newest candle (``last_ms``, an open
    time); each trains on the ``train_days`` before it, less ``purge_bars`` bars."""
    if folds < 1 or train_days <= 0 or test_days <= 0:
        raise ValueError("walk-forward needs folds >= 1, train_days > 0 and test_days > 0")
    step = timeframe_ms(timeframe)
    test_ms, train_ms = int(test_days * DAY_MS), int(train_days * DAY_MS)
    end = last_ms + step
    out = []
    for k in range(folds):
        test_end = end - (folds - 1 - k) * test_ms
        test_start = test_end - test_ms
        train_end = test_start - purge_bars * step
        train_start = train_end - train_ms
        if train_start < first_ms:
            have = (end - first_ms) / DAY_MS
            need = (folds * test_ms + train_ms + purge_bars * step) / DAY_MS
            raise ValueError(
                f"{folds} folds of {test_days:g} test days after {train_days:g} training days "
                f"need {need:.1f} days of candles; the warehouse holds {have:.1f}: "
                "lower --folds, --train-days or --test-days"
            )
        out.append(FoldWindow(k + 1, train_start, train_end, test_start, test_end))
    return out


@dataclass
class _Pieces:
    """What the pooled figures are computed from (concatenated over folds and symbols)."""

    score: list[np.ndarray] = dataclasses.field(default_factory=list)
    realized: list[np.ndarray] = dataclasses.field(default_factory=list)
    labels: list[np.ndarray] = dataclasses.field(default_factory=list)
    probabilities: list[np.ndarray] = dataclasses.field(default_factory=list)
    # per strategy name: ts -> bar returns of every symbol's account at that bar
    returns: dict[str, dict[int, list[float]]] = dataclasses.field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    turnover: list[float] = dataclasses.field(default_factory=list)
    regimes: RegimeBook = dataclasses.field(default_factory=RegimeBook)
    # per (signals, regime rule): ts -> bar returns of every symbol's replay at that bar
    rules: dict[tuple[str, str], dict[int, list[float]]] = dataclasses.field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )


def _book(by_ts: dict[int, list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """(ts, equal-weight bar return over the symbols trading at that bar), in time order."""
    ts = np.array(sorted(by_ts), dtype=np.int64)
    return ts, np.array([float(np.mean(by_ts[int(t)])) for t in ts])


def _strategy_figures(
    returns: np.ndarray, timeframe: str, horizon_bars: int, n_folds: int, fold_sharpes: list[float]
) -> dict[str, Any]:
    """Total return, Sharpe with a block-bootstrap CI, deflated Sharpe and max drawdown of a
    pooled bar-return series. The Sharpe is annualized only when the bars span at least
    ``MIN_ANNUALIZED_DAYS`` (EVALUATION.md); else it is per bar (``sharpe_units`` says which)."""
    per_year = bars_per_year(timeframe)
    span_days = returns.size * timeframe_ms(timeframe) / DAY_MS
    scale = per_year if span_days >= MIN_ANNUALIZED_DAYS else 1.0
    equity = np.cumprod(1.0 + returns)
    lo, hi = bootstrap_sharpe_ci(returns, scale, n_boot=1000, block=max(10 * horizon_bars, 1))
    variance = float(np.var(fold_sharpes, ddof=1)) if len(fold_sharpes) > 1 else None
    return {
        "total_return": float(equity[-1] - 1.0) if equity.size else 0.0,
        "sharpe": sharpe(returns, scale),
        "sharpe_ci_low": lo,
        "sharpe_ci_high": hi,
        "sharpe_units": "annualized" if scale != 1.0 else "per bar",
        "deflated_sharpe": deflated_sharpe(returns, max(n_folds, 1), variance),
        "max_drawdown": float(drawdown(equity).min()) if equity.size else 0.0,
        "bars": int(returns.size),
        "days": span_days,
    }


def walk_forward_model(
    con: Any,
    *,
    symbols: Sequence[str],
    timeframe: str,
    exchange: str,
    folds: Sequence[FoldWindow],
    train: Callable[[FoldWindow], ModelRecord],
    config: LoopConfig,
    on_fold: Callable[[FoldWindow, dict[str, Any]], None] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train per fold, backtest every symbol's test window, and measure (module docs)."""
    pieces = _Pieces()
    rows: list[dict[str, Any]] = []
    fold_sharpes: list[float] = []  # per bar, one per fold and symbol: the trials' spread
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    horizon = config.default_horizon_bars
    skipped: list[dict[str, Any]] = []
    for fold in each(folds, "walk-forward (folds)", progress):
        try:
            record = train(fold)
        except ValueError as exc:  # e.g. a window too short to hold every class: say so, go on
            skipped.append({"fold": fold.number, "reason": str(exc)})
            if on_fold is not None:
                on_fold(fold, {"rows": [], "skipped": str(exc)})
            continue
        fold_rows = []
        for symbol in symbols:
            candles, start = load_range(
                con,
                symbol,
                timeframe,
                exchange,
                start_ms=fold.test_start_ms,
                end_ms=fold.test_end_ms,
            )
            run = run_model(candles, record, config, start=start)
            horizon = run.horizon_bars
            label_config = label_config_of(record.hyperparameters, horizon)
            labels = realized_classes(candles, label_config)[start:]
            summary, base_results = evaluate_run(run, labels, config, label_config=label_config)
            has = run.inference.has_model
            probs = run.inference.probabilities
            score = (probs[:, 0] - probs[:, 2])[has]
            pieces.score.append(score)
            pieces.realized.append(tradeable_returns(run.candles.open, horizon)[has])
            known = has & np.isfinite(labels)
            pieces.labels.append(labels[known].astype(np.int64))
            pieces.probabilities.append(probs[known])
            ts = run.candles.ts_ms
            strategy = bar_returns(run.equity, config.initial_cash)
            fold_sharpes.append(sharpe(strategy, 1.0))
            for t, r in zip(ts, strategy, strict=True):
                pieces.returns["model"][int(t)].append(float(r))
            pieces.turnover.append(float(summary.get("turnover") or 0.0))
            base = summary["baselines"]
            row = {
                "fold": fold.number,
                "symbol": symbol,
                "model_id": record.model_id,
                "test_start": _iso(fold.test_start_ms),
                "test_end": _iso(fold.test_end_ms),
                "bars": int(len(ts)),
                "ic": summary["ic"],  # NaN when the score never varies (no ranking at all)
                "score_std": float(np.std(score)) if score.size else 0.0,
                "ic_ci_low": summary["ic_ci_low"],
                "ic_ci_high": summary["ic_ci_high"],
                "ece": summary["ece"],
                "log_loss": summary["log_loss"],
                "total_return": summary["total_return"],
                # annualized only over 30 days or more (EVALUATION.md), as the pooled figure
                "sharpe": _strategy_figures(strategy, timeframe, horizon, 1, [])["sharpe"],
                "max_drawdown": summary["max_drawdown"],
                "trades": summary["trades"],
                "model_trades": summary["model_trades"],
                "fallback_trades": summary["fallback_trades"],
                "turnover": summary.get("turnover"),
                **{f"{name}_return": base[name]["total_return"] for name in BASELINES},
            }
            for name in BASELINES:
                equity = np.asarray(base_results[name].equity, dtype=np.float64)
                for t, r in zip(ts, bar_returns(equity, config.initial_cash), strict=True):
                    pieces.returns[name][int(t)].append(float(r))
            _add_regimes(pieces, candles, start, run, base_results, config)
            rows.append(row)
            fold_rows.append(row)
        if on_fold is not None:
            on_fold(fold, {"rows": fold_rows, "model_id": record.model_id})
    if not rows:
        reasons = "; ".join(f"fold {s['fold']}: {s['reason']}" for s in skipped)
        raise ValueError(f"walk-forward: no fold could be trained ({reasons})")
    pooled = _pooled(pieces, fold_sharpes, timeframe, horizon, len(folds) - len(skipped), curves)
    return {
        "symbols": list(symbols),
        "timeframe": timeframe,
        "exchange": exchange,
        "folds": [dataclasses.asdict(f) for f in folds],
        "fee_fraction": config.fees.taker_fraction,
        "slippage_fraction": config.slippage_fraction,
        "round_trip_cost_fraction": config.costs.round_trip,
        "horizon_bars": horizon,
        "per_fold": rows,
        "skipped_folds": skipped,
        "pooled": pooled,
        "regimes": pieces.regimes.rows(horizon_bars=horizon),
        "regime_rules": _rule_rows(pieces, timeframe, horizon),
        "curves": {k: v for k, v in curves.items()},
    }


def _add_regimes(
    pieces: _Pieces,
    candles: Any,
    start: int,
    run: Any,
    base_results: dict[str, Any],
    config: LoopConfig,
) -> None:
    """One symbol's test window into the regime book and the regime rules' replays."""
    hold = np.asarray(base_results["buy_and_hold"].equity, dtype=np.float64)
    trend, vol = add_model_run(pieces.regimes, candles, start, run, hold, config.initial_cash)
    probs = run.inference.probabilities
    score = np.nan_to_num(probs[:, 0] - probs[:, 2], nan=0.0)
    for signals, signal in (
        (LOOP_SIGNALS, run.signal),
        (SCORE_SIGNALS, np.sign(score).astype(np.int8)),
    ):
        replays = rule_bar_returns(run.candles, signal, trend, vol, base_config(config))
        for rule, returns in replays.items():
            for t, r in zip(run.candles.ts_ms, returns, strict=True):
                pieces.rules[signals, rule][int(t)].append(float(r))


def base_config(config: LoopConfig) -> BacktestConfig:
    """The vectorized engine's settings of the baselines (``evaluate_run``): same costs."""
    return BacktestConfig(
        initial_cash=config.initial_cash,
        fees=config.fees,
        slippage_fraction=config.slippage_fraction,
        limits=RiskLimits(allow_short=config.limits.allow_short),
    )


def _rule_rows(pieces: _Pieces, timeframe: str, horizon: int) -> list[dict[str, Any]]:
    """Per signal source, each regime rule's pooled book (replayed signals) against no rule's
    on the same bars: figures, the mean per-bar difference in bps with its block-bootstrap
    CI, a verdict. The deflated Sharpe counts every (signals, rule) pair as a trial."""
    keys = [(s, r) for s in (LOOP_SIGNALS, SCORE_SIGNALS) for r in REGIME_RULES]
    books = {k: _book(pieces.rules[k]) for k in keys if k in pieces.rules}
    per_bar = [sharpe(r, 1.0) for _, r in books.values()]
    block = max(10 * horizon, 1)
    rows = []
    for (signals, rule), (_, returns) in books.items():
        figures = _strategy_figures(returns, timeframe, horizon, len(books), per_bar)
        diff = (returns - books[signals, "none"][1]) * 1e4
        lo, hi = block_bootstrap_mean(diff, block=block, n_boot=1000)
        if rule == "none":
            verdict = "the reference"
        elif math.isfinite(lo) and lo > 0:
            verdict = "helps: the difference's CI excludes zero"
        elif math.isfinite(hi) and hi < 0:
            verdict = "hurts: the difference's CI excludes zero"
        else:
            verdict = "no measurable difference"
        rows.append(
            {
                "signals": signals,
                "rule": rule,
                "total_return": figures["total_return"],
                "sharpe": figures["sharpe"],
                "sharpe_ci_low": figures["sharpe_ci_low"],
                "sharpe_ci_high": figures["sharpe_ci_high"],
                "sharpe_units": figures["sharpe_units"],
                "deflated_sharpe": figures["deflated_sharpe"],
                "max_drawdown": figures["max_drawdown"],
                "vs_none_bps_per_bar": float(np.mean(diff)) if diff.size else math.nan,
                "vs_none_ci_low": lo,
                "vs_none_ci_high": hi,
                "verdict": verdict,
            }
        )
    return rows


def _pooled(
    pieces: _Pieces,
    fold_sharpes: list[float],
    timeframe: str,
    horizon: int,
    n_folds: int,
    curves: dict[str, list[tuple[int, float]]],
) -> dict[str, Any]:
    score = np.concatenate(pieces.score) if pieces.score else np.empty(0)
    realized = np.concatenate(pieces.realized) if pieces.realized else np.empty(0)
    labels = np.concatenate(pieces.labels) if pieces.labels else np.empty(0, np.int64)
    probs = np.concatenate(pieces.probabilities) if pieces.probabilities else np.empty((0, 3))
    lo, hi = block_bootstrap_ic(score, realized, horizon_bars=horizon, n_boot=1000, seed=0)
    pooled: dict[str, Any] = {
        "ic": spearman(score, realized),
        "ic_ci_low": lo,
        "ic_ci_high": hi,
        "ic_bars": int((np.isfinite(score) & np.isfinite(realized)).sum()),
        "ece": ece(labels, probs),
        "log_loss": log_loss(labels, probs),
        "reliability": reliability_bins(labels, probs).to_dict(),
        "turnover": float(np.mean(pieces.turnover)) if pieces.turnover else 0.0,
    }
    for name in ("model", *BASELINES):
        if name not in pieces.returns:
            continue
        ts, returns = _book(pieces.returns[name])
        figures = _strategy_figures(returns, timeframe, horizon, n_folds, fold_sharpes)
        if name != "model":
            figures.pop("deflated_sharpe")
        pooled["strategy" if name == "model" else name] = figures
        curves[name] = list(zip(ts.tolist(), np.cumprod(1.0 + returns).tolist(), strict=True))
    ic_ok = math.isfinite(lo) and lo > 0
    sharpe_lo = pooled.get("strategy", {}).get("sharpe_ci_low", math.nan)
    pooled["verdict"] = (
        "the IC's CI excludes zero" if ic_ok else "no measurable edge: the IC's CI includes zero"
    ) + (
        "; after-fee Sharpe's CI excludes zero"
        if math.isfinite(sharpe_lo) and sharpe_lo > 0
        else "; no measurable after-fee edge: the Sharpe's CI includes zero"
    )
    return pooled


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


# ---------------------------------------------------------------- the HTML report


def _bar_chart(title: str, labels: list[str], values: list[float], width: int = 900) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return f"<h3>{html.escape(title)}</h3><p>(no data)</p>"
    top = max(max(abs(v) for v in finite), 1e-9)
    h, mid, bar_w = 200, 100, max(8, (width - 80) // max(len(values), 1) - 6)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h + 40}" role="img">'
        f"<title>{html.escape(title)}</title>",
        f'<line x1="60" y1="{mid}" x2="{width - 10}" y2="{mid}" stroke="#999"/>',
    ]
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        x = 70 + i * (bar_w + 6)
        size = 0.0 if not math.isfinite(v) else abs(v) / top * (mid - 10)
        y = mid - size if v >= 0 else mid
        parts.append(
            f'<rect x="{x}" y="{y:.1f}" width="{bar_w}" height="{size:.1f}" '
            f'fill="{"#2ca02c" if v >= 0 else "#d62728"}"><title>{html.escape(label)}: '
            f"{v:.4f}</title></rect>"
            f'<text x="{x}" y="{h + 15}" font-size="10">{html.escape(label)}</text>'
        )
    parts.append("</svg>")
    return f"<h3>{html.escape(title)}</h3>" + "".join(parts)


def _reliability_chart(bins: dict[str, Any], size: int = 320) -> str:
    """Predicted-class probability (x) against how often that class happened (y), per bin."""
    pad = 40
    inner = size - 2 * pad
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" role="img">'
        "<title>Reliability diagram</title>",
        f'<rect x="{pad}" y="{pad}" width="{inner}" height="{inner}" fill="none" stroke="#ccc"/>',
        f'<line x1="{pad}" y1="{pad + inner}" x2="{pad + inner}" y2="{pad}" stroke="#999" '
        'stroke-dasharray="4"/>',
    ]
    for conf, acc, n in zip(bins["mean_confidence"], bins["accuracy"], bins["count"], strict=True):
        if conf is None or acc is None:
            continue
        x, y = pad + conf * inner, pad + (1 - acc) * inner
        r = 2 + min(8.0, math.log1p(n))
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="#1f77b4">'
            f"<title>confidence {conf:.3f}, hit rate {acc:.3f}, n={n}</title></circle>"
        )
    parts.append(
        f'<text x="{pad}" y="{size - 8}" font-size="11">predicted probability</text>'
        f'<text x="4" y="{pad - 8}" font-size="11">observed frequency</text></svg>'
    )
    return "<h3>Reliability diagram (pooled test bars)</h3>" + "".join(parts)


def write_walk_forward_report(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """``report.html`` (equity curves, reliability diagram, IC per fold) and ``report.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "report.json", directory / "report.html"
    json_path.write_text(json.dumps(report, indent=1, default=str))
    pooled = report["pooled"]
    curves = report["curves"]
    rows = [
        {"measure": k, "value": pooled[k]}
        for k in ("ic", "ic_ci_low", "ic_ci_high", "ic_bars", "ece", "log_loss", "turnover")
    ]
    strategies = [
        {"strategy": name, **pooled[key]}
        for name, key in [("model", "strategy")] + [(b, b) for b in BASELINES]
        if key in pooled
    ]
    parts = [
        "<!doctype html><meta charset='utf-8'><title>walk-forward</title>",
        f"<h1>Walk-forward: {html.escape(', '.join(report['symbols']))} "
        f"{html.escape(report['timeframe'])}</h1>",
        f"<p>{len(report['folds'])} folds; fee {report['fee_fraction']} and slippage "
        f"{report['slippage_fraction']} per side; round trip {report['round_trip_cost_fraction']}"
        f". {html.escape(pooled['verdict'])}.</p>",
        "<h2>Pooled out-of-sample measures</h2>",
        table(rows),
        "<h2>Pooled strategy after costs, against the baselines</h2>",
        table(strategies),
        *_regime_sections(report),
    ]
    if "model" in curves:
        ts = [t for t, _ in curves["model"]]
        series: dict[str, list[float | None]] = {}
        for name, points in curves.items():
            by_ts = dict(points)
            series[name] = [by_ts.get(t) for t in ts]
        parts.append(line_chart("Equity (pooled book, fold after fold)", ts, series))
    parts.append(_reliability_chart(pooled["reliability"]))
    labels = [f"{r['fold']} {r['symbol']}" for r in report["per_fold"]]
    parts.append(
        _bar_chart("IC per fold and symbol", labels, [r["ic"] for r in report["per_fold"]])
    )
    parts.append("<h2>Per fold</h2>")
    parts.append(table(report["per_fold"]))
    html_path.write_text("\n".join(parts))
    return html_path, json_path


def _regime_sections(report: dict[str, Any]) -> list[str]:
    """The walk-forward page's regime tables (docs/regimes.md)."""
    parts: list[str] = []
    if report.get("regimes"):
        parts += [
            "<h2>Pooled results by market regime</h2>",
            f"<p>{REGIME_NOTE}</p>",
            table(report["regimes"]),
        ]
    if report.get("regime_rules"):
        parts += [
            "<h2>Regime-dependent rules, measured</h2>",
            "<p>The loop's target signals, and the sign of the model's score (a strategy the "
            "loop does not run), replayed by the vectorized engine (full size, same costs) with "
            "each rule and without (<code>none</code>); the difference per bar of the pooled "
            "book in bps with its moving-block bootstrap CI. A rule helps only when that CI "
            "excludes zero; the deflated Sharpe counts every rule as a trial.</p>",
            table(report["regime_rules"]),
        ]
    return parts
