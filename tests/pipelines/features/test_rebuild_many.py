"""Many series brought up to date in one pass equal a full rebuild of each (no look-ahead):
``build_features_many`` against ``build_features`` per series, and ``rebuild_features_many``
over appends of random sizes against a full rebuild, on the real candle files."""

from __future__ import annotations

import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipelines.features import build_features
from pipelines.features.batch import build_features_many
from pipelines.features.rebuild import rebuild_features_many
from tests.support.features import assert_same_features, stored_features
from warehouse import Settings, connect, migrate, upsert

FILES = ("ETH_BTC-5m.feather", "LTC_BTC-5m.feather", "XRP_ETH-5m.feather", "XRP_ETH-1m.feather")


def _renamed(frame: pl.DataFrame, i: int) -> pl.DataFrame:
    # distinct symbols: XRP/ETH comes in two timeframes, and each series must be its own
    return frame.with_columns((pl.col("symbol") + f"#{i}").alias("symbol"))


def test_many_series_in_one_pass_equal_each_series_alone(
    real_candles: dict[str, pl.DataFrame],
) -> None:
    for timeframe in ("5m", "1m"):
        frames = [
            _renamed(real_candles[name], i)
            for i, name in enumerate(FILES)
            if name.endswith(f"-{timeframe}.feather")
        ]
        together = build_features_many(pl.concat(frames).sort("exchange", "symbol", "ts"))
        for frame in frames:
            alone = build_features(frame)
            mine = together.filter(pl.col("symbol") == frame["symbol"][0])
            assert_same_features(mine, alone)


@pytest.mark.slow  # a fresh warehouse per example: about 30 s each on 2 busy cores
@hsettings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    appends=st.lists(
        st.lists(st.integers(min_value=0, max_value=40), min_size=4, max_size=4),
        min_size=1,
        max_size=3,
    )
)
def test_incremental_pass_over_many_series_equals_a_full_rebuild(
    real_candles: dict[str, pl.DataFrame], appends: list[list[int]]
) -> None:
    frames = [_renamed(real_candles[name], i) for i, name in enumerate(FILES)]
    total = [sum(step[i] for step in appends) for i in range(len(frames))]
    stored = [f.height - t for f, t in zip(frames, total, strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home")
        con = connect(settings)
        migrate(con)
        try:
            for frame, n in zip(frames, stored, strict=True):
                upsert(con, "candles", frame.head(n).to_arrow(), settings=settings)
            keys = [(f["exchange"][0], f["symbol"][0], f["timeframe"][0]) for f in frames]
            first = rebuild_features_many(con, keys, settings=settings)
            assert set(first.modes.values()) == {"full"}
            for step in appends:
                for i, (frame, n) in enumerate(zip(frames, step, strict=True)):
                    upsert(con, "candles", frame.slice(stored[i], n).to_arrow(), settings=settings)
                    stored[i] += n
                run = rebuild_features_many(con, keys, settings=settings)
                for key, n in zip(keys, step, strict=True):
                    assert run.modes[key] == ("incremental" if n else "up to date"), (key, n)
                assert run.rows_computed == sum(step) == run.write.inserted
                # incremental: the base warm-up only, far less than the stored history
                assert run.candles_read < sum(stored) // 2 or not sum(step)
            for frame in frames:
                assert_same_features(
                    stored_features(con, frame["symbol"][0]), build_features(frame)
                )
        finally:
            con.close()
