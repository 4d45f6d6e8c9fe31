"""Real candles and a tiny training configuration for the model, flow and trading tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from models.training import TrainConfig

SYMBOL = "UNITTEST/BTC"


def real_candles(candles_dir: Path, rows: int = 2600) -> pl.DataFrame:
    """The last ``rows`` real 1m candles (with real gaps) in the warehouse candle schema."""
    frame = pl.read_ipc(candles_dir / "UNITTEST_BTC-1m.feather").rename({"date": "ts"})
    frame = frame.with_columns(
        exchange=pl.lit("binance"), symbol=pl.lit(SYMBOL), timeframe=pl.lit("1m")
    ).select("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
    return frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC")).tail(rows)


def candles_arrow(frame: pl.DataFrame) -> pa.Table:
    table = frame.with_columns(pl.col("ts").dt.cast_time_unit("ms")).to_arrow()
    return table.cast(
        pa.schema(
            [
                pa.field(f.name, pa.timestamp("ms", tz="UTC") if f.name == "ts" else f.type)
                for f in table.schema
            ]
        )
    )


TINY = TrainConfig(
    window_len=12,
    horizon_bars=5,
    epochs=2,
    batch_size=64,
    d_model=8,
    lstm_hidden=8,
    n_heads=2,
    conv_channels=8,
    gbm_estimators=20,
    max_samples=700,
    importance_repeats=0,
    progress=False,
    threads=1,
)


def assert_probabilities(p: np.ndarray) -> None:
    assert p.ndim == 2 and p.shape[1] == 3
    assert np.all(p >= 0) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
