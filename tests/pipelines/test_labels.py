from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.labels import (
    BUY,
    HOLD,
    SELL,
    LabelConfig,
    class_weights,
    make_labels,
    make_windows,
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
