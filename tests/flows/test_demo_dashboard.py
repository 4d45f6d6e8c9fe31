"""The demo's closing dashboard shows the figures a user needs, baseline beside the model."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from rich.console import Console

from flows.demo import DemoSummary, dashboard, orders_verdict


def _render(summary: DemoSummary) -> str:
    console = Console(record=True, width=160)
    console.print(dashboard(summary))
    return console.export_text()


def _served(tmp_path: Path) -> DemoSummary:
    """A demo that trained, served and walked forward."""
    return DemoSummary(
        model_id="signal-v2-abc",
        promoted=True,
        accuracy=0.412,
        accuracy_change=0.031,
        f1_macro=0.377,
        baseline_accuracy=0.545,
        baseline_f1_macro=0.235,
        confidence_mean=0.61,
        train_samples=9415,
        trained_at=dt.datetime(2026, 11, 25, 6, 0, tzinfo=dt.UTC),
        trend=[("signal-v1-x", 0.381, 0.35), ("signal-v2-abc", 0.412, 0.377)],
        counts={"candles": 100, "features": 100, "models": 2, "predictions": 10},
        pnl_quote=-10.54,
        decisions={"model: hold class": 70, "model: edge below cost": 40, "model: buy": 10},
        report_html=tmp_path / "report.html",
        walk_forward_ic=(0.052, 0.011, 0.094),
        walk_forward_verdict="the IC's CI excludes zero",
        data_docs=tmp_path / "docs" / "index.html",
        warehouse_home=tmp_path,
        elapsed_s=12.0,
    )


def test_dashboard_shows_model_baseline_pnl_and_paths(tmp_path: Path) -> None:
    summary = _served(tmp_path)
    text = _render(summary)
    for expected in (
        "signal-v2-abc (champion)",
        "41.2%",
        "+3.1% vs previous champion",
        "0.377",
        "majority class: accuracy 54.5%",
        "0.235",
        "9,415",
        "-10.54",
        "120 bars: model: hold class 70, model: edge below cost 40, model: buy 10",
        "report.html",
        "IC 0.052 [0.011, 0.094] out of sample; the IC's CI excludes zero",
        "index.html",
        "tradeloop sql",
    ):
        assert expected in text, f"{expected!r} missing from the dashboard:\n{text}"


def test_dashboard_says_when_serving_did_not_run(tmp_path: Path) -> None:
    summary = DemoSummary(
        model_id=None, promoted=False, accuracy=None, accuracy_change=None, f1_macro=None,
        baseline_accuracy=None, baseline_f1_macro=None, confidence_mean=None, train_samples=0,
        trained_at=None, trend=[], counts={}, pnl_quote=None, decisions={}, report_html=None,
        walk_forward_ic=None, walk_forward_verdict=None, data_docs=None,
        warehouse_home=tmp_path, elapsed_s=1.0,
    )  # fmt: skip
    text = _render(summary)
    assert "serving not run" in text
    assert "n/a" in text


def test_the_demo_summary_artifact_carries_the_figures(tmp_path: Path) -> None:
    from flows.demo import summary_rows

    summary = DemoSummary(
        model_id="signal-v1-x", promoted=False, accuracy=0.412, accuracy_change=None,
        f1_macro=0.377, baseline_accuracy=0.545, baseline_f1_macro=None, confidence_mean=0.61,
        train_samples=9415, trained_at=None, trend=[], counts={"candles": 100},
        pnl_quote=-10.54, decisions={"model: buy": 3, "model: hold class": 7},
        report_html=None, walk_forward_ic=(0.052, 0.011, 0.094), walk_forward_verdict=None,
        data_docs=None, warehouse_home=tmp_path, elapsed_s=12.0,
        quality_report=tmp_path / "quality.html",
    )  # fmt: skip
    rows = {r["figure"]: r["value"] for r in summary_rows(summary)}
    assert rows["model"] == "signal-v1-x (challenger)" and rows["accuracy"] == "0.412"
    assert rows["accuracy change vs previous champion"] == "\u2014"  # first model: none
    assert rows["majority-class F1 (macro)"] == "\u2014"
    assert rows["paper P&L (quote)"] == "-10.54" and rows["served bars"] == "10"
    assert rows["walk-forward IC [95 % CI]"] == "0.052 [0.011, 0.094]"
    assert rows["candles rows"] == "100"
    assert "Quality report" in _render(summary) and "quality.html" in _render(summary)


def test_the_demo_serves_each_series_on_an_account_of_its_own() -> None:
    from flows.pipeline import series_account

    # `make demo` then `tradeloop demo --data DIR` on one home: the second run's series must
    # not meet the first one's account state (a resume of another series is refused).
    assert series_account("simulated", "BTC/USDT") == "paper-simulated-BTC_USDT"
    assert series_account("file", "ETH/BTC") != series_account("simulated", "BTC/USDT")
    assert series_account("file", "XRP/USDT:USDT") == "paper-file-XRP_USDT_USDT"


def test_a_run_without_orders_says_why(tmp_path: Path) -> None:
    summary = dataclasses.replace(
        _served(tmp_path),
        counts={"candles": 100, "predictions": 120, "orders": 0, "fills": 0},
        decisions={"model: hold class": 94, "model: confidence below gate": 26},
    )
    assert orders_verdict(summary) == (
        "none in 120 served bars (most decided by model: hold class: 94); the model orders "
        "only where its expected edge clears costs and its gates (see Walk-forward)"
    )
    text = " ".join(_render(summary).split())
    assert "Orders none in 120 served bars" in text, text

    summary.counts["orders"] = 3  # orders placed: no such row
    assert "Orders none" not in " ".join(_render(summary).split())
