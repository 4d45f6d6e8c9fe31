"""A full evaluation of one symbol: strategy, baselines, metrics, walk-forward, stress -> report.

Baselines in every evaluation, with the same fees, slippage and execution:
``buy_and_hold``; ``rsi_rule`` (the live loop's fallback); ``majority_class``: at each bar, the
most frequent label class among labels already resolved by that bar (label of row i is known
at i + horizon), held as a position (buy: long, sell: short or flat, hold: flat).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipelines.labels import LabelConfig, make_labels
from trading.backtest import (
    BacktestConfig,
    BacktestResult,
    Candles,
    SignalSeries,
    buy_and_hold,
    load_candle_file,
    run_event_driven,
    run_vectorized,
)
from trading.decision import RsiRule, Thresholds, rsi_rule_signals, signals_from_probabilities
from trading.metrics import classification_metrics, drawdown, performance
from trading.stress import run_stress
from trading.walkforward import (
    logistic_fit_predict,
    run_walk_forward,
    simple_features,
    walk_forward_folds,
)
from warehouse.readers import read_candles


def labels_for(candles: Candles, horizon_bars: int = 5) -> np.ndarray:
    frame = pl.DataFrame({"ts": candles.ts_ms, "close": candles.close})
    lab = make_labels(frame, LabelConfig(horizon_bars=horizon_bars, vol_window_bars=30))
    return lab["label"].to_numpy().astype(np.float64)  # NaN where unknown


def majority_class_signals(labels: np.ndarray, horizon_bars: int, allow_short: bool) -> np.ndarray:
    """Causal majority class: counts of labels resolved by each bar (row i known at i+h)."""
    n = labels.size
    onehot = np.zeros((n, 3))
    ok = ~np.isnan(labels)
    onehot[np.flatnonzero(ok), labels[ok].astype(int)] = 1.0
    counts = np.cumsum(onehot, axis=0)
    known = np.zeros((n, 3))
    known[horizon_bars:] = counts[: n - horizon_bars]
    cls = np.where(known.sum(axis=1) > 0, known.argmax(axis=1), 1)
    sig = np.select([cls == 0, cls == 2], [1, -1 if allow_short else 0], 0)
    return sig.astype(np.int8)


def summarize(result: BacktestResult, n_trials: int = 1, n_boot: int = 300) -> dict[str, Any]:
    perf = performance(
        result.equity,
        initial_cash=result.initial_cash,
        timeframe=result.timeframe,
        trades=result.trades,
        units=result.units,
        fees_paid=result.fees_paid,
        traded_notional=result.traded_notional,
        n_trials=n_trials,
        n_boot=n_boot,
    )
    out = perf.as_dict()
    out["stop_exits"] = result.stop_exits
    out["kill_switch_bar"] = result.kill_switch_bar
    return out


def baselines(
    candles: Candles, config: BacktestConfig, horizon_bars: int = 5
) -> dict[str, BacktestResult]:
    allow_short = config.limits.allow_short
    rsi_sig = SignalSeries.of(rsi_rule_signals(candles.close, RsiRule(allow_short=allow_short)))
    maj = SignalSeries.of(
        majority_class_signals(labels_for(candles, horizon_bars), horizon_bars, allow_short)
    )
    return {
        "buy_and_hold": buy_and_hold(candles, config),
        "rsi_rule": run_vectorized(candles, rsi_sig, config),
        "majority_class": run_vectorized(candles, maj, config),
    }


def evaluate_signals(
    candles: Candles,
    signals: SignalSeries,
    config: BacktestConfig,
    *,
    strategy: str = "signals",
    n_trials: int = 1,
) -> dict[str, Any]:
    """Backtest one symbol's signals (event-driven engine) with every baseline."""
    result = run_event_driven(candles, signals, config)
    base = baselines(candles, config)
    summary = summarize(result, n_trials)
    summary.update(
        symbol=candles.symbol,
        timeframe=candles.timeframe,
        strategy=strategy,
        fee_fraction=config.fees.taker_fraction,
        slippage_fraction=config.slippage_fraction,
        first_ts_ms=int(candles.ts_ms[0]) if len(candles) else None,
        last_ts_ms=int(candles.ts_ms[-1]) if len(candles) else None,
    )
    summary["baselines"] = {k: summarize(v) for k, v in base.items()}
    from trading.regimes import signal_run_regimes

    summary["regimes"] = signal_run_regimes(candles, result, base["buy_and_hold"])
    return {"summary": summary, "result": result, "baseline_results": base, "candles": candles}


def evaluate_file(
    path: str | Path,
    config: BacktestConfig,
    *,
    horizon_bars: int = 5,
    folds: int = 4,
    thresholds: Thresholds | None = None,
) -> dict[str, Any]:
    """Walk-forward a (scikit-learn) model on one real candle file, with baselines and stress."""
    candles = load_candle_file(path)
    frame = pl.DataFrame(
        {
            "ts": candles.ts_ms.astype("datetime64[ms]"),
            "open": candles.open,
            "high": candles.high,
            "low": candles.low,
            "close": candles.close,
        }
    )
    frame, cols = simple_features(frame)
    frame = frame.with_columns(label=pl.Series(labels_for(candles, horizon_bars)).fill_nan(None))
    n = len(candles)
    train = max(n // (folds + 1), 100)
    test = max((n - train) // folds, 1)
    fs = walk_forward_folds(
        n, train_bars=train, test_bars=test, mode="expanding", purge_bars=horizon_bars
    )
    wf = run_walk_forward(frame, logistic_fit_predict(cols), fs, label_horizon_bars=horizon_bars)
    th = thresholds or Thresholds(0.4, 0.4, 0.4)
    start = int(wf.test_rows[0])
    oos = candles.slice(start, n)
    sig = signals_from_probabilities(wf.probabilities, None, th)
    signals = SignalSeries.of(sig, wf.probabilities.max(axis=1))
    ev = evaluate_signals(oos, signals, config, strategy="walk_forward_logistic")
    vec = run_vectorized(oos, signals, config)
    ev["summary"]["engines_max_equity_diff"] = float(np.abs(vec.equity - ev["result"].equity).max())
    y = frame["label"].cast(pl.Float64).fill_null(np.nan).to_numpy()[wf.test_rows]
    ok = ~np.isnan(y)
    pred = wf.probabilities.argmax(axis=1)
    ev["summary"]["classification"] = classification_metrics(y[ok].astype(int), pred[ok])
    ev["folds"] = wf.fold_metrics
    correct = np.where(ok, (pred == np.nan_to_num(y, nan=-1)).astype(float), np.nan)
    win = max(50, len(correct) // 50)
    ev["rolling_accuracy"] = pl.Series(correct).rolling_mean(win, min_samples=win // 2).to_numpy()
    ev["stress"] = run_stress(oos, lambda c: SignalSeries.of(rsi_rule_signals(c.close)), config)
    ev["stress_strategy"] = "replayed with the RSI rule (event-driven engine)"
    return ev


def figures(ev: dict[str, Any], max_points: int = 1500) -> dict[str, Any]:
    """Every figure's data (downsampled series) for the HTML report and its JSON twin."""
    res: BacktestResult = ev["result"]
    step = max(1, len(res.equity) // max_points)
    ts = [int(t) for t in res.ts_ms[::step]]
    eq = {"strategy": res.equity[::step].tolist()}
    for k, v in ev["baseline_results"].items():
        eq[k] = v.equity[::step].tolist()
    dd = drawdown(np.concatenate(([res.initial_cash], res.equity)))[1:]
    figs: dict[str, Any] = {
        "equity": {"ts_ms": ts, "series": eq},
        "drawdown": {"ts_ms": ts, "series": {"strategy": dd[::step].tolist()}},
    }
    if "candles" in ev:
        from trading.report_plots import price_data  # plotly: only where a report is drawn

        figs["price"] = price_data(ev["candles"], res)
    if "rolling_accuracy" in ev:
        ra = ev["rolling_accuracy"][::step]
        figs["rolling_accuracy"] = {
            "ts_ms": ts,
            "series": {"accuracy": [None if np.isnan(x) else float(x) for x in ra]},
        }
    if "classification" in ev["summary"]:
        figs["confusion_matrix"] = {
            "labels": ["buy", "hold", "sell"],
            "matrix": ev["summary"]["classification"]["confusion_matrix"],
        }
    if "folds" in ev:
        figs["folds"] = [
            {k: v for k, v in f.items() if k != "confusion_matrix"} for f in ev["folds"]
        ]
    if "stress" in ev:
        figs["stress"] = ev["stress"]
        figs["stress_strategy"] = ev.get("stress_strategy")
    return figs


def load_warehouse_candles(
    con: Any, symbol: str, timeframe: str, exchange: str | None = None
) -> Candles:
    """One symbol's candles from the warehouse ``candles`` table (time-sorted)."""
    frame = pl.from_arrow(
        read_candles(con, symbols=[symbol], timeframe=timeframe, exchange=exchange or None)
    )
    assert isinstance(frame, pl.DataFrame)
    if frame.height == 0:
        raise LookupError(
            f"no candles in the warehouse for {symbol} {timeframe}"
            + (f" on {exchange}" if exchange else "")
        )
    return Candles.from_frame(frame, symbol, timeframe)


def signal_backtest(
    candles: Candles,
    signals_path: str | Path,
    config: BacktestConfig,
    *,
    n_trials: int = 1,
    reports_dir: Path | None = None,
    report_name: str | None = None,
    exchange: str | None = None,
) -> dict[str, Any]:
    """Backtest an external signal file on ``candles``; optionally write the report.

    ``exchange`` names where the candles are stored (the report's title names the series).

    Returns the summary dict (JSON-ready) with ``report_html`` / ``report_json`` paths.
    """
    from trading.report import write_report
    from trading.signals_io import align_signals, read_signal_file

    signals = align_signals(read_signal_file(signals_path), candles)
    ev = evaluate_signals(
        candles, signals, config, strategy=Path(signals_path).name, n_trials=n_trials
    )
    ev["stress"] = run_stress(candles, lambda c: _realign(signals_path, c), config)
    ev["stress_strategy"] = "replayed with your signals (event-driven engine)"
    summary = ev["summary"]
    if exchange:
        summary["exchange"] = exchange
    if reports_dir is not None:
        name = report_name or f"{candles.symbol.replace('/', '_')}-{candles.timeframe}-signals"
        html_path, json_path = write_report(name, summary, figures(ev), reports_dir)
        summary["report_html"], summary["report_json"] = str(html_path), str(json_path)
    return summary


def _realign(signals_path: str | Path, candles: Candles) -> SignalSeries:
    from trading.signals_io import align_signals, read_signal_file

    return align_signals(read_signal_file(signals_path), candles)
