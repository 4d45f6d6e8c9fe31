"""The feature-group ablation (trading.feature_groups) on the simulated exchange's candles, order
books and trades: each step's model gets exactly the columns of its groups, a group without data
is reported, not fit."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from models.data import FeaturizedSeries, SampleSet, assemble_samples
from models.metrics import block_bootstrap_ic_difference
from models.training import fit_ensemble, label_config
from pipelines.features import FEATURE_SET_VERSION, build_features, feature_columns
from pipelines.features.groups import (
    BOOK_AND_TRADES,
    CANDLES,
    FUNDING,
    GROUPS,
    MULTI_TIMEFRAME,
    SENTIMENT,
    group_columns,
)
from pipelines.simulated_exchange import SimulatedExchange
from tests.support.models import TINY
from trading.backtest import BacktestConfig, Candles
from trading.feature_groups import feature_group_ablation
from trading.model_walkforward import fold_windows

CONFIG = TINY.with_updates(members=("gbm",), feature_selection=False, gbm_estimators=10)
SIM = "BTC/USDT"
DAY_MS = 86_400_000


class _Fitted:
    """fit_ensemble's model as the ablation reads it."""

    def __init__(self, train: SampleSet) -> None:
        self.ensemble = fit_ensemble(train, CONFIG)
        self.class_forward_returns = self.ensemble.class_forward_returns

    def probabilities(self, windows: np.ndarray) -> np.ndarray:
        return self.ensemble.predict(windows)[0]


@pytest.fixture(scope="module")
def data() -> tuple[SampleSet, dict[str, Candles]]:
    """Two days of the simulated exchange's 1m candles with an order-book snapshot before each
    close and its public trades: candles, multi-timeframe and order-book/trade columns have
    values; funding and news columns (when the feature set has them) none."""
    exchange = SimulatedExchange()
    since = exchange.config.origin_ms + DAY_MS
    until = since + 2 * DAY_MS
    frame = pl.from_arrow(exchange.candles(SIM, since, until))
    assert isinstance(frame, pl.DataFrame)
    closes = frame["ts"].dt.epoch("ms").to_numpy() + 59_000
    books = pl.DataFrame(
        [{"ts": int(t), **exchange.order_book(SIM, int(t), depth=5)} for t in closes]
    ).with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
    raw = exchange.trade_arrays(SIM, since, until)
    trades = pl.DataFrame(
        {
            "ts": pl.Series(raw["ts"]).cast(pl.Datetime("ms", "UTC")),
            "side": np.where(raw["is_buy"], "buy", "sell"),
            "amount": raw["amount"],
        }
    )
    feats = build_features(frame, order_book=books, trades=trades)
    samples = assemble_samples(
        [FeaturizedSeries(frame, feats)],
        window_len=CONFIG.window_len,
        label_config=label_config(CONFIG),
        feature_columns=feature_columns(),
        feature_set_version=FEATURE_SET_VERSION,
    )
    return samples, {SIM: Candles.from_frame(frame, SIM, "1m")}


def test_each_step_gets_exactly_its_groups_columns(
    data: tuple[SampleSet, dict[str, Candles]],
) -> None:
    samples, candles = data
    ts = samples.ts.astype("datetime64[ms]").astype(np.int64)
    folds = fold_windows(
        int(ts.min()),
        int(ts.max()),
        timeframe="1m",
        folds=2,
        train_days=0.3,
        test_days=0.1,
        purge_bars=CONFIG.horizon_bars,
    )
    seen: list[tuple[str, ...]] = []

    def fit(train: SampleSet) -> _Fitted:
        seen.append(train.feature_columns)
        return _Fitted(train)

    report = feature_group_ablation(
        samples,
        candles,
        folds=folds,
        fit=fit,
        config=BacktestConfig(),
        round_trip_cost=0.003,
        horizon_bars=CONFIG.horizon_bars,
        importance_repeats=1,
        n_boot=200,
    )
    steps = {s["group"]: s for s in report["steps"]}
    assert [s["group"] for s in report["steps"]] == list(GROUPS)
    present = group_columns(samples.feature_columns)
    assert len(present[BOOK_AND_TRADES]) == 14  # order book, trade flow, rsi x obimb, lags
    for group in (FUNDING, SENTIMENT):  # no funding rates, no headlines in this data
        assert not steps[group]["measurable"] and not present[group]
        assert steps[group]["reason"].startswith("not measurable on this data")
    # three fits per fold (candles, + multi-timeframe, + order book/trades), both folds fit
    assert report["skipped_folds"] == [] and len(seen) == 6
    candles_only, with_mtf, with_book = seen[:3]
    assert set(candles_only) == set(present[CANDLES])
    assert set(with_mtf) - set(candles_only) == set(present[MULTI_TIMEFRAME])
    assert set(with_book) - set(with_mtf) == set(present[BOOK_AND_TRADES])
    assert set(candles_only) < set(with_mtf) < set(with_book) == set(samples.feature_columns)
    assert seen[3:] == seen[:3]  # the same columns in every fold
    assert steps[MULTI_TIMEFRAME]["versus"] == CANDLES
    assert steps[BOOK_AND_TRADES]["versus"] == MULTI_TIMEFRAME
    for group, columns in zip((CANDLES, MULTI_TIMEFRAME, BOOK_AND_TRADES), seen[:3], strict=True):
        step = steps[group]
        assert step["measurable"] and step["inputs"] == len(columns)
        assert -1.0 <= step["ic"] <= 1.0 and math.isfinite(step["importance"])
        assert step["test_bars"] == steps[CANDLES]["test_bars"] > 0  # the same bars
        assert set(step["strategies"]) == {"edge", "sign"}
    diff = steps[BOOK_AND_TRADES]["ic_difference"]
    assert diff == pytest.approx(steps[BOOK_AND_TRADES]["ic"] - steps[MULTI_TIMEFRAME]["ic"])
    assert set(steps[BOOK_AND_TRADES]["after_fee_difference"]) == {"edge", "sign"}


def test_paired_ic_difference_is_zero_for_the_same_score_and_positive_for_a_better_one() -> None:
    rng = np.random.default_rng(3)
    realized = rng.normal(size=600)
    noise = rng.normal(size=600)
    good = realized + noise  # IC about 0.7
    assert block_bootstrap_ic_difference(good, good, realized, horizon_bars=5, n_boot=300) == (
        0.0,
        0.0,
    )
    lo, hi = block_bootstrap_ic_difference(good, noise, realized, horizon_bars=5, n_boot=300)
    assert 0.4 < lo < hi < 1.0
    lo, hi = block_bootstrap_ic_difference(noise, good, realized, horizon_bars=5, n_boot=300)
    assert -1.0 < lo < hi < -0.4
