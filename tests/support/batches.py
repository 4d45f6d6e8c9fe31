"""Builders of candle batches for the quality gate's tests (and the flow tests that gate)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
TS_TYPE = pa.timestamp("ms", tz="UTC")


def candle_rows(
    n: int = 10,
    *,
    symbol: str = "BTC/USDT",
    timeframe: str = "1m",
    start: dt.datetime = START,
    step_s: int = 60,
) -> dict[str, list[Any]]:
    """``n`` consistent candles as column lists (easy to corrupt in a test)."""
    close = [100.0 + i for i in range(n)]
    return {
        "exchange": ["binance"] * n,
        "symbol": [symbol] * n,
        "timeframe": [timeframe] * n,
        "ts": [start + dt.timedelta(seconds=step_s * i) for i in range(n)],
        "open": [c - 0.5 for c in close],
        "high": [c + 1.0 for c in close],
        "low": [c - 1.0 for c in close],
        "close": close,
        "volume": [10.0 + i for i in range(n)],
    }


def to_arrow(rows: dict[str, list[Any]]) -> pa.Table:
    columns = {}
    for name, values in rows.items():
        if name == "ts" and all(isinstance(v, dt.datetime) for v in values):
            columns[name] = pa.array(values, TS_TYPE)
        else:
            columns[name] = pa.array(values)
    return pa.table(columns)


def real_candle_batch(path: Path) -> pa.Table:
    """A real candle file shaped as the candle contract (exchange, symbol, timeframe added)."""
    table = feather.read_table(path)
    pair, timeframe = path.stem.rsplit("-", 1)
    n = table.num_rows
    return pa.table(
        {
            "exchange": pa.array(["binance"] * n),
            "symbol": pa.array([pair.replace("_", "/")] * n),
            "timeframe": pa.array([timeframe] * n),
            "ts": table["date"].cast(TS_TYPE),
            **{c: table[c].cast(pa.float64()) for c in ("open", "high", "low", "close", "volume")},
        }
    )


def grid_batch(n: int, symbol: str, *, off_grid: bool) -> pa.Table:
    """``n`` 1m candles of a random walk from 2024-01-01, 1.234 s off the grid if asked."""
    start = 1_704_067_200_000
    ts = start + np.arange(n, dtype=np.int64) * 60_000 + (1_234 if off_grid else 0)
    close = 100.0 + np.cumsum(np.random.default_rng(1).normal(0.0, 0.05, n))
    return pa.table(
        {
            "exchange": pa.array(["binance"] * n),
            "symbol": pa.array([symbol] * n),
            "timeframe": pa.array(["1m"] * n),
            "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "open": close,
            "high": close + 0.5,
            "low": close - 0.5,
            "close": close,
            "volume": np.ones(n),
        }
    )
