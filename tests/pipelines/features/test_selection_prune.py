"""The feature spec pruned to a model's selected columns: the batch pipeline and the online
engine compute only those (with their dependencies), give the same numbers as the full
build, and stay equal to each other (parity <= 1e-9) on real candles."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipelines.features import OnlineFeatureEngine, build_features, feature_columns
from pipelines.features.prune import feature_families, plan
from pipelines.features.spec import FUNDING_FEATURES, SENTIMENT_FEATURES
from tests.pipelines.features.test_online_equals_batch import ATOL, RTOL
from tests.support.features import CANDLE_FILES

# what a selection on two real files kept in trials: a few families, one higher timeframe
SELECTED_FAMILIES = ("rsi", "lags", "1h")


def _selected() -> list[str]:
    families = feature_families(feature_columns())
    return [c for f in SELECTED_FAMILIES for c in families[f]]


def test_plan_keeps_only_what_the_columns_need() -> None:
    full = plan()
    assert full.columns == tuple(feature_columns())
    pruned = plan(["rsi_14_lag3", "logret_1_1h"])
    assert pruned.columns == ("rsi_14_lag3", "logret_1_1h")
    base_nodes = {n.name for n in pruned.base.nodes}
    # rsi_14 and its Wilder averages are computed (as dependencies), nothing unrelated is
    assert {"rsi_14_lag3", "rsi_14", "_ag14", "_al14", "_gain", "_loss", "_chg"} <= base_nodes
    assert not base_nodes & {"sma_50", "ema_26", "volz_60", "rsi_7", "tfbuy_10", "hour"}
    assert list(pruned.higher) == ["1h"]
    assert pruned.higher["1h"][1] == ("logret_1",)
    assert pruned.nodes < full.nodes / 4
    with pytest.raises(ValueError, match="not_a_feature"):
        plan(["rsi_14", "not_a_feature"])


def test_every_column_has_one_family() -> None:
    families = feature_families(feature_columns())
    assert sorted(c for cols in families.values() for c in cols) == sorted(feature_columns())
    # news_mean_1h and the like are a 1h window of the sentiment group, not the 1h timeframe
    hourly = tuple(c for c in feature_columns() if c.endswith("_1h") and "news_" not in c)
    assert families["1h"] == hourly
    assert families["funding"] == FUNDING_FEATURES
    assert families["sentiment"] == SENTIMENT_FEATURES
    assert "rsi_14" in families["rsi"] and "rsi_14_lag1" in families["lags"]


@pytest.mark.parametrize("name", ["ETH_BTC-5m.feather", "UNITTEST_BTC-1m.feather"])
def test_pruned_online_equals_pruned_batch_and_the_full_build(
    real_candles: dict[str, pl.DataFrame], name: str
) -> None:
    candles = real_candles[name].tail(3000)
    columns = _selected()
    batch = build_features(candles, columns=columns)
    assert batch.columns[6:] == columns  # keys, version, gap_bars, then only the selection
    engine = OnlineFeatureEngine(CANDLE_FILES[name][1], columns=columns)
    rows = [engine.step(row) for row in candles.iter_rows(named=True)]
    assert set(rows[-1]) == set(columns)
    assert engine.plan.nodes < plan().nodes / 2
    # parity of the pruned engines on every row of every selected column
    for c in columns:
        a = batch.get_column(c).to_numpy().astype(float)
        b = np.array([np.nan if r[c] is None else r[c] for r in rows], dtype=float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), c
        ok = ~np.isnan(a)
        limit = RTOL * np.maximum(np.abs(a[ok]), np.abs(b[ok])) + ATOL
        assert (np.abs(a[ok] - b[ok]) <= limit).all(), c
    # pruning changes no number: the selected columns equal the full build's (polars may
    # round a rolling mean of another plan in its last bit: volratio_20_1h, 6.7e-16)
    full = build_features(candles).select(columns)
    for c in columns:
        a, b = batch.get_column(c).to_numpy(), full.get_column(c).to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b)), c
        ok = ~np.isnan(a)
        assert (np.abs(a[ok] - b[ok]) <= 1e-12 * np.maximum(np.abs(b[ok]), 1.0)).all(), c
    # and the values are really there after warm-up (no order book here: obimb lags are null)
    warm = batch.slice(batch.height // 2)
    for c in (c for c in columns if not c.startswith("obimb")):
        assert warm.get_column(c).null_count() < warm.height // 4, c
