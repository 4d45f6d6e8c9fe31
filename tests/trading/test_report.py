"""A report (HTML with plots + JSON of every figure) for each real shared data file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.data import REAL_CANDLE_FILES as CANDLE_FILES
from trading.backtest import BacktestConfig
from trading.evaluation import evaluate_file, figures
from trading.report import write_report


@pytest.mark.parametrize("name", CANDLE_FILES)
def test_report_for_each_real_file(candles_dir: Path, settings, name: str) -> None:  # type: ignore[no-untyped-def]
    ev = evaluate_file(candles_dir / name, BacktestConfig())
    summary = ev["summary"]
    html_path, json_path = write_report(
        Path(name).stem, summary, figures(ev), settings.home / "reports"
    )
    assert html_path.parent == settings.home / "reports" / Path(name).stem
    text = html_path.read_text()
    for title in (
        "equity against the baselines",
        "drawdown from the running peak",
        "Rolling out-of-sample accuracy",
        "Confusion matrix",
        "Walk-forward folds",
        "Stress scenarios, replayed with the RSI rule",
    ):
        assert title in text
    # one plotly chart each: candles with trades, equity, drawdown, accuracy, confusion matrix
    for chart in ("price", "equity", "drawdown", "accuracy", "confusion"):
        assert f'id="chart-{chart}"' in text
    doc = json.loads(json_path.read_text())
    figs = doc["figures"]
    assert set(figs["equity"]["series"]) == {
        "strategy",
        "buy_and_hold",
        "rsi_rule",
        "majority_class",
    }
    assert len(figs["folds"]) >= 3
    assert len(figs["price"]["exits"]) == summary["trades"]
    assert {r["scenario"] for r in figs["stress"]} >= {"crash_30pct", "outage_gap"}
    assert sum(map(sum, figs["confusion_matrix"]["matrix"])) == summary["classification"]["n"]
    assert summary["engines_max_equity_diff"] <= 1e-9
    for key in (
        "total_return",
        "sharpe",
        "max_drawdown",
        "trades",
        "sharpe_ci_low",
        "deflated_sharpe",
    ):
        assert key in doc["summary"]
