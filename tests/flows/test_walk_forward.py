"""`tradeloop walk-forward` on a real file: the ensemble retrained per purged fold, each next
window backtested through the serving decision path; the report's fields and files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from flows.orchestration import direct_run
from pipelines.importers import read_candles as read_candle_file
from tests.support.models import TINY
from warehouse import Settings, connect, migrate, upsert

SYMBOLS = ("ETH/BTC", "LTC/BTC")


@pytest.fixture
def settings(tmp_path: Path, candles_dir: Path) -> Settings:
    settings = Settings(home=tmp_path / "home")
    con = connect(settings)
    migrate(con)
    for pair in ("ETH_BTC", "LTC_BTC"):
        table, _ = read_candle_file(candles_dir / f"{pair}-5m.feather", exchange="file")
        upsert(con, "candles", table)
    con.close()
    return settings


def test_walk_forward_on_real_files_reports_every_measure(settings: Settings) -> None:
    from flows.walk_forward import walk_forward

    overrides = TINY.model_dump(
        exclude={"epochs", "horizon_bars", "max_samples", "round_trip_cost_fraction"}
    )
    with direct_run():
        report = walk_forward(
            symbols=None,  # every stored symbol of the one stored timeframe
            folds=2,
            train_days=3.0,
            test_days=1.0,
            epochs=1,
            horizon=5,
            max_samples=700,
            train_overrides=overrides,
        )
    assert report["symbols"] == list(SYMBOLS) and report["timeframe"] == "5m"
    # purged folds, oldest first, the last ending with the newest candle; no training bar at or
    # after its test window (the gap is the label horizon)
    folds = report["folds"]
    assert [f["number"] for f in folds] == [1, 2]
    for f in folds:
        assert f["test_start_ms"] - f["train_end_ms"] == 5 * 300_000
        assert f["test_end_ms"] - f["test_start_ms"] == 86_400_000
    assert folds[0]["test_end_ms"] == folds[1]["test_start_ms"]
    assert report["skipped_folds"] == []
    assert len(report["per_fold"]) == 4  # 2 folds x 2 symbols
    for row in report["per_fold"]:
        assert row["bars"] == 288  # one day of 5m bars, every bar decided
        for key in ("ece", "log_loss", "total_return"):
            assert math.isfinite(row[key]), (key, row)
        if row["score_std"] > 0:  # a model that never varies its score ranks nothing: NaN IC
            assert row["ic_ci_low"] <= row["ic"] <= row["ic_ci_high"], row
        else:
            assert math.isnan(row["ic"]), row
        assert row["trades"] == row["model_trades"] + row["fallback_trades"]
    pooled = report["pooled"]
    assert pooled["ic_bars"] > 0 and pooled["ic_ci_low"] <= pooled["ic"] <= pooled["ic_ci_high"]
    for name in ("strategy", "buy_and_hold", "rsi_rule", "flat", "majority_class"):
        figures = pooled[name]
        assert figures["bars"] == 2 * 288, name  # the pooled book: one return per bar
        assert figures["sharpe_units"] == "per bar"  # 2 days: nothing annualized
        assert figures["max_drawdown"] <= 0.0
    assert pooled["flat"]["total_return"] == 0.0
    assert 0.0 <= pooled["strategy"]["deflated_sharpe"] <= 1.0 or math.isnan(
        pooled["strategy"]["deflated_sharpe"]
    )
    assert "no measurable" in pooled["verdict"] or "excludes zero" in pooled["verdict"]
    html = Path(report["report_html"]).read_text()
    for title in ("Equity (pooled book", "Reliability diagram", "IC per fold and symbol"):
        assert title in html
    saved = json.loads(Path(report["report_json"]).read_text())
    assert saved["pooled"]["ic"] == pytest.approx(pooled["ic"])
    models = sorted((settings.home / "models" / "walk-forward").glob("*/*.onnx"))
    assert [m.name.rsplit("-", 1)[1] for m in models] == ["fold1.onnx", "fold2.onnx"]
