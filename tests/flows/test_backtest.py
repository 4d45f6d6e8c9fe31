"""`tradeloop backtest` and the `backtest` flow on real candles stored in the warehouse."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from warehouse import Settings, upsert

# the scikit-learn GBM member alone, small: real training code per fold, in seconds
FAST_GBM: dict[str, Any] = {
    "window_len": 8,
    "members": ["gbm"],
    "gbm_estimators": 10,
    "importance_repeats": 0,
    "progress": False,
    "threads": 1,
}


def _store_real_candles(
    lake: duckdb.DuckDBPyConnection, settings: Settings, candles_dir: Path
) -> pl.DataFrame:
    frame = pl.read_ipc(candles_dir / "XRP_ETH-5m.feather").rename({"date": "ts"})
    frame = frame.with_columns(
        pl.col("ts").dt.cast_time_unit("ms"),
        exchange=pl.lit("binance"),
        symbol=pl.lit("XRP/ETH"),
        timeframe=pl.lit("5m"),
    ).select("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
    upsert(lake, "candles", frame.to_arrow())
    return frame


def _signal_file(frame: pl.DataFrame, path: Path) -> Path:
    sig = ((np.arange(frame.height) // 50) % 2 == 0).astype(np.int64)  # long 50 bars, flat 50
    pl.DataFrame({"ts": frame["ts"], "symbol": "XRP/ETH", "signal": sig.astype(np.int64)}).filter(
        pl.col("signal").diff().fill_null(1) != 0  # only the changes: the rest is carried
    ).write_parquet(path)
    return path


@pytest.fixture
def env(lake, settings, candles_dir, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    frame = _store_real_candles(lake, settings, candles_dir)
    lake.close()
    monkeypatch.setenv("TRADELOOP_HOME", str(settings.home))  # clears the settings cache
    return frame, _signal_file(frame, tmp_path / "sig.parquet"), settings


def _run(args: list[str]) -> dict:  # type: ignore[type-arg]
    from flows.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_cli_backtest_json_and_cost_deltas(env) -> None:  # type: ignore[no-untyped-def]
    frame, sig_path, settings = env
    common = [
        "backtest",
        "--signals",
        str(sig_path),
        "--timeframe",
        "5m",
        "--format",
        "json",
        "--max-position",
        "0.5",
        "--no-report",
    ]
    free = _run([*common, "--fee", "0", "--slippage", "0"])
    costly = _run([*common, "--fee", "0.001", "--slippage", "0.0005"])
    for key in ("total_return", "sharpe", "max_drawdown", "trades", "win_rate", "turnover"):
        assert key in free
    assert set(free["baselines"]) == {"buy_and_hold", "rsi_rule", "majority_class"}
    assert free["trades"] == costly["trades"] >= 1
    assert free["trades"] == 7  # 706 bars: long from bars 1, 101, ..., 601 (next-bar opens)
    assert costly["total_return"] < free["total_return"]
    assert costly["fees_paid"] > 0 and free["fees_paid"] == 0


def test_cli_names_the_bad_row(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from flows.cli import app

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "ts,symbol,signal\n2019-10-11T00:00:00Z,XRP/ETH,1\n2019-10-11T00:05:00Z,XRP/ETH,2\n"
    )
    result = CliRunner().invoke(app, ["backtest", "--signals", str(bad), "--timeframe", "5m"])
    assert result.exit_code == 1
    assert "bad.csv row 1 (line 3), column 'signal'" in result.output


def test_backtest_flow_writes_report_and_artifact(env, prefect_server: None) -> None:  # type: ignore[no-untyped-def]
    from prefect.artifacts import Artifact

    from flows.backtest import backtest

    frame, sig_path, settings = env
    summary = backtest(str(sig_path), "XRP/ETH", "5m")
    html = Path(summary["report_html"])
    assert html.exists() and html.is_relative_to(settings.home / "reports")
    assert Path(summary["report_json"]).exists()
    artifact = Artifact.get("backtest-report")
    assert artifact is not None and html.as_uri() in str(artifact.data)


def test_walk_forward_retrains_with_the_models_training_code(
    candles_dir: Path, prefect_server: None
) -> None:
    """Real training code per fold (the scikit-learn GBM member keeps it fast); the fold
    checks guarantee no training sample at or after the test start."""
    from flows.backtest import walk_forward
    from models.data import build_samples
    from models.training import TrainConfig
    from pipelines.labels import LabelConfig

    frame = pl.read_ipc(candles_dir / "ETH_BTC-5m.feather").rename({"date": "ts"}).head(1500)
    frame = frame.with_columns(
        exchange=pl.lit("x"), symbol=pl.lit("ETH/BTC"), timeframe=pl.lit("5m")
    )
    config = TrainConfig(horizon_bars=5, **FAST_GBM)
    samples = build_samples(frame, window_len=8, label_config=LabelConfig(horizon_bars=5))
    result = walk_forward(samples, config, n_folds=3)
    assert len(result.folds) == 3
    # purged: the last training row's label (5 bars of 5m ahead) ends before the test starts
    for train_max, test_min in zip(result.train_ts_max, result.test_ts_min, strict=True):
        assert test_min - train_max >= dt.timedelta(minutes=5 * 5)
    assert result.probabilities.shape == (result.test_rows.size, 3)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_walk_forward_retrain_flow_on_a_warehouse_symbol(env, prefect_server: None) -> None:  # type: ignore[no-untyped-def]
    """The deployable flow (JSON parameters only) loads the stored symbol and returns one
    metrics row per fold, each trained strictly before its test window."""
    from flows.retrain import walk_forward_retrain

    frame, _, settings = env
    folds = walk_forward_retrain(
        symbol="XRP/ETH",
        days=None,
        horizon=5,
        epochs=1,
        n_folds=3,
        timeframe="5m",
        train_overrides=FAST_GBM,
    )
    assert len(folds) >= 3 and len({f["fold"] for f in folds}) == len(folds)
    for fold in folds:
        assert 0.0 <= fold["accuracy"] <= 1.0
        assert fold["test_rows"] > 0 and 0 < fold["train_rows"] < frame.height
        gap = dt.datetime.fromisoformat(fold["test_start_ts"]) - dt.datetime.fromisoformat(
            fold["train_end_ts"]
        )
        assert gap >= dt.timedelta(minutes=5 * 5)  # purged by the 5-bar label horizon


def test_backtest_model_flow_publishes_the_models_measures(  # type: ignore[no-untyped-def]
    env, tmp_path: Path, prefect_server: None
) -> None:
    """The flow runs the same function as `backtest --model` (a real ONNX model as champion)
    and publishes its IC and trades beside buy and hold."""
    from flows.backtest import backtest_model
    from tests.support.artifacts import artifact_texts
    from tests.trading.serve_support import momentum_model, register_champion
    from warehouse import connect

    frame, _, settings = env
    con = connect(settings)
    try:
        model_id = register_champion(con, settings, momentum_model(tmp_path / "momentum.onnx"))
    finally:
        con.close()
    summary = backtest_model("XRP/ETH", "5m", "binance")
    assert summary["model_id"] == model_id and summary["bars"] == frame.height
    assert summary["model_trades"] + summary["fallback_trades"] == summary["trades"]
    assert Path(summary["report_html"]).is_relative_to(settings.home / "reports")
    text = artifact_texts("backtest-model-summary")[0]
    assert f"Model {model_id} on XRP/ETH 5m" in text and f"| ic | {summary['ic']} |" in text
