"""Samples built per symbol in other processes (as the retrain flow maps them on a Dask task
runner: pickled out and back) equal samples built in one process. ``build_samples`` runs the
same split/featurize/assemble chain, so what this guards is running it apart."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

from models.data import (
    FeaturizedSeries,
    assemble_samples,
    build_samples,
    featurize_series,
    split_series,
)
from pipelines.labels import LabelConfig

LABELS = LabelConfig(horizon_bars=5)


def _two_symbols(candles_dir: Path, rows: int = 1200) -> pl.DataFrame:
    frames = []
    for name, symbol in (("ETH_BTC-5m.feather", "ETH/BTC"), ("LTC_BTC-5m.feather", "LTC/BTC")):
        frame = pl.read_ipc(candles_dir / name).rename({"date": "ts"}).head(rows)
        frames.append(
            frame.with_columns(
                pl.col("ts").dt.cast_time_unit("ms").dt.convert_time_zone("UTC"),
                exchange=pl.lit("binance"),
                symbol=pl.lit(symbol),
                timeframe=pl.lit("5m"),
            ).select(
                "exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"
            )
        )
    return pl.concat(frames)


def _featurize_in_another_process(candles: pl.DataFrame) -> FeaturizedSeries:
    return featurize_series(candles)


def test_per_symbol_featurization_in_other_processes_equals_one_call(candles_dir: Path) -> None:
    candles = _two_symbols(candles_dir)
    whole = build_samples(candles, window_len=16, label_config=LABELS)

    series = split_series(candles)
    assert [s["symbol"][0] for s in series] == ["ETH/BTC", "LTC/BTC"]
    # spawn, as Dask's worker processes do: forking a process that runs polars can deadlock
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        featurized = list(pool.map(_featurize_in_another_process, series))
    mapped = assemble_samples(featurized, window_len=16, label_config=LABELS)

    assert set(whole.symbol.tolist()) == {"ETH/BTC", "LTC/BTC"}
    assert mapped.feature_columns == whole.feature_columns
    assert mapped.feature_set_version == whole.feature_set_version
    np.testing.assert_array_equal(mapped.ts, whole.ts)
    np.testing.assert_array_equal(mapped.symbol, whole.symbol)
    np.testing.assert_array_equal(mapped.labels, whole.labels)
    np.testing.assert_array_equal(mapped.windows, whole.windows)
    np.testing.assert_array_equal(mapped.forward_return, whole.forward_return)
