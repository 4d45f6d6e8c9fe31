"""Real candle files loaded as the contract's candle frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipelines.features import feature_columns

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


# An incremental rebuild equals a full one to rounding only: polars rolling sums accumulate
# from the first row they see and recursive indicators forget their seed geometrically (to
# SEED_WEIGHT = 1e-13), so a later starting row changes the last bits. Measured on
# ETH_BTC-5m: at most 4e-12 relative (3e-16 absolute near 0).
REBUILD_RTOL = 1e-11
REBUILD_ATOL = 1e-15


def assert_same_features(got: pl.DataFrame, want: pl.DataFrame) -> None:
    """Same rows, same keys, identical nulls (and NaNs) in every column, values equal to
    rounding (``REBUILD_RTOL``); names the first differing column and row."""
    assert got.height == want.height, (got.height, want.height)
    for col in ("timeframe", "ts", "feature_set_version"):
        assert got[col].to_list() == want[col].to_list(), col
    problems = []
    for col in ("gap_bars", *feature_columns()):
        a = got[col].cast(pl.Float64)
        b = want[col].cast(pl.Float64)
        null_a, null_b = a.is_null().to_numpy(), b.is_null().to_numpy()
        if (null_a != null_b).any():
            i = int(np.argmax(null_a != null_b))
            problems.append(f"{col}: null in one frame only at row {i} ({a[i]} vs {b[i]})")
            continue
        x, y = a.drop_nulls().to_numpy(), b.drop_nulls().to_numpy()
        if (np.isnan(x) != np.isnan(y)).any():
            problems.append(f"{col}: NaN in one frame only")
            continue
        ok = ~np.isnan(x)
        diff = np.abs(x[ok] - y[ok])
        limit = REBUILD_RTOL * np.abs(y[ok]) + REBUILD_ATOL
        if (diff > limit).any():
            i = int(np.argmax(diff - limit))
            problems.append(f"{col}: {x[ok][i]!r} != {y[ok][i]!r}")
    assert not problems, "\n".join(problems)
