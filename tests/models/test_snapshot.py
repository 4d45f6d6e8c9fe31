from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

from models.data import build_samples, load_candles
from models.training import label_config
from tests.support.models import SYMBOL, TINY, candles_arrow
from warehouse import Settings, current_snapshot_id, upsert


def test_training_data_is_reproducible_from_its_snapshot(
    lake: duckdb.DuckDBPyConnection, settings: Settings, candles: pl.DataFrame
) -> None:
    upsert(lake, "candles", candles_arrow(candles.head(2000)), settings=settings)
    first = load_candles(lake, symbols=[SYMBOL], timeframe="1m", days=1)
    assert first.snapshot_id == current_snapshot_id(lake)
    assert first.frame.height > 1000

    # New candles arrive and an old candle is revised after training.
    later = candles.tail(600)
    revised = candles.head(2000).tail(1).with_columns(pl.col("close") * 1.01)
    upsert(lake, "candles", candles_arrow(later), settings=settings)
    upsert(lake, "candles", candles_arrow(revised), settings=settings)
    assert current_snapshot_id(lake) > first.snapshot_id
    now = load_candles(lake, symbols=[SYMBOL], timeframe="1m", days=1)
    assert now.end > first.end

    again = load_candles(
        lake, symbols=[SYMBOL], timeframe="1m", days=1, snapshot_id=first.snapshot_id
    )
    assert_frame_equal(again.frame, first.frame)
    assert (again.start, again.end) == (first.start, first.end)
    a = build_samples(first.frame, window_len=TINY.window_len, label_config=label_config(TINY))
    b = build_samples(again.frame, window_len=TINY.window_len, label_config=label_config(TINY))
    np.testing.assert_array_equal(a.windows, b.windows)
    np.testing.assert_array_equal(a.labels, b.labels)
