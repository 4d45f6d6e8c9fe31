"""No look-ahead: changing any future candle never changes an earlier feature row."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.features import build_features, feature_columns

N = 420  # 5m candles: 35 hours, enough to warm up the 1h features


def candles_from(seed: int, gaps: list[int]) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    steps = np.ones(N, dtype=np.int64)
    for g in gaps:
        steps[g % N] += 1 + g % 9  # real gaps, some longer than the carried limit
    ts = np.cumsum(steps) * 300_000 + 1_700_000_000_000 // 3_600_000 * 3_600_000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, N)))
    open_ = np.r_[close[0], close[:-1]]
    return pl.DataFrame(
        {
            "exchange": "x",
            "symbol": "A/B",
            "timeframe": "5m",
            "ts": pl.Series(ts).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": rng.uniform(0, 50, N),
        }
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    gaps=st.lists(st.integers(0, N - 1), max_size=6),
    cut=st.integers(60, N - 2),
    scale=st.floats(0.5, 2.0),
    drop_next=st.booleans(),
)
def test_changing_future_candles_never_changes_the_past(
    seed: int, gaps: list[int], cut: int, scale: float, drop_next: bool
) -> None:
    candles = candles_from(seed, gaps)
    base = build_features(candles)
    # rewrite every candle after `cut` (prices, volumes) and optionally remove the next one,
    # which changes gaps and the higher-timeframe candle the cut row sits in
    future = candles.slice(cut + 1).with_columns(
        pl.col("open") * scale,
        pl.col("high") * scale * 1.01,
        pl.col("low") * scale,
        pl.col("close") * scale,
        pl.col("volume") * 3 + 1,
    )
    if drop_next:
        future = future.slice(1)
    changed = build_features(pl.concat([candles.head(cut + 1), future]))
    past_a = base.head(cut + 1).select(feature_columns())
    past_b = changed.head(cut + 1).select(feature_columns())
    assert past_a.equals(past_b, null_equal=True)
    # the change is real: later rows differ
    assert (
        not base.slice(cut + 1)
        .select("logret_1")
        .equals(changed.slice(cut + 1).select("logret_1"), null_equal=True)
    )


def test_higher_timeframe_uses_only_closed_candles() -> None:
    """A 1m row inside an unfinished hour sees the previous hour's features, never the current."""
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    n = 60 * 30
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    candles = pl.DataFrame(
        {
            "exchange": "x",
            "symbol": "A/B",
            "timeframe": "1m",
            "ts": pl.datetime_range(
                start, start + dt.timedelta(minutes=n - 1), "1m", eager=True, time_zone="UTC"
            ),
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": 1.0,
        }
    )
    feats = build_features(candles)
    hour_close = (
        candles.group_by(pl.col("ts").dt.truncate("1h")).agg(pl.col("close").last()).sort("ts")
    )
    expected_logret = np.log(
        hour_close["close"].to_numpy()[1:] / hour_close["close"].to_numpy()[:-1]
    )
    # minute 59 of hour h (its candle closes with the hour) sees hour h; minutes 0..58 see h-1
    for h in range(2, 25):
        row_last = feats.row(h * 60 + 59, named=True)
        row_mid = feats.row(h * 60 + 30, named=True)
        assert abs(row_last["logret_1_1h"] - expected_logret[h - 1]) < 1e-12
        assert abs(row_mid["logret_1_1h"] - expected_logret[h - 2]) < 1e-12
