"""Real candle files loaded as the contract's candle frames."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

CANDLE_FILES = {
    "UNITTEST_BTC-1m.feather": ("BTC/USDT", "1m"),
    "ETH_BTC-5m.feather": ("ETH/BTC", "5m"),
    "LTC_BTC-5m.feather": ("LTC/BTC", "5m"),
    "XRP_ETH-1m.feather": ("XRP/ETH", "1m"),
    "XRP_ETH-5m.feather": ("XRP/ETH", "5m"),
}


def load_candles(
    path: Path, symbol: str, timeframe: str, exchange: str = "binance"
) -> pl.DataFrame:
    return pl.read_ipc(path).select(
        pl.lit(exchange).alias("exchange"),
        pl.lit(symbol).alias("symbol"),
        pl.lit(timeframe).alias("timeframe"),
        pl.col("date").dt.cast_time_unit("ms").dt.convert_time_zone("UTC").alias("ts"),
        "open",
        "high",
        "low",
        "close",
        "volume",
    )


@pytest.fixture(scope="session")
def real_candles(candles_dir: Path) -> dict[str, pl.DataFrame]:
    return {name: load_candles(candles_dir / name, *meta) for name, meta in CANDLE_FILES.items()}


@pytest.fixture(scope="session")
def xrp_trades(candles_dir: Path) -> pl.DataFrame:
    return pl.read_ipc(candles_dir / "XRP_ETH-trades.feather").select(
        pl.from_epoch(pl.col("timestamp"), time_unit="ms").dt.replace_time_zone("UTC").alias("ts"),
        "side",
        "amount",
    )
