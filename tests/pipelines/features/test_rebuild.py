"""Incremental warehouse rebuild == full rebuild; re-running changes nothing."""

from __future__ import annotations

import numpy as np
import polars as pl

from pipelines.features import FEATURE_SET_VERSION, feature_columns
from pipelines.features.rebuild import history_start_ms, rebuild_features
from warehouse import upsert


def _features(con, symbol: str) -> pl.DataFrame:  # type: ignore[no-untyped-def]
    return pl.from_arrow(
        con.execute(
            "SELECT * EXCLUDE (ingested_at) FROM features WHERE symbol = ? ORDER BY ts", [symbol]
        ).fetch_arrow_table()
    )  # type: ignore[return-value]


def test_incremental_rebuild_equals_full_rebuild(lake, settings, real_candles) -> None:  # type: ignore[no-untyped-def]
    candles = real_candles["XRP_ETH-5m.feather"]
    key = {"exchange": "binance", "symbol": "XRP/ETH", "timeframe": "5m"}
    cut = 500
    upsert(lake, "candles", candles.head(cut).to_arrow(), settings=settings)
    first = rebuild_features(lake, settings=settings, **key)
    assert first.mode == "full" and first.write.inserted == cut
    upsert(lake, "candles", candles.slice(cut).to_arrow(), settings=settings)
    second = rebuild_features(lake, settings=settings, **key)
    assert second.mode == "incremental"
    assert second.write.inserted == candles.height - cut and second.write.replaced == 0
    start_ms = history_start_ms(int(candles["ts"][cut].timestamp() * 1000), "5m")
    assert second.candles_read == candles.filter(pl.col("ts").dt.epoch("ms") >= start_ms).height
    incremental = _features(lake, "XRP/ETH")

    again = rebuild_features(lake, settings=settings, **key)
    assert again.mode == "up to date" and again.write.written == 0

    # full rebuild into a second series name from the same candles
    upsert(
        lake,
        "candles",
        candles.with_columns(pl.lit("XRP/ETH2").alias("symbol")).to_arrow(),
        settings=settings,
    )
    rebuild_features(lake, settings=settings, **{**key, "symbol": "XRP/ETH2"}, full=True)
    full = _features(lake, "XRP/ETH2")
    assert incremental.height == full.height == candles.height
    assert (incremental["feature_set_version"] == FEATURE_SET_VERSION).all()
    assert incremental["gap_bars"].to_list() == full["gap_bars"].to_list()
    for col in feature_columns():
        a = incremental[col].to_numpy().astype(float)
        b = full[col].to_numpy().astype(float)
        assert (np.isnan(a) == np.isnan(b)).all(), col
        ok = ~np.isnan(a)
        assert np.allclose(a[ok], b[ok], rtol=1e-9, atol=1e-12), col
    # re-running the full rebuild is idempotent
    rerun = rebuild_features(lake, settings=settings, **{**key, "symbol": "XRP/ETH2"}, full=True)
    assert rerun.write.written == 0
