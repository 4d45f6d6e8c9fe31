from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipelines.labels import (
    BUY,
    HOLD,
    SELL,
    LabelConfig,
    class_weights,
    make_labels,
    make_windows,
    round_trip_cost,
    time_splits,
)


def _candles(closes: list[float]) -> pl.DataFrame:
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return pl.DataFrame(
        {"ts": [start + dt.timedelta(minutes=i) for i in range(len(closes))], "close": closes}
    )


def test_label_rule_forward_return_against_volatility_threshold() -> None:
    closes = [100.0, 101.0, 100.0, 101.0, 100.0, 101.0, 110.0, 90.0, 100.5, 100.5]
    config = LabelConfig(horizon_bars=1, vol_window_bars=3, threshold_scale=1.0)
    labels = make_labels(_candles(closes), config)
    log_returns = np.diff(np.log(closes))
    # Row 5: vol of returns 3..5, threshold = vol * sqrt(1); forward return 110/101-1 = +8.9% -> buy
    vol5 = np.std(log_returns[2:5], ddof=1)
    assert math.isclose(labels["threshold_fraction"][5], vol5, rel_tol=1e-9)
    # Row 7: +11.7% forward, but the 110 -> 90 crash made the threshold larger still: hold.
    assert labels["label"].to_list()[5:9] == [BUY, SELL, HOLD, HOLD]
    assert labels["label"][:3].is_null().all()  # volatility window incomplete
    assert labels["label"][-1] is None  # horizon runs past the data


@settings(max_examples=40, deadline=None)
@given(
    closes=st.lists(st.floats(50, 150), min_size=30, max_size=60),
    cut=st.integers(10, 25),
    noise=st.floats(0.5, 2.0),
    h=st.integers(1, 4),
)
def test_labels_never_look_beyond_the_horizon(
    closes: list[float], cut: int, noise: float, h: int
) -> None:
    """Changing prices after t+h never changes the label of t (and the threshold uses no future)."""
    config = LabelConfig(horizon_bars=h, vol_window_bars=5, threshold_scale=0.5)
    original = make_labels(_candles(closes), config)
    changed = closes[: cut + 1] + [c * noise for c in closes[cut + 1 :]]
    altered = make_labels(_candles(changed), config)
    keep = cut - h + 1  # rows whose horizon ends at or before `cut`
    assert original["label"][:keep].to_list() == altered["label"][:keep].to_list()
    assert (
        original["threshold_fraction"][: cut + 1].to_list()
        == altered["threshold_fraction"][: cut + 1].to_list()
    )


@settings(max_examples=40, deadline=None)
@given(n=st.integers(60, 400), purge=st.integers(0, 10), repeats=st.integers(1, 3))
def test_time_splits_are_ordered_disjoint_and_purged(n: int, purge: int, repeats: int) -> None:
    ts = np.repeat(np.arange(n), repeats)  # several symbols share timestamps
    np.random.default_rng(0).shuffle(ts)
    splits = time_splits(ts, purge_bars=purge)
    train, val, test = ts[splits.train], ts[splits.validation], ts[splits.test]
    assert train.max() + purge < val.min() and val.max() + purge < test.min()
    assert len(set(splits.train) | set(splits.validation) | set(splits.test)) == len(
        splits.train
    ) + len(splits.validation) + len(splits.test)
    assert (np.diff(train) >= 0).all() and (np.diff(test) >= 0).all()  # returned in time order
    dropped = 2 * purge * repeats
    assert len(train) + len(val) + len(test) == ts.size - dropped


def test_class_weights_balance_the_classes() -> None:
    labels = np.array([HOLD] * 80 + [BUY] * 10 + [SELL] * 10)
    weights = class_weights(labels)
    counts = np.bincount(labels, minlength=3)
    assert np.allclose(
        weights * counts, weights[0] * counts[0]
    )  # every class weighs the same in total
    assert class_weights(np.array([HOLD, HOLD]))[BUY] == 0.0


def test_windows_hold_only_past_rows() -> None:
    values = np.arange(20, dtype=np.float32).reshape(10, 2)
    windows = make_windows(values, 4)
    assert windows.shape == (7, 4, 2)
    np.testing.assert_array_equal(windows[0], values[0:4])
    np.testing.assert_array_equal(windows[-1], values[6:10])


def _ohlc(closes: list[float], opens: list[float] | None = None) -> pl.DataFrame:
    frame = _candles(closes)
    return frame.with_columns(open=pl.Series(opens if opens is not None else closes))


def test_threshold_is_never_below_the_round_trip_cost() -> None:
    """A calm market (tiny volatility) would label a 0.2 % move buy; costing 0.3 % in and out,
    it is hold, and every threshold is at least the cost."""
    closes = [100.0 + 0.01 * (i % 2) for i in range(40)] + [100.2] * 10
    free = make_labels(_candles(closes), LabelConfig(horizon_bars=2, vol_window_bars=5))
    cost = round_trip_cost(0.001, 0.0005)
    assert cost == pytest.approx(0.003)
    costed = make_labels(
        _candles(closes),
        LabelConfig(horizon_bars=2, vol_window_bars=5, round_trip_cost_fraction=cost),
    )
    assert free["label"][38] == BUY and costed["label"][38] == HOLD
    assert costed["threshold_fraction"].drop_nulls().min() >= cost
    rising = make_labels(
        _candles([100.0 * 1.001**i for i in range(80)]),
        LabelConfig(horizon_bars=5, round_trip_cost_fraction=0.01, method="triple_barrier"),
    )
    assert rising["threshold_fraction"].drop_nulls().min() >= 0.01
    assert set(rising["label"].drop_nulls().to_list()) == {HOLD}  # 0.5 % per 5 bars < 1 %


def test_tradeable_return_is_next_open_to_open_over_the_horizon() -> None:
    closes = [float(c) for c in range(100, 110)]
    opens = [float(o) for o in range(200, 210)]
    labels = make_labels(_ohlc(closes, opens), LabelConfig(horizon_bars=2, vol_window_bars=3))
    # row 3: open[6] / open[4] - 1
    assert labels["tradeable_return"][3] == pytest.approx(206 / 204 - 1)
    assert labels["forward_return"][3] == pytest.approx(105 / 103 - 1)
    assert labels["tradeable_return"][-3] is None  # open[t+1+h] past the data
    assert labels["tradeable_return"][-4] == pytest.approx(209 / 207 - 1)
    assert make_labels(_candles(closes), LabelConfig())["tradeable_return"].is_null().all()


def test_triple_barrier_first_touch_decides() -> None:
    # flat history (vol ~ 0: barriers are the 1 % cost floor), then three paths after row 9
    base = [100.0, 100.0001] * 5
    config = LabelConfig(
        horizon_bars=3,
        vol_window_bars=4,
        method="triple_barrier",
        round_trip_cost_fraction=0.01,
    )
    up_then_down = base + [101.5, 98.0, 98.0, 98.0]  # +1.5 % first: buy, though it ends -2 %
    assert make_labels(_candles(up_then_down), config)["label"][9] == BUY
    down_first = base + [100.0, 98.9, 102.0, 102.0]  # -1.1 % at k = 2 before +2 % at k = 3
    assert make_labels(_candles(down_first), config)["label"][9] == SELL
    inside = base + [100.5, 99.5, 100.9, 103.0]  # inside both barriers until k = 3: hold
    labels = make_labels(_candles(inside), config)
    assert labels["label"][9] == HOLD
    # the threshold rule on the same path: +0.9 % < 1 % also hold; the last rows are unknown
    assert labels["label"][-3:].is_null().all()
    assert labels["label"][:3].is_null().all()  # volatility window incomplete


def test_triple_barrier_barriers_scale_with_recent_volatility() -> None:
    rng = np.random.default_rng(0)
    closes = list(100 * np.exp(np.cumsum(rng.normal(0, 0.002, 300))))
    wide = LabelConfig(horizon_bars=5, method="triple_barrier", take_profit_vol=3, stop_loss_vol=3)
    narrow = LabelConfig(horizon_bars=5, method="triple_barrier", take_profit_vol=0.3)
    hold_wide = (make_labels(_candles(closes), wide)["label"] == HOLD).sum()
    hold_narrow = (make_labels(_candles(closes), narrow)["label"] == HOLD).sum()
    assert hold_wide > hold_narrow


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.floats(-0.01, 0.01), min_size=30, max_size=60),
    cut=st.integers(10, 25),
    noise=st.floats(0.5, 2.0),
    h=st.integers(1, 4),
    take_profit=st.floats(0.2, 3.0),
    stop=st.floats(0.2, 3.0),
)
def test_triple_barrier_never_looks_beyond_the_horizon(
    steps: list[float], cut: int, noise: float, h: int, take_profit: float, stop: float
) -> None:
    """Changing prices after t+h never changes the triple-barrier label of t, nor its barrier.
    (A random walk of <= 1 % steps: the barriers, a few recent volatilities, are far below the
    change, so a label that looked one bar too far would flip.)"""
    assume(abs(noise - 1.0) > 0.1)
    closes = list(100.0 * np.exp(np.cumsum(steps)))
    config = LabelConfig(
        horizon_bars=h,
        vol_window_bars=5,
        method="triple_barrier",
        take_profit_vol=take_profit,
        stop_loss_vol=stop,
        round_trip_cost_fraction=0.002,
    )
    original = make_labels(_candles(closes), config)
    changed = closes[: cut + 1] + [c * noise for c in closes[cut + 1 :]]
    altered = make_labels(_candles(changed), config)
    keep = cut - h + 1  # rows whose horizon ends at or before `cut`
    assert original["label"][:keep].to_list() == altered["label"][:keep].to_list()
    assert (
        original["threshold_fraction"][: cut + 1].to_list()
        == altered["threshold_fraction"][: cut + 1].to_list()
    )
