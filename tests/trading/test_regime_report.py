"""Results broken down by market regime (``trading.regimes``, docs/regimes.md): the walk-forward
report's per-regime rows and measured regime rules, the backtest report's regime table, and
the bookkeeping that attributes each bar, trade and IC pair to the regime that decided it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from models.registry import ModelRecord, register_model
from pipelines.features import FEATURE_SET_VERSION
from tests.trading.serve_support import (
    SYMBOL,
    candle_table,
    candles,
    momentum_model,
    real_frame,
)
from trading.loop import LoopConfig
from trading.model_backtest import backtest_candles
from trading.model_walkforward import fold_windows, walk_forward_model, write_walk_forward_report
from trading.regimes import REGIME_RULES, RegimeBook, apply_rule
from warehouse import Settings, upsert

EXCHANGE = "binance"
PAIRS = [f"{t} / {v}" for t in ("bull", "sideways", "bear") for v in ("high vol", "low vol")]


def test_each_bar_trade_and_ic_pair_counts_in_the_regime_that_decided_it() -> None:
    book = RegimeBook()
    nan = math.nan
    # decision bar i: its next bar's return, the trades it opened; bar 0's own return belongs
    # to the decision before the window and is not counted
    book.add(
        symbol="A",
        trend=np.array([1.0, 1.0, 0.0, -1.0, nan]),
        vol=np.array([1.0, 0.0, 0.0, 0.0, 0.0]),
        score=np.array([0.1, 0.2, nan, 0.4, 0.5]),
        realized=np.array([0.01, 0.02, 0.03, nan, nan]),
        strategy_returns=np.array([0.5, 0.10, -0.05, 0.02, 0.01]),
        hold_returns=np.array([0.0, 0.01, 0.01, 0.01, 0.01]),
        units=np.array([0.0, 1.0, 1.0, 0.0, 0.0]),
        trade_bars=[0, 0, 2],
        trade_won=[True, False, True],
    )
    book.add(  # a second symbol in the same regimes: returns compound per symbol, then average
        symbol="B",
        trend=np.array([1.0, 0.0]),
        vol=np.array([1.0, 0.0]),
        score=np.array([nan, nan]),
        realized=np.array([nan, nan]),
        strategy_returns=np.array([0.0, 0.3]),
        hold_returns=np.array([0.0, 0.0]),
        units=np.array([0.0, 1.0]),
        trade_bars=[],
        trade_won=[],
    )
    rows = {r["regime"]: r for r in book.rows(horizon_bars=1, n_boot=50)}
    assert list(rows) == [
        "bull",
        "sideways",
        "bear",
        "high vol",
        "low vol",
        "bull / high vol",
        "bull / low vol",
        "sideways / low vol",
        "bear / low vol",
        "unknown",
    ]
    bull = rows["bull"]
    assert bull["bars"] == 3 and bull["share"] == pytest.approx(3 / 7)
    assert bull["trades"] == 2 and bull["hit_rate"] == 0.5
    # A: bars 0, 1 -> next returns 0.10, -0.05; B: bar 0 -> 0.3; mean over the two symbols
    assert bull["return"] == pytest.approx(((1.10 * 0.95 - 1) + 0.3) / 2)
    assert bull["mean_return_bps"] == pytest.approx((0.10 - 0.05 + 0.3) / 3 * 1e4)
    assert bull["exposure"] == 1.0  # a position is held in each bar after the bull decisions
    assert bull["ic_bars"] == 2 and math.isnan(bull["ic"])  # under three pairs: no IC
    assert rows["sideways"]["trades"] == 1 and rows["sideways"]["hit_rate"] == 1.0
    assert rows["sideways"]["bars"] == 2  # A bar 2, B bar 1 (whose next return is unknown)
    assert rows["sideways"]["return"] == pytest.approx(0.02)  # A only: B has no next bar
    assert rows["unknown"]["bars"] == 1 and math.isnan(rows["unknown"]["return"])
    # the pairs and unknown partition the bars
    assert sum(rows[k]["bars"] for k in rows if " / " in k or k == "unknown") == 7


def test_regime_rules_use_only_the_regime_at_the_decision() -> None:
    trend = np.array([1.0, 0.0, -1.0, math.nan, 0.0])
    vol = np.array([1.0, 0.0, 1.0, 0.0, math.nan])
    signal = np.array([1, 1, 1, 1, 1], dtype=np.int8)
    size = np.ones(5)
    assert apply_rule("none", signal, size, trend, vol)[0].tolist() == [1, 1, 1, 1, 1]
    assert apply_rule("flat when sideways", signal, size, trend, vol)[0].tolist() == [
        1,
        0,
        1,
        1,
        0,
    ]
    assert apply_rule("flat when bear", signal, size, trend, vol)[0].tolist() == [1, 1, 0, 1, 1]
    assert apply_rule("flat in low vol", signal, size, trend, vol)[0].tolist() == [1, 0, 1, 0, 1]
    s, z = apply_rule("half size in high vol", signal, size, trend, vol)
    assert s.tolist() == [1] * 5 and z.tolist() == [0.5, 1.0, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="unknown regime rule"):
        apply_rule("flat on mondays", signal, size, trend, vol)


def test_walk_forward_report_has_per_regime_rows(
    settings: Settings, lake: object, tmp_path: Path
) -> None:
    """A real ONNX model (momentum on logret_1) over two folds of real 1m candles."""
    upsert(lake, "candles", candle_table(real_frame(3000), EXCHANGE), settings=settings)  # type: ignore[arg-type]
    record = register_model(
        lake,  # type: ignore[arg-type]
        settings,
        momentum_model(tmp_path / "momentum.onnx"),
        feature_set_version=FEATURE_SET_VERSION,
        training_snapshot_id=None,
        hyperparameters={},
        metrics={},
    )
    first, last = lake.execute(  # type: ignore[attr-defined]
        "SELECT epoch_ms(min(ts)), epoch_ms(max(ts)) FROM candles"
    ).fetchone()
    folds = fold_windows(
        first, last, timeframe="1m", folds=2, train_days=0.5, test_days=0.25, purge_bars=5
    )
    report = walk_forward_model(
        lake,
        symbols=[SYMBOL],
        timeframe="1m",
        exchange=EXCHANGE,
        folds=folds,
        train=lambda fold: record,
        config=LoopConfig(exchange=EXCHANGE),
    )
    rows = {r["regime"]: r for r in report["regimes"]}
    bars = sum(r["bars"] for r in report["per_fold"])
    assert {"bull", "sideways", "bear", "high vol", "low vol"} <= set(rows)
    parts = [k for k in rows if k in PAIRS or k == "unknown"]
    assert sum(rows[k]["bars"] for k in parts) == bars
    assert sum(rows[k]["share"] for k in parts) == pytest.approx(1.0)
    assert sum(rows[k]["trades"] for k in parts) == sum(r["trades"] for r in report["per_fold"])
    # one symbol: the regimes' compounded returns multiply to the pooled strategy's (each
    # fold's first bar, decided before the window, is flat)
    product = math.prod(1.0 + rows[k]["return"] for k in parts if math.isfinite(rows[k]["return"]))
    assert product == pytest.approx(1.0 + report["pooled"]["strategy"]["total_return"], rel=1e-9)
    for name in ("bull", "sideways", "bear", "high vol", "low vol"):
        r = rows[name]
        assert 0.0 <= r["exposure"] <= 1.0 and r["ic_bars"] <= r["bars"]
        if math.isfinite(r["ic_ci_low"]):
            assert r["ic_ci_low"] <= r["ic"] <= r["ic_ci_high"], r
        lo, hi = r["mean_return_bps_ci_low"], r["mean_return_bps_ci_high"]
        assert not math.isfinite(lo) or lo <= r["mean_return_bps"] <= hi, r
    rules = {(r["signals"], r["rule"]): r for r in report["regime_rules"]}
    assert list(rules) == [(s, r) for s in ("loop", "score sign") for r in REGIME_RULES]
    for signals in ("loop", "score sign"):
        assert rules[signals, "none"]["vs_none_bps_per_bar"] == 0.0
        assert rules[signals, "none"]["verdict"] == "the reference"
    for r in rules.values():
        assert math.isfinite(r["total_return"]) and r["max_drawdown"] <= 0.0
        assert r["verdict"] in (
            "the reference",
            "no measurable difference",
            "helps: the difference's CI excludes zero",
            "hurts: the difference's CI excludes zero",
        )
    html_path, json_path = write_walk_forward_report(report, tmp_path / "wf")
    html = html_path.read_text()
    assert "Pooled results by market regime" in html and "Regime-dependent rules" in html
    assert all(name in html for name in ("bull", "sideways", "bear", "high vol", "low vol"))
    saved = json.loads(json_path.read_text())
    assert [r["regime"] for r in saved["regimes"]] == list(rows)


def _unregistered(path: Path) -> ModelRecord:
    return ModelRecord(
        model_id="momentum",
        version=1,
        name="signal",
        created_at=dt.datetime.now(dt.UTC),
        feature_set_version=FEATURE_SET_VERSION,
        training_snapshot_id=None,
        hyperparameters={},
        metrics={},
        onnx_path=path,
        onnx_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        status="champion",
        promoted_at=None,
    )


def test_backtest_report_breaks_results_down_by_regime(tmp_path: Path) -> None:
    """``backtest --model``'s summary and HTML report: the same rows for one run."""
    bars = candles(2500)
    record = _unregistered(momentum_model(tmp_path / "momentum.onnx"))
    summary, run = backtest_candles(
        bars, record, LoopConfig(), start=1000, reports_dir=tmp_path / "reports"
    )
    rows = {r["regime"]: r for r in summary["regimes"]}
    assert {"bull", "sideways", "bear", "high vol", "low vol"} <= set(rows)
    parts = [k for k in rows if k in PAIRS or k == "unknown"]
    assert sum(rows[k]["bars"] for k in parts) == len(run.candles) == 1500
    assert sum(rows[k]["trades"] for k in parts) == summary["trades"]
    product = math.prod(1.0 + rows[k]["return"] for k in parts if math.isfinite(rows[k]["return"]))
    assert product == pytest.approx(1.0 + summary["total_return"], rel=1e-9)
    html = Path(summary["report_html"]).read_text()
    assert "Results by market regime" in html and "bull / high vol" in html
    saved = json.loads(Path(summary["report_json"]).read_text())
    assert [r["regime"] for r in saved["summary"]["regimes"]] == list(rows)


def test_signal_backtest_report_breaks_results_down_by_regime(tmp_path: Path) -> None:
    """``backtest --signals``: the same rows for a signal file's run over the whole candles
    (the labels' warm-up is ``unknown``; a signal file has no score, so no IC)."""
    from trading.backtest import BacktestConfig, SignalSeries
    from trading.decision import RsiRule, rsi_rule_signals
    from trading.evaluation import evaluate_signals, figures
    from trading.report import write_report

    bars = candles(2000)
    signals = SignalSeries.of(rsi_rule_signals(bars.close, RsiRule()))
    ev = evaluate_signals(bars, signals, BacktestConfig())
    summary = ev["summary"]
    rows = {r["regime"]: r for r in summary["regimes"]}
    parts = [k for k in rows if k in PAIRS or k == "unknown"]
    assert rows["unknown"]["bars"] >= 779  # the volatility label's warm-up
    assert sum(rows[k]["bars"] for k in parts) == len(bars)
    assert sum(rows[k]["trades"] for k in parts) == summary["trades"] > 0
    product = math.prod(1.0 + rows[k]["return"] for k in parts if math.isfinite(rows[k]["return"]))
    assert product == pytest.approx(1.0 + summary["total_return"], rel=1e-9)
    assert all(math.isnan(r["ic"]) and r["ic_bars"] == 0 for r in rows.values())
    html_path, _ = write_report("signals", summary, figures(ev), tmp_path)
    assert "Results by market regime" in html_path.read_text()
