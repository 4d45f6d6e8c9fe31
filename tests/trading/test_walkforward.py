"""Walk-forward never trains on data at or after a fold's test start; purged k-fold."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.walkforward import (
    Fold,
    LookAheadError,
    purged_kfold,
    run_walk_forward,
    walk_forward_folds,
)


def _frame(n: int) -> pl.DataFrame:
    ts = pl.datetime_range(
        pl.datetime(2020, 1, 1, time_zone="UTC"),
        pl.datetime(2020, 1, 1, time_zone="UTC") + pl.duration(minutes=n - 1),
        "1m",
        eager=True,
    )
    rng = np.random.default_rng(0)
    return pl.DataFrame({"ts": ts, "x": rng.normal(size=n), "label": rng.integers(0, 3, n)})


@pytest.mark.parametrize("mode", ["rolling", "expanding"])
def test_walk_forward_never_trains_at_or_after_test_start(mode: str) -> None:
    data = _frame(1000)
    seen: list[tuple[object, object]] = []

    def fit_predict(train: pl.DataFrame, test: pl.DataFrame) -> np.ndarray:
        assert train["ts"].max() < test["ts"].min()  # what the model actually received
        seen.append((train["ts"].max(), test["ts"].min()))
        return np.full((test.height, 3), 1 / 3)

    folds = walk_forward_folds(1000, train_bars=300, test_bars=100, mode=mode, purge_bars=5)
    result = run_walk_forward(data, fit_predict, folds, label_horizon_bars=5)
    assert len(seen) == len(folds) == 7
    assert result.test_rows.tolist() == list(range(300, 1000))  # stitched, each row once
    for fold, (train_max, test_min) in zip(folds, seen, strict=True):
        assert train_max < test_min
        assert fold.train_end + 5 <= fold.test_start  # purge: labels end before the test
    if mode == "rolling":
        assert all(f.train_end - f.train_start == 295 for f in folds)
    else:
        assert all(f.train_start == 0 for f in folds)


def test_look_ahead_is_refused() -> None:
    data = _frame(200)
    calls = []

    def fit_predict(train: pl.DataFrame, test: pl.DataFrame) -> np.ndarray:
        calls.append(1)
        return np.full((test.height, 3), 1 / 3)

    overlapping = [Fold(0, 0, 120, 100, 150)]  # training reaches into the test window
    with pytest.raises(LookAheadError, match="test start"):
        run_walk_forward(data, fit_predict, overlapping, label_horizon_bars=1)
    unpurged = [Fold(0, 0, 100, 100, 150)]  # last training labels look into the test window
    with pytest.raises(LookAheadError, match="looks 5 bars ahead"):
        run_walk_forward(data, fit_predict, unpurged, label_horizon_bars=5)
    assert calls == []  # refused before any training


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(50, 2000),
    train=st.integers(10, 400),
    test=st.integers(1, 300),
    purge=st.integers(0, 9),
    mode=st.sampled_from(["rolling", "expanding"]),
)
def test_fold_property(n: int, train: int, test: int, purge: int, mode: str) -> None:
    folds = walk_forward_folds(n, train_bars=train, test_bars=test, mode=mode, purge_bars=purge)
    prev_end = None
    for f in folds:
        assert 0 <= f.train_start < f.train_end <= f.test_start - purge
        assert f.test_start < f.test_end <= n
        if prev_end is not None:
            assert f.test_start == prev_end  # contiguous out-of-sample
        prev_end = f.test_end


@settings(max_examples=60, deadline=None)
@given(n=st.integers(20, 600), k=st.integers(2, 8), h=st.integers(0, 10), emb=st.integers(0, 20))
def test_purged_kfold_property(n: int, k: int, h: int, emb: int) -> None:
    for train, test in purged_kfold(n, k, label_horizon_bars=h, embargo_bars=emb):
        a, b = int(test[0]), int(test[-1]) + 1
        assert not np.isin(train, test).any()
        assert not ((train + h >= a) & (train < b)).any()  # no label window touches the test
        assert not ((train >= b) & (train < b + emb)).any()  # embargo after the test
