"""Feature and prediction suites: real features pass; out-of-range or non-finite rows are named."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from expectations.frames import check_frame
from tests.support.batches import START
from warehouse import Settings


@pytest.fixture(scope="module")
def real_features(candles_dir: Path) -> pl.DataFrame:
    from pipelines.features import build_features

    candles = (
        pl.read_ipc(candles_dir / "ETH_BTC-5m.feather")
        .rename({"date": "ts"})
        .with_columns(
            pl.lit("binance").alias("exchange"),
            pl.lit("ETH/BTC").alias("symbol"),
            pl.lit("5m").alias("timeframe"),
            pl.col("ts").dt.cast_time_unit("ms"),
        )
    )
    return build_features(candles)


def test_real_features_pass_and_corruptions_are_caught(
    real_features: pl.DataFrame, settings: Settings
) -> None:
    ok = check_frame("features", real_features, settings=settings)
    assert ok.success and ok.rows == real_features.height and ok.bad_rows == ()

    bad = (
        real_features.with_row_index("_i")
        .with_columns(
            pl.when(pl.col("_i") == 100).then(150.0).otherwise(pl.col("rsi_14")).alias("rsi_14"),
            pl.when(pl.col("_i") == 200)
            .then(float("inf"))
            .otherwise(pl.col("ema_12"))
            .alias("ema_12"),
        )
        .drop("_i")
    )
    result = check_frame("features", bad, settings=settings)
    assert not result.success
    assert result.bad_rows == (100, 200)
    assert any(f.startswith("feature_range on rsi_14: 1 row") for f in result.failures)
    assert any(f.startswith("finite on all_finite: 1 row") for f in result.failures)


def test_prediction_suite(settings: Settings) -> None:
    n = 4
    frame = pl.DataFrame(
        {
            "exchange": ["binance"] * n,
            "symbol": ["BTC/USDT"] * n,
            "timeframe": ["1m"] * n,
            "ts": [START + dt.timedelta(minutes=i) for i in range(n)],
            "model_id": ["m1"] * n,
            "horizon_bars": [5] * n,
            "p_buy": [0.2, 0.5, 0.7, 0.1],
            "p_hold": [0.5, 0.3, 0.2, 0.1],
            "p_sell": [0.3, 0.2, 0.1, 0.1],  # row 3 sums to 0.3
            "confidence": [0.5, 0.5, 1.2, 0.1],  # row 2 out of range
            "predicted_class": ["hold", "buy", "buy", "short"],  # row 3 unknown class
            "outcome_class": [None, "sell", None, None],
        }
    )
    result = check_frame("predictions", frame, settings=settings)
    assert result.bad_rows == (2, 3)
    rules = {f.split(" on ")[0] for f in result.failures}
    assert rules == {"probability_range", "probabilities_sum", "class_known"}
    assert check_frame("predictions", frame.head(2), settings=settings).success
