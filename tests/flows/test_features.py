"""The `features` flow on a real Prefect server and a real warehouse."""

from __future__ import annotations

import polars as pl

from flows.features import features
from pipelines.features import FEATURE_SET_VERSION
from tests.pipelines.features.conftest import CANDLE_FILES, load_candles
from warehouse import upsert


def test_features_flow_is_incremental_and_idempotent(
    prefect_server, lake, settings, candles_dir
) -> None:  # type: ignore[no-untyped-def]
    for name in ("XRP_ETH-5m.feather", "LTC_BTC-5m.feather"):
        candles = load_candles(candles_dir / name, *CANDLE_FILES[name]).head(400)
        upsert(lake, "candles", candles.to_arrow(), settings=settings)
    first = features(settings=settings)
    assert {(r.symbol, r.mode) for r in first["results"]} == {
        ("XRP/ETH", "full"),
        ("LTC/BTC", "full"),
    }
    assert first["rows_written"] == 800
    again = features(settings=settings)
    assert again["rows_written"] == 0
    more = load_candles(candles_dir / "XRP_ETH-5m.feather", "XRP/ETH", "5m").slice(400, 50)
    upsert(lake, "candles", more.to_arrow(), settings=settings)
    third = features(symbols=["XRP/ETH"], settings=settings)
    assert [(r.symbol, r.mode, r.write.inserted) for r in third["results"]] == [
        ("XRP/ETH", "incremental", 50)
    ]
    stored = pl.from_arrow(
        lake.execute("SELECT symbol, feature_set_version, rsi_14 FROM features").fetch_arrow_table()
    )
    assert stored.height == 850
    assert stored["feature_set_version"].unique().to_list() == [FEATURE_SET_VERSION]
    assert stored["rsi_14"].drop_nulls().is_between(0, 100).all()
