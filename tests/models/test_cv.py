"""Purged, embargoed K-fold cross-validation (``models.cv``) and promotion on its fold
statistics (``models.registry.decide_promotion``, ``models.retraining``)."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import registry, retraining
from models.cv import CVResult, cross_validate, fold_rows, training_part
from models.data import SampleSet, build_samples
from models.metrics import window_scores
from models.training import TrainConfig, fit_ensemble, label_config
from pipelines.labels import time_splits
from tests.support.models import SYMBOL, TINY, candles_arrow, real_candles
from warehouse import Settings, upsert

GBM = TINY.with_updates(members=("gbm",), epochs=1, cv_folds=3)


def _bars(ts: np.ndarray) -> np.ndarray:
    """Bar position of each sample (distinct timestamps in order)."""
    return np.unique(ts, return_inverse=True)[1]


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(30, 400),
    k=st.integers(2, 6),
    h=st.integers(0, 12),
    emb=st.integers(0, 30),
    symbols=st.integers(1, 3),
    drop=st.floats(0.0, 0.3),
    seed=st.integers(0, 1000),
)
def test_folds_are_purged_and_embargoed(
    n: int, k: int, h: int, emb: int, symbols: int, drop: float, seed: int
) -> None:
    # several symbols share timestamps, some bars missing for some symbols
    rng = np.random.default_rng(seed)
    base = np.datetime64("2024-01-01T00:00") + np.arange(n) * np.timedelta64(5, "m")
    ts = np.concatenate([base[rng.random(n) >= drop] for _ in range(symbols)])
    ts = np.sort(ts)
    distinct = np.unique(ts)
    if distinct.size < k:
        return
    bar = _bars(ts)
    folds = fold_rows(ts, k, horizon_bars=h, embargo_bars=emb)
    assert len(folds) == k
    covered = np.concatenate([f[1] for f in folds])
    assert np.array_equal(np.sort(covered), np.arange(ts.size))  # every row validates once
    for train, test, (first, last) in folds:
        a, b = int(bar[test].min()), int(bar[test].max()) + 1
        assert np.array_equal(np.unique(bar[test]), np.arange(a, b))  # one contiguous block
        assert (first, last) == (distinct[a], distinct[b - 1])
        assert not np.isin(train, test).any()
        tb = bar[train]
        # a training label spans bars t..t+h; the fold's labels span a..b-1+h: no shared bar
        assert not ((tb + h >= a) & (tb <= b - 1 + h)).any()
        # the embargo: nothing in the emb bars after the purge
        assert not ((tb > b - 1 + h) & (tb <= b - 1 + h + emb)).any()
        # and nothing else is dropped: what is left out is exactly purge + embargo
        every = np.arange(distinct.size)
        kept = ~((every + h >= a) & (every <= b - 1 + h + emb))
        assert np.array_equal(np.unique(tb), np.flatnonzero(kept))


def test_bounds_give_the_same_folds_in_time() -> None:
    """Another configuration's folds (``bounds``) are the same time intervals."""
    ts = np.datetime64("2024-01-01T00:00") + np.arange(300) * np.timedelta64(1, "m")
    mine = fold_rows(ts, 3, horizon_bars=5, embargo_bars=4)
    other_ts = ts[7:]  # a longer window drops the first samples
    theirs = fold_rows(other_ts, 3, horizon_bars=9, embargo_bars=0, bounds=[f[2] for f in mine])
    for (_, test, span), (_, other_test, other_span) in zip(mine, theirs, strict=True):
        assert other_ts[other_test].max() == ts[test].max() == span[1]
        assert other_span[1] == span[1]
        assert other_ts[other_test].min() >= span[0]


@pytest.fixture(scope="module")
def gbm_samples(candles_dir: Path) -> SampleSet:
    return build_samples(
        real_candles(candles_dir), window_len=GBM.window_len, label_config=label_config(GBM)
    )


@pytest.fixture(scope="module")
def gbm_cv(gbm_samples: SampleSet) -> CVResult:
    return cross_validate(gbm_samples, GBM)


def test_cross_validation_on_real_candles_stays_before_the_test_window(
    gbm_samples: SampleSet, gbm_cv: CVResult
) -> None:
    cv = gbm_cv
    assert len(cv.folds) == 3 and cv.purge_bars == 5 and cv.embargo_bars == GBM.window_len
    # the folds cover the training part only: the retrain's test window (and its purge gap)
    # is never validated on nor trained on
    s = gbm_samples.last(GBM.max_samples or len(gbm_samples))
    splits = time_splits(s.ts, purge_bars=5, validation_fraction=0.15, test_fraction=0.15)
    test = s.take(splits.test)
    part = training_part(gbm_samples, GBM)
    gap = np.unique(s.ts)
    assert part.ts.max() < gap[np.searchsorted(gap, test.ts.min()) - 5]
    assert np.datetime64(cv.folds[-1].end) == part.ts.max()
    assert sum(f.samples for f in cv.folds) == len(part)
    # the fold statistics are the folds' figures
    ics = np.array([f.ic for f in cv.folds])
    figures = cv.figures()
    assert figures["cv_ic_mean"] == pytest.approx(ics.mean())
    assert figures["cv_ic_se"] == pytest.approx(ics.std(ddof=1) / math.sqrt(3))
    assert figures["cv_log_loss_mean"] == pytest.approx(np.mean([f.log_loss for f in cv.folds]))
    assert all(np.isfinite([f.ic, f.log_loss, f.log_loss_train_frequency]).all() for f in cv.folds)


def test_a_fold_recomputed_by_hand_gives_the_same_ic(
    gbm_samples: SampleSet, gbm_cv: CVResult
) -> None:
    part = training_part(gbm_samples, GBM)
    train, test, _ = fold_rows(part.ts, 3, horizon_bars=5, embargo_bars=GBM.window_len)[1]
    model = fit_ensemble(part.take(train), GBM)
    probabilities, _ = model.predict(part.take(test).windows)
    got = window_scores(
        part.labels[test],
        probabilities,
        part.tradeable_return[test],
        part.labels[train],
        horizon_bars=5,
        order=np.lexsort((part.ts[test], part.symbol[test])),
    )
    assert got["ic"] == pytest.approx(gbm_cv.folds[1].ic, abs=1e-12)
    assert got["log_loss"] == pytest.approx(gbm_cv.folds[1].log_loss, abs=1e-12)


def _figures(**values: float) -> dict[str, float]:
    """A challenger's test-window figures that pass the single-split rule, plus fold figures."""
    base = {"log_loss": 0.9, "log_loss_train_frequency": 1.0, "ic": 0.2}
    return {**base, "cv_folds": 3.0, **values}


def test_promotion_reads_the_fold_statistics_not_the_single_split() -> None:
    decide = registry.decide_promotion
    # the test window alone would promote; the folds' mean log-loss is above their baseline
    bad_folds = _figures(
        cv_log_loss_mean=1.02, cv_log_loss_train_frequency_mean=1.0, cv_ic_mean=0.1, cv_ic_se=0.01
    )
    assert decide({k: v for k, v in bad_folds.items() if not k.startswith("cv_")}, None).promote
    refused = decide(bad_folds, None)
    assert not refused.promote and refused.reason.startswith("log-loss: mean log-loss 1.0200")
    good = _figures(
        cv_log_loss_mean=0.98, cv_log_loss_train_frequency_mean=1.0, cv_ic_mean=0.05, cv_ic_se=0.02
    )
    assert decide(good, None).promote
    # against another configuration on the same folds: mean - SE must beat its mean
    assert not decide(good, {"cv_ic_mean": 0.04, "ic": -0.5}).promote  # 0.03 < 0.04
    win = decide(good, {"cv_ic_mean": 0.02, "ic": 0.9})  # 0.03 > 0.02; test-window IC ignored
    assert win.promote and win.reason.startswith("IC: mean fold IC 0.0500 - SE 0.0200")
    # one fold (no SE) cannot show a margin
    assert not decide({**good, "cv_ic_se": math.nan}, {"cv_ic_mean": -1.0}).promote
    # same configuration (no champion fold figures): the newest out-of-sample window decides
    assert decide(good, {"ic": 0.1}).promote
    same = decide(good, {"ic": 0.3})
    assert not same.promote and "same configuration" in same.reason


@pytest.mark.slow
def test_retrain_promotes_on_folds_against_another_configuration(
    lake: duckdb.DuckDBPyConnection, settings: Settings, candles_dir: Path
) -> None:
    """Two retrains: the first model, then a challenger of another configuration. The champion's
    configuration is cross-validated on the challenger's folds and the rule reads both."""
    upsert(lake, "candles", candles_arrow(real_candles(candles_dir)), settings=settings)
    config = GBM.with_updates(cv_folds=2)

    def retrain(c: TrainConfig) -> retraining.RetrainOutcome:
        request = retraining.RetrainRequest(symbols=(SYMBOL,), timeframe="1m", config=c)
        return retraining.run_retrain(settings, request)

    first = retrain(config)
    assert first.cv is not None and len(first.cv.folds) == 2 and first.champion_cv is None
    cv = first.cv.figures()
    assert first.promoted == (cv["cv_log_loss_mean"] < cv["cv_log_loss_train_frequency_mean"])
    assert registry.model_metrics(lake, first.model_id, "cv")["cv_ic_mean"] == cv["cv_ic_mean"]
    if not first.promoted:
        registry.promote(lake, settings, first.model_id, reason="test: a champion to beat")

    second = retrain(config.with_updates(gbm_max_depth=2, window_len=10))
    assert second.cv is not None and second.champion_cv is not None
    # the champion's configuration ran on the same folds (in time)
    assert [f.end for f in second.champion_cv.folds] == [f.end for f in second.cv.folds]
    ours, theirs = second.cv.figures(), second.champion_cv.figures()
    expect = (
        ours["cv_log_loss_mean"] < ours["cv_log_loss_train_frequency_mean"]
        and ours["cv_ic_mean"] - ours["cv_ic_se"] > theirs["cv_ic_mean"]
    )
    assert second.promoted == expect
    stored = registry.model_metrics(lake, first.model_id, second.window_name)
    assert stored["cv_ic_mean"] == pytest.approx(theirs["cv_ic_mean"])
    if ours["cv_log_loss_mean"] < ours["cv_log_loss_train_frequency_mean"]:
        assert second.reason.startswith("IC: mean fold IC")
    assert "Purged 2-fold cross-validation" in retraining.dashboard_markdown(second, [])
    # the registry's record carries the folds
    record = registry.get_model(lake, second.model_id)
    assert record.metrics["cv"]["cv_folds"] == 2 and len(record.metrics["cv"]["folds"]) == 2
