"""The `features` flow on a real Prefect server and a real warehouse."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from flows.features import features
from pipelines.features import FEATURE_SET_VERSION, build_features
from pipelines.features.rebuild import history_start_ms
from tests.support.features import (
    CANDLE_FILES,
    assert_same_features,
    load_candles,
    stored_features,
)
from warehouse import Settings, upsert

NAMES = ("ETH_BTC-5m.feather", "LTC_BTC-5m.feather")  # 20 complete days each: 5,760 candles


def test_features_flow_is_incremental_and_idempotent(
    prefect_server: None, lake: duckdb.DuckDBPyConnection, settings: Settings, candles_dir: Path
) -> None:
    series = {name: load_candles(candles_dir / name, *CANDLE_FILES[name]) for name in NAMES}
    eth = series["ETH_BTC-5m.feather"]
    cut = eth.height - 50
    for candles in series.values():
        upsert(lake, "candles", candles.head(cut).to_arrow())
    first = features()
    assert {(r.symbol, r.mode) for r in first["results"]} == {
        ("ETH/BTC", "full"),
        ("LTC/BTC", "full"),
    }
    assert first["rows_written"] == 2 * cut
    again = features()
    assert again["rows_written"] == 0

    # Two appends in a row, each featurised on its own: only the warm-up history is read back.
    for start, end in ((cut, cut + 20), (cut + 20, eth.height)):
        upsert(lake, "candles", eth.slice(start, end - start).to_arrow())
        run = features(symbols=["ETH/BTC"])
        [result] = run["results"]
        assert (result.symbol, result.mode, result.write.inserted) == (
            "ETH/BTC",
            "incremental",
            end - start,
        )
        assert result.rows_quarantined == 0 and result.write.replaced == 0
        history_from = history_start_ms(int(eth["ts"][start].timestamp() * 1000), "5m")
        read = eth.head(end).filter(pl.col("ts").dt.epoch("ms") >= history_from).height
        assert result.candles_read == read < end

    stored = stored_features(lake, "ETH/BTC")
    assert stored["feature_set_version"].unique().to_list() == [FEATURE_SET_VERSION]
    assert stored.tail(50)["rsi_14_1h"].null_count() == 0
    assert_same_features(stored, build_features(eth))  # == a full rebuild of every candle
    assert stored_features(lake, "LTC/BTC").height == cut
