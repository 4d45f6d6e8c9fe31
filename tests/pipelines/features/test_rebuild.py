"""Incremental warehouse rebuild == full rebuild while reading less; re-running changes nothing;
feature rows that fail the feature suite are quarantined, not written."""

from __future__ import annotations

import itertools
import json
import math
from functools import partial
from typing import Any

import duckdb
import numpy as np
import polars as pl

from expectations.feature_gate import gate_features
from expectations.frames import feature_range
from pipelines.features import FEATURE_SET_VERSION, build_features
from pipelines.features.rebuild import history_start_ms, rebuild_features
from tests.support.features import assert_same_features, stored_features
from warehouse import Settings, upsert

KEY: dict[str, Any] = {"exchange": "binance", "symbol": "ETH/BTC", "timeframe": "5m"}


def test_incremental_rebuild_reads_less_and_equals_full_rebuild(
    lake: duckdb.DuckDBPyConnection, settings: Settings, real_candles: dict[str, pl.DataFrame]
) -> None:
    # 20 complete days of 5m candles: the warm-up (434 hours for the 1h features) is shorter
    # than the stored history, so an incremental run must read less than everything.
    candles = real_candles["ETH_BTC-5m.feather"]
    total = candles.height
    cuts = [total - 60, total - 40, total - 39, total]  # appends of 20, 1 and 39 candles
    upsert(lake, "candles", candles.head(cuts[0]).to_arrow(), settings=settings)
    first = rebuild_features(lake, settings=settings, **KEY)
    assert first.mode == "full" and first.write.inserted == cuts[0]
    assert first.candles_read == cuts[0] and first.rows_quarantined == 0

    for start, end in itertools.pairwise(cuts):
        upsert(lake, "candles", candles.slice(start, end - start).to_arrow(), settings=settings)
        run = rebuild_features(lake, settings=settings, **KEY)
        assert run.mode == "incremental", (start, end)
        assert run.rows_computed == end - start and run.rows_quarantined == 0
        assert run.write.inserted == end - start and run.write.replaced == 0
        history_from = history_start_ms(int(candles["ts"].dt.epoch("ms")[start]), "5m")
        expected_read = candles.head(end).filter(pl.col("ts").dt.epoch("ms") >= history_from)
        assert run.candles_read == expected_read.height
        # it really is incremental: far fewer candles than the history stored so far
        assert end - start < run.candles_read < end, (run.candles_read, end)
    incremental = stored_features(lake, "ETH/BTC")

    again = rebuild_features(lake, settings=settings, **KEY)
    assert again.mode == "up to date" and again.write.written == 0 and again.candles_read == 0

    # full rebuild into a second series name from the same candles
    upsert(
        lake,
        "candles",
        candles.with_columns(pl.lit("ETH/BTC2").alias("symbol")).to_arrow(),
        settings=settings,
    )
    full_run = rebuild_features(lake, settings=settings, **{**KEY, "symbol": "ETH/BTC2"}, full=True)
    assert full_run.candles_read == total
    full = stored_features(lake, "ETH/BTC2")
    assert incremental.height == full.height == total
    assert (incremental["feature_set_version"] == FEATURE_SET_VERSION).all()
    # the appended rows are warmed up: a comparison of nulls alone would prove nothing
    tail = incremental.tail(total - cuts[0])
    assert tail["rsi_14_1h"].null_count() == 0 and tail["ema_50"].null_count() == 0
    assert_same_features(incremental, full)
    # re-running the full rebuild is idempotent
    rerun = rebuild_features(lake, settings=settings, **{**KEY, "symbol": "ETH/BTC2"}, full=True)
    assert rerun.write.written == 0


def _bad_rows(features: pl.DataFrame) -> set[int]:
    """Independent of the rebuild's checks: rows with a non-finite feature or one outside the
    documented range (``expectations.frames.FEATURE_RANGES``)."""
    bad: set[int] = set()
    for col, dtype in features.schema.items():
        if not dtype.is_float():
            continue
        values = features[col].to_numpy().astype(float)  # nulls become NaN here
        nulls = features[col].is_null().to_numpy()
        bad.update(np.flatnonzero(~nulls & ~np.isfinite(values)).tolist())
        bounds = feature_range(col)
        if bounds is None:
            continue
        lo, hi = bounds
        with np.errstate(invalid="ignore"):
            outside = (lo is not None and values < lo) | (hi is not None and values > hi)
        bad.update(np.flatnonzero(outside & np.isfinite(values)).tolist())
    return bad


def test_rows_failing_the_feature_suite_are_quarantined_not_written(
    lake: duckdb.DuckDBPyConnection, settings: Settings, real_candles: dict[str, pl.DataFrame]
) -> None:
    candles = real_candles["ETH_BTC-5m.feather"].head(4000)
    row = pl.int_range(pl.len())
    corrupt = candles.with_columns(
        # a negative volume: volratio_* < 0 on that row only (out of range)
        pl.when(row == 3000).then(-0.01 * pl.col("volume")).otherwise("volume").alias("volume"),
        # a huge close: bbwidth_20 = inf on the 20 rows whose window holds it (non-finite)
        pl.when(row == 3500).then(1e300).otherwise("close").alias("close"),
    )
    expected = build_features(corrupt)
    bad = sorted(_bad_rows(expected))
    assert 3000 in bad and 3500 in bad and 3519 in bad and 3520 not in bad
    bad_ts = set(expected["ts"].gather(bad).to_list())

    upsert(lake, "candles", corrupt.to_arrow(), settings=settings)
    gate = partial(gate_features, settings=settings, run_id="run-1")
    result = rebuild_features(lake, settings=settings, **KEY, merge=gate)
    assert result.rows_computed == candles.height
    assert result.rows_quarantined == len(bad)
    assert result.write.inserted == candles.height - len(bad)

    stored = stored_features(lake, "ETH/BTC")
    assert stored.height == candles.height - len(bad)
    assert not bad_ts & set(stored["ts"].to_list())
    good = expected.filter(~pl.col("ts").is_in(list(bad_ts)))
    assert_same_features(stored, good)

    rows = lake.execute(
        "SELECT ts, run_id, expectation, column_name, reason, row_json FROM quarantine "
        "WHERE table_name = 'features' AND symbol = 'ETH/BTC' AND timeframe = '5m' ORDER BY ts"
    ).fetchall()
    assert {r[0] for r in rows} == bad_ts and len(rows) == len(bad)
    assert {r[1] for r in rows} == {"run-1"}
    by_ts = {r[0]: r for r in rows}
    negative = by_ts[expected["ts"][3000]]
    assert negative[2] == "feature_range" and "volratio_20" in negative[3].split(",")
    assert "volratio_20 must be within" in negative[4]
    assert json.loads(negative[5])["volratio_20"] < 0
    huge = by_ts[expected["ts"][3500]]
    assert "finite" in huge[2].split(",") and "bbwidth_20" in huge[3].split(",")
    assert "bbwidth_20=inf" in huge[4]
    assert math.isinf(float(json.loads(huge[5])["bbwidth_20"]))

    # Re-running recomputes the same rows: nothing written, no duplicate quarantine rows.
    again = rebuild_features(lake, settings=settings, **KEY, full=True, merge=gate)
    assert again.rows_quarantined == len(bad) and again.write.written == 0
    count = lake.execute("SELECT count(*) FROM quarantine WHERE table_name = 'features'")
    assert count.fetchone() == (len(bad),)
