"""Timeframes and resampling 1m candles into 5m, 15m and 1h.

The rule (the same one exchanges use to build their own candles from trades):

* buckets are aligned to UTC multiples of the timeframe, keyed by their open time;
* open = the first 1m open in the bucket, close = the last 1m close, high = max of highs,
  low = min of lows, volume = sum of volumes;
* minutes with no 1m candle (an exchange emits none when nothing traded) are simply absent:
  the bucket is built from the minutes present, and a bucket with no 1m candle at all
  produces no candle (a gap stays a gap, nothing is filled);
* a bucket is emitted only once it is closed: its end must be at or before ``closed_until_ms``
  (default: the end of the last 1m candle given), so a partial bucket is never stored.

On the real data in ../shared/data/candles this reproduces the exchange's own 5m candles
exactly wherever both exist (tests/pipelines/test_resample.py).
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

# The one table of timeframe lengths (features, importers and resampling all use it).
TIMEFRAMES_MS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}
SUPPORTED_TIMEFRAMES = ("1m", "5m", "15m", "1h")


def timeframe_ms(timeframe: str) -> int:
    try:
        return TIMEFRAMES_MS[timeframe]
    except KeyError:
        raise ValueError(
            f"unknown timeframe {timeframe!r}; known: {', '.join(TIMEFRAMES_MS)}"
        ) from None


def resample_frame(
    one_minute: pl.DataFrame, timeframe: str, *, closed_until_ms: int | None = None
) -> pl.DataFrame:
    """Resample 1m candles (warehouse schema, any symbols) into ``timeframe`` by the rule above."""
    step = timeframe_ms(timeframe)
    if one_minute.height == 0:
        return one_minute.with_columns(pl.lit(timeframe).alias("timeframe"))
    bad = one_minute.filter(pl.col("timeframe") != "1m")
    if bad.height:
        raise ValueError(f"resample needs 1m candles; got timeframe {bad['timeframe'][0]!r}")
    ts_ms = pl.col("ts").dt.epoch("ms")
    df = one_minute.sort("exchange", "symbol", "ts").with_columns(
        (ts_ms - ts_ms % step).alias("_bucket"), ts_ms.alias("_ts_ms")
    )
    out = df.group_by("exchange", "symbol", "_bucket", maintain_order=True).agg(
        pl.col("open").first(),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").last(),
        pl.col("volume").sum(),
        (pl.col("_ts_ms").max() + 60_000).alias("_data_end"),
    )
    if closed_until_ms is None:
        ends = out.group_by("exchange", "symbol").agg(pl.col("_data_end").max().alias("_limit"))
        out = out.join(ends, on=["exchange", "symbol"])
    else:
        out = out.with_columns(pl.lit(closed_until_ms, pl.Int64).alias("_limit"))
    out = out.filter(pl.col("_bucket") + step <= pl.col("_limit"))
    ts_dtype = one_minute.schema["ts"]
    return out.select(
        "exchange",
        "symbol",
        pl.lit(timeframe).alias("timeframe"),
        pl.from_epoch(pl.col("_bucket"), time_unit="ms")
        .dt.replace_time_zone("UTC")
        .cast(ts_dtype)
        .alias("ts"),
        "open",
        "high",
        "low",
        "close",
        "volume",
    ).sort("exchange", "symbol", "ts")


def resample_arrow(
    one_minute: pa.Table, timeframe: str, *, closed_until_ms: int | None = None
) -> pa.Table:
    frame = pl.from_arrow(one_minute)
    assert isinstance(frame, pl.DataFrame)
    out = resample_frame(frame, timeframe, closed_until_ms=closed_until_ms).to_arrow()
    return out.cast(one_minute.schema) if out.num_rows else one_minute.schema.empty_table()
