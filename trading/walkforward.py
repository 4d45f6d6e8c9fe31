"""Walk-forward evaluation and purged, embargoed cross-validation.

* ``walk_forward_folds``: consecutive out-of-sample test windows; the training window before
  each is rolling (fixed length) or expanding (from the start). The last ``purge_bars`` rows
  before a test window are dropped from training, because their labels (which look
  ``purge_bars`` ahead) would overlap the test window.
* ``run_walk_forward``: retrains per fold through a pluggable ``fit_predict(train, test)``
  (the models package's real training code, or ``logistic_fit_predict`` here) and stitches the
  out-of-sample probabilities together. Before every fit it CHECKS that no training row is at
  or after the fold's test start, and that no training label reaches into the test window;
  a violation raises ``LookAheadError`` (not an ``assert``, which ``python -O`` would drop).
* ``purged_kfold``: k contiguous folds for model selection; training rows whose label span
  shares a bar with the test fold's labels are purged (before and after it), and
  ``embargo_bars`` rows after that are dropped (``models.cv`` runs it in every retrain).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from trading.metrics import classification_metrics

FitPredict = Callable[[pl.DataFrame, pl.DataFrame], np.ndarray]


class LookAheadError(AssertionError):
    """Training data at or after a fold's test start (or a label reaching into it)."""


@dataclass(frozen=True, slots=True)
class Fold:
    """Row ranges [start, end) of one walk-forward fold (rows sorted by time)."""

    number: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int


def walk_forward_folds(
    n_rows: int,
    *,
    train_bars: int,
    test_bars: int,
    mode: Literal["rolling", "expanding"] = "rolling",
    purge_bars: int = 0,
    first_test: int | None = None,
) -> list[Fold]:
    if train_bars <= purge_bars or test_bars < 1:
        raise ValueError(
            f"train_bars ({train_bars}) must exceed purge_bars ({purge_bars}); test_bars >= 1"
        )
    start = train_bars if first_test is None else first_test
    folds = []
    k = 0
    while start < n_rows:
        end = min(start + test_bars, n_rows)
        train_end = start - purge_bars
        train_start = 0 if mode == "expanding" else max(0, start - train_bars)
        if train_end - train_start > 0:
            folds.append(Fold(k, train_start, train_end, start, end))
            k += 1
        start = end
    return folds


def check_no_look_ahead(
    train: pl.DataFrame, test: pl.DataFrame, label_horizon_bars: int, fold: Fold
) -> None:
    """Raise ``LookAheadError`` unless every training row and label ends before the test start."""
    test_start: Any = test["ts"].min()
    train_max: Any = train["ts"].max()
    if train.height and train_max >= test_start:
        raise LookAheadError(
            f"fold {fold.number}: training row at {train_max} >= test start {test_start}"
        )
    last_label_row = fold.train_end - 1 + label_horizon_bars
    if train.height and last_label_row >= fold.test_start:
        raise LookAheadError(
            f"fold {fold.number}: label of training row {fold.train_end - 1} looks "
            f"{label_horizon_bars} bars ahead, into the test window at row {fold.test_start}"
        )


@dataclass
class WalkForwardResult:
    probabilities: np.ndarray  # (n_test_rows, 3) stitched out-of-sample [buy, hold, sell]
    test_rows: np.ndarray  # row index (into the input frame) of each probability row
    folds: list[Fold]
    fold_metrics: list[dict[str, Any]]
    train_ts_max: list[Any]  # last training timestamp per fold (the look-ahead audit trail)
    test_ts_min: list[Any]


def run_walk_forward(
    data: pl.DataFrame,
    fit_predict: FitPredict,
    folds: list[Fold],
    *,
    label_horizon_bars: int,
    label_column: str = "label",
) -> WalkForwardResult:
    """Retrain per fold and predict its test window; rows must be sorted by ``ts``."""
    ts = data["ts"].to_numpy()
    if ts.size > 1 and not (np.diff(ts.astype("datetime64[ns]").astype(np.int64)) > 0).all():
        raise ValueError("walk-forward data must be sorted by ts without duplicates")
    probs, rows, metrics, train_max, test_min = [], [], [], [], []
    for fold in folds:
        train = data.slice(fold.train_start, fold.train_end - fold.train_start)
        test = data.slice(fold.test_start, fold.test_end - fold.test_start)
        check_no_look_ahead(train, test, label_horizon_bars, fold)
        p = np.asarray(fit_predict(train, test), dtype=np.float64)
        if p.shape != (test.height, 3):
            raise ValueError(
                f"fold {fold.number}: fit_predict returned {p.shape}, expected ({test.height}, 3)"
            )
        probs.append(p)
        rows.append(np.arange(fold.test_start, fold.test_end))
        train_max.append(train["ts"].max())
        test_min.append(test["ts"].min())
        y = test[label_column].cast(pl.Float64).fill_null(np.nan).to_numpy()
        ok = ~np.isnan(y.astype(np.float64))
        m = classification_metrics(y[ok].astype(int), p.argmax(axis=1)[ok])
        train_y = train[label_column].drop_nulls().to_numpy().astype(int)
        majority = int(np.bincount(train_y, minlength=3).argmax()) if train_y.size else 1
        m["majority_class"] = majority
        m["majority_accuracy"] = float(np.mean(y[ok].astype(int) == majority)) if ok.any() else None
        m.update(
            fold=fold.number,
            train_rows=train.height,
            test_rows=test.height,
            train_end_ts=str(train["ts"].max()),
            test_start_ts=str(test["ts"].min()),
        )
        metrics.append(m)
    return WalkForwardResult(
        np.concatenate(probs) if probs else np.zeros((0, 3)),
        np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64),
        folds,
        metrics,
        train_max,
        test_min,
    )


def walk_forward_rows(
    ts: np.ndarray,
    labels: np.ndarray,
    fit_predict_rows: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    n_folds: int,
    horizon_bars: int,
) -> WalkForwardResult:
    """Expanding walk-forward over samples given by open time and label, ``n_folds`` equal
    test windows after a first training window of ``n // (n_folds + 1)`` rows, purged by
    ``horizon_bars``. ``fit_predict_rows(train_rows, test_rows)`` gets indices into the
    caller's samples (in time order) and returns the test rows' [buy, hold, sell]."""
    order = ts.argsort(kind="stable")
    frame = pl.DataFrame({"row": order, "ts": ts[order], "label": labels[order]})
    n = frame.height
    train = max(n // (n_folds + 1), horizon_bars + 1)
    folds = walk_forward_folds(
        n,
        train_bars=train,
        test_bars=max((n - train) // n_folds, 1),
        mode="expanding",
        purge_bars=horizon_bars,
    )

    def fit(train_frame: pl.DataFrame, test_frame: pl.DataFrame) -> np.ndarray:
        return fit_predict_rows(train_frame["row"].to_numpy(), test_frame["row"].to_numpy())

    return run_walk_forward(frame, fit, folds, label_horizon_bars=horizon_bars)


def purged_kfold(
    n_rows: int,
    k: int,
    *,
    label_horizon_bars: int,
    embargo_bars: int = 0,
    bounds: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) per fold, purged and embargoed (Lopez de Prado, ch. 7).

    Row ``i``'s label spans the prices of rows ``i..i+h`` (``h = label_horizon_bars``), so a
    test fold of rows ``[a, b)`` has labels spanning ``a..b-1+h``. A training row is purged when
    its span shares a row with that: ``i+h >= a`` and ``i <= b-1+h`` (both sides of the fold:
    rows just after it look back into the same prices), and the ``embargo_bars`` rows after
    the purge are dropped too (serial correlation, and input windows that cover the fold).
    ``bounds``: the ``k + 1`` row boundaries of the test folds (default: ``k`` equal parts)."""
    if k < 2 or n_rows < k:
        raise ValueError(f"need k >= 2 and n_rows >= k, got k={k}, n_rows={n_rows}")
    if label_horizon_bars < 0 or embargo_bars < 0:
        raise ValueError("label_horizon_bars and embargo_bars must be >= 0")
    if bounds is None:
        bounds = np.linspace(0, n_rows, k + 1).astype(int)
    bounds = np.asarray(bounds, dtype=np.int64)
    if bounds.size != k + 1 or (np.diff(bounds) < 1).any() or bounds[0] < 0 or bounds[-1] > n_rows:
        raise ValueError(f"bounds must be {k + 1} increasing row positions in [0, {n_rows}]")
    h = label_horizon_bars
    out = []
    idx = np.arange(n_rows)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        purged = (idx + h >= a) & (idx <= b - 1 + h)  # includes the fold's own rows
        embargoed = (idx > b - 1 + h) & (idx <= b - 1 + h + embargo_bars)
        out.append((idx[~purged & ~embargoed], idx[a:b]))
    return out


def logistic_fit_predict(feature_columns: list[str], label_column: str = "label") -> FitPredict:
    """A small scikit-learn baseline model (no torch): multinomial logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def fit_predict(train: pl.DataFrame, test: pl.DataFrame) -> np.ndarray:
        tr = train.drop_nulls([*feature_columns, label_column])
        x = tr.select(feature_columns).to_numpy()
        y = tr[label_column].to_numpy().astype(int)
        out = np.zeros((test.height, 3))
        xt = test.select(feature_columns).fill_null(0.0).fill_nan(0.0).to_numpy()
        if np.unique(y).size < 2:
            out[:, int(y[0]) if y.size else 1] = 1.0
            return out
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(max_iter=200).fit(scaler.transform(x), y)
        out[:, model.classes_] = model.predict_proba(scaler.transform(xt))
        return out

    return fit_predict


def simple_features(candles: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """A few causal features (data up to each close) for the logistic baseline."""
    c = pl.col("close")
    lr = (c / c.shift(1)).log()
    cols = {
        "ret_1": lr,
        "ret_5": (c / c.shift(5)).log(),
        "ret_15": (c / c.shift(15)).log(),
        "vol_20": lr.rolling_std(20),
        "range_1": (pl.col("high") - pl.col("low")) / c,
    }
    return candles.with_columns(**cols), list(cols)
