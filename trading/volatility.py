"""Volatility forecasts for stops, take-profit and confidence sizing (issue 17, item 4).

What is forecast: at the close of bar ``t``, the per-bar sigma expected over the next ``h``
bars, i.e. a forecast of ``sqrt(RV_t / h)`` with ``RV_t = sum_{k=1..h} r_{t+k}^2`` and ``r`` the
one-bar log return of the closes. It is in the units the risk code always used (a per-bar
sigma): a stop ``stop_loss_vol_mult x sigma`` from the fill price, as before.

Forecasters (numpy and scipy only: this is on the serving path, no torch):

* ``RealizedVol(window)``: today's baseline, the sample std of the last ``window`` log returns,
  flat over the horizon (``trading.decision.rolling_volatility``, online
  ``OnlineVolatility``).
* ``EwmaVol(lam)``: RiskMetrics, ``s_{t+1} = lam s_t + (1 - lam) r_t^2``, flat over the
  horizon. ``fit_ewma`` picks ``lam`` by Gaussian quasi-likelihood on a training window.
* ``Garch11(omega, alpha, beta)``: ``s_{t+1} = omega + alpha r_t^2 + beta s_t``, mean-reverting
  over the horizon: ``sum_{k<h} (vbar + p^k (s_{t+1} - vbar)) / h`` with ``p = alpha + beta``.
  ``fit_garch`` fits it by Gaussian QML with variance targeting on a training window.

EWMA and GARCH start after ``WARMUP`` returns from the mean of their squares, then run the
recursion; the batch form (``sigma``) runs it over an array, the online form (``online``) one
bar at a time, in the same operations. Both use only returns up to ``t``. (No
``scipy.signal``: it imports ``scipy.stats``, which fails under the serving path's no-torch
guard; ``scipy.optimize`` fits the parameters.)

Evaluation (``compare``/``choose_forecaster``): parameters are fitted on the bars before
``split`` only; the forecasts of the bars from ``split + h`` on (a purge of ``h`` bars: the
last training bars' targets reach into the test part) are scored against the realized
variance by

* QLIKE, in the form ``log F + RV / F`` with ``F = h sigma^2`` (it differs from Patton's
  ``RV/F - log(RV/F) - 1`` by a term in ``RV`` only, so differences between forecasters are
  the same, and it stays finite on bars where ``RV = 0``);
* MSE of the log variance, ``(log RV - log F)^2``, on the bars where ``RV > 0``.

The difference of each candidate's QLIKE from the baseline's gets a moving-block bootstrap CI
(blocks of ``10 h`` bars, 1,000 resamples, 2.5/97.5 percentiles: ``EVALUATION.md``). A candidate
is chosen only when that CI lies wholly below zero (it beats realized sigma out of sample); of
several, the lowest mean QLIKE. Otherwise the baseline is used, and the choice says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from models.metrics import block_bootstrap_mean
from trading.decision import OnlineVolatility, rolling_volatility

WARMUP = 20  # returns before an EWMA/GARCH forecast (their seed: the mean of their squares)
MIN_CHOICE_BARS = 1000  # history below this: no comparison, the baseline is used


class OnlineSigma(Protocol):
    def update(self, close: float) -> float:
        """The next close; returns the forecast known at it (NaN in warm-up)."""
        ...


class VolatilityForecaster(Protocol):
    @property
    def name(self) -> str: ...

    def describe(self) -> str: ...

    def sigma(self, close: np.ndarray, horizon: int) -> np.ndarray:
        """Per-bar sigma over the next ``horizon`` bars, known at each bar's close."""
        ...

    def online(self, horizon: int) -> OnlineSigma: ...


# ---------------------------------------------------------------- forecasters


@dataclass(frozen=True, slots=True)
class RealizedVol:
    """The baseline: trailing sample std of ``window`` log returns, flat over the horizon."""

    window: int = 20

    @property
    def name(self) -> str:
        return "realized"

    def describe(self) -> str:
        return f"realized {self.window}-bar sigma"

    def sigma(self, close: np.ndarray, horizon: int) -> np.ndarray:
        return rolling_volatility(close, self.window)

    def online(self, horizon: int) -> OnlineSigma:
        return OnlineVolatility(self.window)


@dataclass(frozen=True, slots=True)
class Garch11:
    """GARCH(1,1) one-step variance, averaged over the horizon (see module docstring)."""

    omega: float
    alpha: float
    beta: float

    def __post_init__(self) -> None:
        ok = self.omega >= 0 and self.alpha >= 0 and self.beta >= 0
        if not ok or self.alpha + self.beta > 1.0:
            raise ValueError(
                f"Garch11(omega={self.omega}, alpha={self.alpha}, beta={self.beta}): needs "
                "omega, alpha, beta >= 0 and alpha + beta <= 1"
            )

    @property
    def name(self) -> str:
        return "garch11"

    def describe(self) -> str:
        return f"GARCH(1,1) omega={self.omega:.3g} alpha={self.alpha:.4f} beta={self.beta:.4f}"

    def one_step_variance(self, close: np.ndarray) -> np.ndarray:
        """``s_{t+1|t}`` at every bar (NaN before ``WARMUP`` returns)."""
        return _recursion(close, self.omega, self.alpha, self.beta)

    def horizon_variance(self, s1: np.ndarray | float, horizon: int) -> np.ndarray | float:
        """Mean per-bar variance over the next ``horizon`` bars from the one-step ``s1``."""
        p = self.alpha + self.beta
        h = int(horizon)
        if h <= 1 or p >= 1.0 or self.omega == 0.0:
            return s1
        vbar = self.omega / (1.0 - p)
        return vbar + (s1 - vbar) * (1.0 - p**h) / ((1.0 - p) * h)

    def sigma(self, close: np.ndarray, horizon: int) -> np.ndarray:
        return np.sqrt(np.asarray(self.horizon_variance(self.one_step_variance(close), horizon)))

    def online(self, horizon: int) -> OnlineSigma:
        return _OnlineRecursion(self, horizon)


@dataclass(frozen=True, slots=True)
class EwmaVol:
    """RiskMetrics EWMA variance (GARCH with omega 0, alpha 1 - lam, beta lam), flat."""

    lam: float = 0.94

    def __post_init__(self) -> None:
        if not 0.0 < self.lam < 1.0:
            raise ValueError(f"EwmaVol(lam={self.lam}): lam must be in (0, 1)")

    @property
    def name(self) -> str:
        return "ewma"

    def describe(self) -> str:
        return f"EWMA sigma lambda={self.lam:.4f}"

    @property
    def garch(self) -> Garch11:
        return Garch11(0.0, 1.0 - self.lam, self.lam)

    def sigma(self, close: np.ndarray, horizon: int) -> np.ndarray:
        return self.garch.sigma(close, horizon)

    def online(self, horizon: int) -> OnlineSigma:
        return _OnlineRecursion(self.garch, horizon)


def _returns(close: np.ndarray) -> np.ndarray:
    return np.diff(np.log(np.asarray(close, dtype=np.float64)))


def _recursion(close: np.ndarray, omega: float, alpha: float, beta: float) -> np.ndarray:
    """``s`` at every bar: NaN until bar ``WARMUP`` (the mean of the first WARMUP squared
    returns there), then ``s_t = omega + alpha r_t^2 + beta s_{t-1}`` with ``r_t`` the return
    into bar ``t``."""
    c = np.asarray(close, dtype=np.float64)
    out = np.full(c.size, np.nan)
    if c.size <= WARMUP:
        return out
    r2 = _returns(c) ** 2
    s = float(np.mean(r2[:WARMUP]))
    values = [s]
    for x in r2[WARMUP:].tolist():  # a plain loop: ~0.2 us a bar, causal by construction
        s = omega + alpha * x + beta * s
        values.append(s)
    out[WARMUP:] = values
    return out


class _OnlineRecursion:
    """``_recursion`` one close at a time, then the horizon average (same numbers to float
    rounding as the batch ``sigma``)."""

    def __init__(self, model: Garch11, horizon: int) -> None:
        self.model = model
        self.horizon = int(horizon)
        self.prev: float | None = None
        self.seen: list[float] = []
        self.s = math.nan

    def update(self, close: float) -> float:
        if self.prev is not None:
            r = math.log(close) - math.log(self.prev)
            if len(self.seen) < WARMUP:
                self.seen.append(r * r)
                if len(self.seen) == WARMUP:
                    self.s = float(np.mean(self.seen))
            else:
                m = self.model
                self.s = m.omega + m.alpha * (r * r) + m.beta * self.s
        self.prev = close
        if math.isnan(self.s):
            return math.nan
        return math.sqrt(float(self.model.horizon_variance(self.s, self.horizon)))


# ---------------------------------------------------------------- fitting (training window only)


def _gaussian_nll(s: np.ndarray, r2_next: np.ndarray) -> float:
    ok = np.isfinite(s) & (s > 0)
    if not ok.any():
        return math.inf
    return float(np.mean(np.log(s[ok]) + r2_next[ok] / s[ok]))


def _one_step_nll(close: np.ndarray, omega: float, alpha: float, beta: float) -> float:
    """Mean Gaussian negative log-likelihood (up to constants) of each next return."""
    s = _recursion(close, omega, alpha, beta)[:-1]
    return _gaussian_nll(s, _returns(close) ** 2)


def fit_ewma(close_train: np.ndarray) -> EwmaVol:
    """``lam`` in [0.5, 0.999] by Gaussian QML on ``close_train`` (the training window only)."""
    from scipy.optimize import minimize_scalar

    c = np.asarray(close_train, dtype=np.float64)
    res = minimize_scalar(
        lambda lam: _one_step_nll(c, 0.0, 1.0 - lam, lam),
        bounds=(0.5, 0.999),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return EwmaVol(float(res.x))


def fit_garch(close_train: np.ndarray) -> Garch11:
    """GARCH(1,1) by Gaussian QML on ``close_train`` with variance targeting
    (``omega = mean(r^2) (1 - alpha - beta)``); ``alpha + beta <= 0.999``."""
    from scipy.optimize import minimize

    c = np.asarray(close_train, dtype=np.float64)
    vbar = float(np.mean(_returns(c) ** 2))

    def nll(x: np.ndarray) -> float:
        a, b = float(x[0]), float(x[1])
        if a + b > 0.999:
            return 1e6 + (a + b)
        return _one_step_nll(c, vbar * (1.0 - a - b), a, b)

    # one local search from the best point of a coarse grid (persistence x alpha): each
    # likelihood is a pass over the window, so few starts
    grid = [(a, p - a) for p in (0.85, 0.95, 0.99) for a in (0.03, 0.08, 0.15)]
    start = min(grid, key=lambda ab: nll(np.array(ab)))
    best = minimize(nll, np.array(start), method="L-BFGS-B", bounds=[(1e-6, 0.5), (0.0, 0.998)])
    a, b = float(best.x[0]), float(best.x[1])
    if a + b > 0.999:  # only the penalty's side of the boundary was found
        scale = 0.999 / (a + b)
        a, b = a * scale, b * scale
    return Garch11(vbar * (1.0 - a - b), a, b)


# ---------------------------------------------------------------- evaluation


def realized_variance(close: np.ndarray, horizon: int) -> np.ndarray:
    """``RV_t = sum_{k=1..h} r_{t+k}^2`` for every bar (NaN where the data ends first)."""
    r2 = _returns(close) ** 2
    h = int(horizon)
    out = np.full(np.asarray(close).size, np.nan)
    if r2.size >= h:
        csum = np.concatenate(([0.0], np.cumsum(r2)))
        out[: r2.size - h + 1] = csum[h:] - csum[: r2.size - h + 1]
    return out


def qlike(sigma: np.ndarray, rv: np.ndarray, horizon: int) -> np.ndarray:
    """``log F + RV / F`` per bar, ``F = h sigma^2`` (NaN where either is unknown)."""
    f = int(horizon) * np.asarray(sigma, dtype=np.float64) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(f) + rv / f
    return np.where(np.isfinite(out) & (f > 0), out, np.nan)


def mse_log_variance(sigma: np.ndarray, rv: np.ndarray, horizon: int) -> np.ndarray:
    """``(log RV - log F)^2`` per bar where ``RV > 0`` (NaN elsewhere)."""
    f = int(horizon) * np.asarray(sigma, dtype=np.float64) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (np.log(rv) - np.log(f)) ** 2
    return np.where(np.isfinite(out), out, np.nan)


@dataclass(frozen=True, slots=True)
class ForecastScore:
    """One forecaster's out-of-sample figures; the ``*_diff`` ones are against the baseline."""

    name: str
    description: str
    qlike: float
    mse_log_var: float
    bars: int  # scored bars (QLIKE)
    qlike_diff: float = 0.0  # candidate - baseline (negative: better)
    qlike_diff_ci_low: float = math.nan
    qlike_diff_ci_high: float = math.nan
    mse_log_var_diff: float = 0.0

    @property
    def beats_baseline(self) -> bool:
        return self.qlike_diff_ci_high < 0.0


def _mean(x: np.ndarray) -> float:
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.any() else math.nan


def compare(
    close: np.ndarray,
    *,
    split: int,
    horizon: int,
    candidates: Sequence[VolatilityForecaster],
    baseline: VolatilityForecaster | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[ForecastScore]:
    """Scores of ``baseline`` (first) and ``candidates`` on the bars from ``split + horizon``
    on (see module docstring); the candidates' parameters must come from bars before
    ``split``. All are scored on the same bars: where every forecast is known."""
    c = np.asarray(close, dtype=np.float64)
    h = int(horizon)
    base = baseline or RealizedVol()
    models = [base, *candidates]
    rv = realized_variance(c, h)
    sig = [np.asarray(m.sigma(c, h), dtype=np.float64) for m in models]
    scored = np.zeros(c.size, dtype=bool)
    scored[split + h :] = True
    scored &= np.isfinite(rv)
    for s in sig:
        scored &= np.isfinite(s) & (s > 0)
    losses = [(qlike(s, rv, h)[scored], mse_log_variance(s, rv, h)[scored]) for s in sig]
    q0, m0 = losses[0]
    out = []
    for model, (q, m) in zip(models, losses, strict=True):
        d = q - q0
        lo, hi = (
            (math.nan, math.nan)
            if model is base
            else block_bootstrap_mean(d, block=10 * h, n_boot=n_boot, seed=seed)
        )
        out.append(
            ForecastScore(
                model.name,
                model.describe(),
                _mean(q),
                _mean(m),
                int(np.isfinite(q).sum()),
                _mean(d),
                lo,
                hi,
                _mean(m - m0),
            )
        )
    return out


@dataclass(frozen=True)
class VolatilityChoice:
    """The sigma stops, take-profit and sizing use, and why (see ``choose_forecaster``)."""

    forecaster: VolatilityForecaster
    horizon: int
    reason: str
    scores: tuple[ForecastScore, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.forecaster.name

    def online(self) -> OnlineSigma:
        return self.forecaster.online(self.horizon)

    def describe(self) -> str:
        return f"{self.forecaster.describe()} ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "forecaster": self.forecaster.name,
            "description": self.forecaster.describe(),
            "horizon_bars": self.horizon,
            "reason": self.reason,
            "scores": [{k: getattr(s, k) for k in ForecastScore.__slots__} for s in self.scores],
        }


def baseline_choice(window: int, horizon: int, reason: str) -> VolatilityChoice:
    return VolatilityChoice(RealizedVol(window), int(horizon), reason)


def choose_forecaster(
    close: np.ndarray,
    *,
    horizon: int,
    train_fraction: float = 0.5,
    window: int = 20,
    min_bars: int = MIN_CHOICE_BARS,
    n_boot: int = 1000,
    seed: int = 0,
) -> VolatilityChoice:
    """Fit EWMA and GARCH(1,1) on the first ``train_fraction`` of ``close`` (the history known
    before the first decision), score them and the realized ``window``-bar baseline on the
    rest, and return the winner: a candidate only when its QLIKE beats the baseline's with a
    CI below zero; otherwise the baseline."""
    c = np.asarray(close, dtype=np.float64)
    c = c[np.isfinite(c) & (c > 0)]
    h = int(horizon)
    if c.size < min_bars:
        return baseline_choice(
            window, h, f"fallback: {c.size} bars of history < {min_bars} to compare on"
        )
    split = int(c.size * train_fraction)
    train = c[:split]
    candidates: list[VolatilityForecaster] = [fit_ewma(train), fit_garch(train)]
    scores = compare(
        c,
        split=split,
        horizon=h,
        candidates=candidates,
        baseline=RealizedVol(window),
        n_boot=n_boot,
        seed=seed,
    )
    beating = [(s, m) for s, m in zip(scores[1:], candidates, strict=True) if s.beats_baseline]
    span = f"fit on {split} bars, scored on {scores[0].bars} later bars at h={h}"
    if not beating:
        return VolatilityChoice(
            RealizedVol(window),
            h,
            f"fallback: no forecaster beat realized sigma out of sample (QLIKE, {span})",
            tuple(scores),
        )
    best, model = min(beating, key=lambda sm: sm[0].qlike)
    return VolatilityChoice(
        model,
        h,
        f"beat realized sigma out of sample: QLIKE {best.qlike_diff:+.4f} "
        f"[{best.qlike_diff_ci_low:+.4f}, {best.qlike_diff_ci_high:+.4f}] ({span})",
        tuple(scores),
    )


HISTORY_BARS = 4000  # stored candles before the first decision that the choice fits and scores


def choose_for_series(
    con: Any,
    *,
    symbol: str,
    timeframe: str,
    exchange: str,
    before_ms: int,
    horizon: int,
    window: int = 20,
    bars: int = HISTORY_BARS,
) -> VolatilityChoice:
    """``choose_forecaster`` on the latest ``bars`` stored candles of one series opened before
    ``before_ms`` (the first decision bar): nothing at or after it is read."""
    import datetime as dt

    from warehouse.readers import read_candles

    table = read_candles(
        con,
        symbols=[symbol],
        timeframe=timeframe,
        exchange=exchange,
        before=dt.datetime.fromtimestamp(before_ms / 1000, dt.UTC),
        last=bars,
    )
    close = np.asarray(table.column("close").to_numpy(), dtype=np.float64)
    return choose_forecaster(close, horizon=horizon, window=window)
