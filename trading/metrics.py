"""Performance statistics of an equity curve and its trades, and honest uncertainty about them.

Conventions: returns are simple per-bar returns of equity marked at each close; annualization
uses bars per year of the timeframe (365 days, crypto trades every day); Sharpe and Sortino
assume a zero risk-free rate; drawdowns are fractions (negative); durations are in bars.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from trading.domain import Trade

_N = NormalDist()
EULER_GAMMA = 0.5772156649015329
YEAR_S = 365 * 24 * 3600
TIMEFRAME_S = {
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "4h": 14400,
    "1d": 86400,
}


MIN_ANNUALIZED_DAYS = 30.0


def bars_per_year(timeframe: str) -> float:
    if timeframe not in TIMEFRAME_S:
        raise ValueError(f"unknown timeframe {timeframe!r}; known: {sorted(TIMEFRAME_S)}")
    return YEAR_S / TIMEFRAME_S[timeframe]


def bar_returns(equity: np.ndarray, initial: float) -> np.ndarray:
    e = np.concatenate(([initial], np.asarray(equity, dtype=np.float64)))
    return e[1:] / e[:-1] - 1.0


def sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    sd = float(np.std(returns, ddof=1)) if returns.size > 1 else 0.0
    return float(np.mean(returns)) / sd * math.sqrt(periods_per_year) if sd > 0 else 0.0


def sortino(returns: np.ndarray, periods_per_year: float) -> float:
    downside = np.minimum(returns, 0.0)
    dd = math.sqrt(float(np.mean(downside**2))) if returns.size else 0.0
    return float(np.mean(returns)) / dd * math.sqrt(periods_per_year) if dd > 0 else 0.0


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Per-bar drawdown from the running peak (<= 0)."""
    peak = np.maximum.accumulate(equity)
    return equity / peak - 1.0


def max_drawdown_duration(equity: np.ndarray) -> int:
    """Longest stretch (bars) spent below a previous peak."""
    below = drawdown(equity) < 0
    best = run = 0
    for flag in below:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def probabilistic_sharpe(returns: np.ndarray, benchmark_sharpe_per_bar: float = 0.0) -> float:
    """P(true per-bar Sharpe > benchmark) given skew and kurtosis (Bailey & Lopez de Prado)."""
    n = returns.size
    sd = float(np.std(returns, ddof=1)) if n > 1 else 0.0
    if n < 3 or sd == 0:
        return float("nan")
    sr = float(np.mean(returns)) / sd
    z = (returns - returns.mean()) / returns.std()
    skew = float(np.mean(z**3))
    kurt = float(np.mean(z**4))
    denom = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    if denom <= 0:
        return float("nan")
    return _N.cdf((sr - benchmark_sharpe_per_bar) * math.sqrt(n - 1) / math.sqrt(denom))


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """Expected maximum per-bar Sharpe of ``n_trials`` unskilled configurations."""
    if n_trials <= 1:
        return 0.0
    return math.sqrt(sharpe_variance) * (
        (1 - EULER_GAMMA) * _N.inv_cdf(1 - 1 / n_trials)
        + EULER_GAMMA * _N.inv_cdf(1 - 1 / (n_trials * math.e))
    )


def deflated_sharpe(
    returns: np.ndarray, n_trials: int, trial_sharpe_variance: float | None = None
) -> float:
    """PSR against the Sharpe the best of ``n_trials`` luck-only configurations would show.

    The benchmark is Bailey & Lopez de Prado's expected maximum Sharpe of ``n_trials``
    zero-skill configurations, ``expected_max_sharpe(n_trials, trial_sharpe_variance)``.

    ``trial_sharpe_variance``: variance of the per-bar Sharpe across the configurations tried.
    ASSUMPTION when it is None (as in ``performance`` and ``tradeloop backtest --trials``): the
    sampling variance of this Sharpe estimate, (1 - skew*SR + (kurt - 1)/4 * SR**2) / (n - 1),
    stands in for it, i.e. the trials are taken to differ only by estimation noise, as
    independent zero-skill strategies on this sample would. Trials that are highly correlated
    (small parameter tweaks) spread less, so this over-deflates; trials of genuinely different
    strategies can spread more, so it under-deflates. Pass the variance measured across the
    trials' Sharpe ratios when it is known.
    """
    n = returns.size
    sd = float(np.std(returns, ddof=1)) if n > 1 else 0.0
    if n < 3 or sd == 0:
        return float("nan")
    if trial_sharpe_variance is None:
        sr = float(np.mean(returns)) / sd
        z = (returns - returns.mean()) / returns.std()
        skew, kurt = float(np.mean(z**3)), float(np.mean(z**4))
        trial_sharpe_variance = max(1.0 - skew * sr + (kurt - 1) / 4 * sr**2, 1e-12) / (n - 1)
    return probabilistic_sharpe(returns, expected_max_sharpe(n_trials, trial_sharpe_variance))


def bootstrap_sharpe_ci(
    returns: np.ndarray,
    periods_per_year: float,
    *,
    n_boot: int = 500,
    level: float = 0.95,
    seed: int = 0,
    block: int | None = None,
) -> tuple[float, float]:
    """Moving-block bootstrap CI of the annualized Sharpe (blocks keep autocorrelation)."""
    n = returns.size
    if n < 10:
        return float("nan"), float("nan")
    b = block or max(1, int(round(n ** (1 / 3))))
    rng = np.random.default_rng(seed)
    n_blocks = int(math.ceil(n / b))
    starts = rng.integers(0, n - b + 1, size=(n_boot, n_blocks))
    idx = (starts[:, :, None] + np.arange(b)[None, None, :]).reshape(n_boot, -1)[:, :n]
    samples = returns[idx]
    mean = samples.mean(axis=1)
    sd = samples.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(sd > 0, mean / sd, 0.0) * math.sqrt(periods_per_year)
    lo, hi = np.quantile(s, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def compound_annual_growth(total_return: float, years: float) -> float:
    """CAGR of ``total_return`` over ``years``: -1 when ruined, 0 over no time, inf on overflow.

    Computed in logs: ``(1 + total) ** (1 / years)`` overflows (OverflowError) on short, strong
    curves, e.g. +50 % in three 5m bars.
    """
    if total_return <= -1.0:
        return -1.0
    if years <= 0:
        return 0.0
    growth = math.log1p(total_return) / years
    return math.expm1(growth) if growth < 709.0 else math.inf


@dataclass(frozen=True)
class Performance:
    total_return: float
    cagr: float
    sharpe: float
    sortino: float
    calmar: float
    max_drawdown: float
    max_drawdown_duration_bars: int
    volatility_annual: float
    trades: int
    win_rate: float
    profit_factor: float
    avg_trade_return: float
    avg_trade_pnl: float
    expectancy: float
    exposure: float
    turnover: float
    fees_paid: float
    final_equity: float
    bars: int
    sharpe_ci_low: float
    sharpe_ci_high: float
    probabilistic_sharpe: float
    deflated_sharpe: float
    n_trials: int
    sharpe_units: str  # "annualized", or "per bar" for a window under MIN_ANNUALIZED_DAYS

    def as_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }


def performance(
    equity: np.ndarray,
    *,
    initial_cash: float,
    timeframe: str,
    trades: list[Trade],
    units: np.ndarray,
    fees_paid: float,
    traded_notional: float,
    n_trials: int = 1,
    n_boot: int = 500,
    min_annualized_days: float = MIN_ANNUALIZED_DAYS,
) -> Performance:
    equity = np.asarray(equity, dtype=np.float64)
    ppy = bars_per_year(timeframe)
    r = bar_returns(equity, initial_cash)
    n = equity.size
    total = float(equity[-1] / initial_cash - 1.0) if n else 0.0
    # EVALUATION.md: no annualized figure for a window shorter than 30 days (a 2.5-day window
    # "compounded" to a CAGR of 9.4e+04); Sharpe and Sortino are then per bar
    annualized = n / ppy * 365.0 >= min_annualized_days
    if not annualized:
        ppy = 1.0
    cagr = compound_annual_growth(total, n / bars_per_year(timeframe)) if annualized else math.nan
    marked = np.concatenate(([initial_cash], equity))  # drawdowns count from the initial cash
    dd = drawdown(marked)
    mdd = float(dd.min()) if dd.size else 0.0
    pnls = np.array([t.pnl for t in trades])
    rets = np.array([t.return_fraction for t in trades])
    wins, losses = pnls[pnls > 0], pnls[pnls <= 0]
    gross_loss = float(-losses.sum())
    win_rate = float(wins.size / pnls.size) if pnls.size else float("nan")
    avg_win = float(wins.mean()) if wins.size else 0.0
    avg_loss = float(losses.mean()) if losses.size else 0.0
    ci = bootstrap_sharpe_ci(r, ppy, n_boot=n_boot)
    return Performance(
        total_return=total,
        cagr=float(cagr),
        sharpe=sharpe(r, ppy),
        sortino=sortino(r, ppy),
        calmar=float(cagr / -mdd) if mdd < 0 else float("nan"),
        max_drawdown=mdd,
        max_drawdown_duration_bars=max_drawdown_duration(marked) if n else 0,
        volatility_annual=(
            (float(np.std(r, ddof=1) * math.sqrt(ppy)) if n > 1 else 0.0)
            if annualized
            else math.nan
        ),
        trades=len(trades),
        win_rate=win_rate,
        profit_factor=float(wins.sum() / gross_loss)
        if gross_loss > 0
        else (float("inf") if wins.size else float("nan")),
        avg_trade_return=float(rets.mean()) if rets.size else float("nan"),
        avg_trade_pnl=float(pnls.mean()) if pnls.size else float("nan"),
        expectancy=(win_rate * avg_win + (1 - win_rate) * avg_loss) if pnls.size else float("nan"),
        exposure=float(np.mean(np.asarray(units) != 0)) if n else 0.0,
        turnover=float(traded_notional / np.mean(equity)) if n else 0.0,
        fees_paid=float(fees_paid),
        final_equity=float(equity[-1]) if n else initial_cash,
        bars=n,
        sharpe_ci_low=ci[0],
        sharpe_ci_high=ci[1],
        probabilistic_sharpe=probabilistic_sharpe(r),
        deflated_sharpe=deflated_sharpe(r, n_trials),
        n_trials=n_trials,
        sharpe_units="annualized" if annualized else "per bar",
    )


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 3
) -> dict[str, Any]:
    """Accuracy, macro F1 and the confusion matrix (rows = true, columns = predicted)."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    f1s = []
    for k in range(n_classes):
        tp = cm[k, k]
        prec = tp / cm[:, k].sum() if cm[:, k].sum() else 0.0
        rec = tp / cm[k, :].sum() if cm[k, :].sum() else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return {
        "accuracy": float(np.trace(cm) / cm.sum()) if cm.sum() else float("nan"),
        "f1_macro": float(np.mean(f1s)),
        "confusion_matrix": cm.tolist(),
        "n": int(cm.sum()),
    }
