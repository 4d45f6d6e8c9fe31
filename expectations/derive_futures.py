"""Rule columns for the perpetual-futures tables (``funding_rates``, ``open_interest``);
``mark_candles`` are candles and use ``expectations.derive.derive_candles``.

Like ``expectations.derive``: takes the typed frame from ``expectations.coerce`` (with
``_row``) and returns it with boolean rule columns (True = the row passes).
"""

from __future__ import annotations

import polars as pl

from expectations.derive import _finite, _key_unique, _tf_ms_expr, _ts_increasing, derive_candles
from expectations.policy import GatePolicy
from expectations.specs import FUTURES_TABLES, TableSpec


def derive_series(
    frame: pl.DataFrame, spec: TableSpec, policy: GatePolicy, now_ms: int
) -> pl.DataFrame:
    """key_unique, ts_not_future, ts_increasing (per series), timeframe_known, ts_aligned and
    the finite flags for a table keyed by (series..., ts) with a ``timeframe`` column."""
    skew_ms = int(policy.max_future_skew_s * 1000)
    values = [c.name for c in spec.columns if c.name not in spec.key]
    frame = frame.with_columns(_tf_ms_expr(), pl.col("ts").dt.epoch("ms").alias("_ts"))
    frame = frame.with_columns(
        (pl.col("_tf_ms").is_not_null() | pl.col("timeframe").is_null()).alias("timeframe_known"),
        (pl.col("_ts").is_null() | (pl.col("_ts") <= now_ms + skew_ms)).alias("ts_not_future"),
        ((pl.col("_ts") % pl.col("_tf_ms")) == 0).fill_null(True).alias("ts_aligned"),
        *_finite(spec.finite_columns),
        _key_unique(frame, list(spec.key), values),
    )
    eligible = frame["key_unique"] & frame["ts"].is_not_null()
    return frame.with_columns(_ts_increasing(frame, list(spec.series), eligible))


__all__ = ["FUTURES_TABLES", "derive_futures", "derive_series"]


def derive_futures(
    table: str, frame: pl.DataFrame, spec: TableSpec, policy: GatePolicy, now_ms: int
) -> tuple[pl.DataFrame, list[object]]:
    """The rule columns of a futures table (and, for mark candles, the gap statistics)."""
    if table == "mark_candles":
        frame, gaps, _ = derive_candles(frame, spec, policy, now_ms)
        return frame, list(gaps)
    return derive_series(frame, spec, policy, now_ms), []
