"""Resampling 1m candles: the documented rule, equal to the exchange's own 5m candles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipelines.importers import read_candles
from pipelines.resample import resample_arrow, resample_frame
from pipelines.simulated_exchange import DEFAULT_ORIGIN_MS, SimulatedExchange


def test_resampled_5m_equals_the_exchange_5m_on_real_data(candles_dir: Path) -> None:
    one, _ = read_candles(candles_dir / "XRP_ETH-1m.feather", exchange="binance")
    five, _ = read_candles(candles_dir / "XRP_ETH-5m.feather", exchange="binance")
    ours = pl.from_arrow(resample_arrow(one, "5m"))
    theirs = pl.from_arrow(five)
    both = ours.join(theirs, on="ts", suffix="_x")
    assert both.height >= 650  # nearly every exchange 5m candle has 1m candles to compare
    for col in ("open", "high", "low", "close"):
        assert (both[col] == both[f"{col}_x"]).all(), col
    np.testing.assert_allclose(both["volume"], both["volume_x"], rtol=1e-9)
    # a 5m bucket without any 1m candle is not invented
    assert set(ours["ts"]) <= set(theirs["ts"])


@hsettings(max_examples=30, deadline=None)
@given(
    n=st.integers(5, 400), cut=st.integers(1, 400), drop=st.sets(st.integers(0, 399), max_size=40)
)
def test_no_look_ahead_and_no_partial_bucket(n: int, cut: int, drop: set[int]) -> None:
    """A closed bucket never changes when later minutes arrive; an unclosed one is not emitted."""
    a = SimulatedExchange().candle_arrays(
        "BTC/USDT", DEFAULT_ORIGIN_MS, DEFAULT_ORIGIN_MS + n * 60_000
    )
    keep = np.array([i not in drop for i in range(n)])
    from pipelines.simulated_exchange import candles_table

    full = candles_table("sim", "BTC/USDT", "1m", {k: v[keep] for k, v in a.items()})
    cut_ms = DEFAULT_ORIGIN_MS + min(cut, n) * 60_000
    prefix = full.filter(pa.compute.less(full["ts"].cast(pa.int64()), cut_ms))
    early = pl.from_arrow(resample_arrow(prefix, "15m", closed_until_ms=cut_ms))
    late = pl.from_arrow(
        resample_arrow(full, "15m", closed_until_ms=DEFAULT_ORIGIN_MS + n * 60_000)
    )
    if early.height:
        assert early["ts"].dt.epoch("ms").max() + 900_000 <= cut_ms
        assert early.equals(late.filter(pl.col("ts").is_in(early["ts"].implode())))


def test_ohlcv_rule() -> None:
    frame = pl.DataFrame(
        {
            "exchange": ["e"] * 4,
            "symbol": ["S/T"] * 4,
            "timeframe": ["1m"] * 4,
            "ts": pl.Series([0, 60_000, 180_000, 300_000]).cast(pl.Datetime("ms", "UTC")),
            "open": [1.0, 2, 3, 9],
            "high": [5.0, 6, 4, 9],
            "low": [0.5, 1, 2, 9],
            "close": [2.0, 3, 3.5, 9],
            "volume": [1.0, 2, 3, 4],
        }
    )
    out = resample_frame(
        frame, "5m"
    )  # the 00:05 bucket has only 1 of 5 minutes but the data ends at 00:06
    assert out.height == 1  # ... it is not closed: only the 00:00 bucket is emitted
    row = out.row(0, named=True)
    assert (row["open"], row["high"], row["low"], row["close"], row["volume"]) == (
        1.0,
        6.0,
        0.5,
        3.5,
        6.0,
    )
