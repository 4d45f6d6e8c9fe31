"""trading.metrics against hand-computed figures, plus property tests of its invariants.

Every expectation below is worked out by hand in the comments (plain arithmetic on a tiny
curve), never by calling the formula under test a second time.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from trading.domain import Trade
from trading.metrics import (
    Performance,
    bar_returns,
    bars_per_year,
    classification_metrics,
    deflated_sharpe,
    drawdown,
    expected_max_sharpe,
    max_drawdown_duration,
    performance,
    probabilistic_sharpe,
    sharpe,
    sortino,
)

# ---------------------------------------------------------------------------------------------
# The hand-worked example: 8 daily bars ("1d" -> 365 bars a year), initial cash 100.
#
#   bar   return   equity
#    0     0.00    100.0
#    1    +0.10    110.0            <- peak
#    2    -0.10     99.0            below peak (1)
#    3    -0.10     89.1            below peak (2), trough: 89.1 / 110 - 1 = 0.81 - 1 = -0.19
#    4    +0.20    106.92           below peak (3)
#    5    +0.05    112.266          new peak -> the drawdown lasted 3 bars
#    6     0.00    112.266
#    7    +0.01    113.38866
# ---------------------------------------------------------------------------------------------
INITIAL = 100.0
RETURNS = [0.0, 0.10, -0.10, -0.10, 0.20, 0.05, 0.0, 0.01]
EQUITY = np.array([100.0, 110.0, 99.0, 89.1, 106.92, 112.266, 112.266, 113.38866])
UNITS = np.array([0.0, 1.0, 1.0, 1.0, 0.0, -2.0, -2.0, 0.0])  # 5 of 8 bars in a position


def _trade(entry: float, pnl: float) -> Trade:
    return Trade(
        symbol="ETH/BTC",
        direction=1,
        entry_ts_ms=0,
        exit_ts_ms=60_000,
        entry_price=entry,
        exit_price=entry + pnl,
        units=1.0,
        pnl=pnl,
        fees=0.0,
        exit_reason="exit",
    )


# pnl:     +10   -5    0   +20   -5      (a zero-P&L trade counts as a non-win)
# entry:   100   50   40   200   25      (1 unit each)
# return: +0.1 -0.1  0.0  +0.1  -0.2
TRADES = [_trade(100, 10), _trade(50, -5), _trade(40, 0), _trade(200, 20), _trade(25, -5)]


@pytest.fixture(scope="module")
def perf() -> Performance:
    # mean equity = (100 + 110 + 99 + 89.1 + 106.92 + 112.266 + 112.266 + 113.38866) / 8
    #             = 842.94066 / 8; a traded notional of 421.47033 is 4 x the mean equity.
    return performance(
        EQUITY,
        initial_cash=INITIAL,
        timeframe="1d",
        trades=TRADES,
        units=UNITS,
        fees_paid=1.25,
        traded_notional=421.47033,
        min_annualized_days=0,
    )


def test_bar_returns_of_the_hand_curve() -> None:
    assert bar_returns(EQUITY, INITIAL) == pytest.approx(RETURNS, abs=1e-12)
    assert bars_per_year("1d") == 365
    assert bars_per_year("5m") == 365 * 288  # 288 five-minute bars a day
    with pytest.raises(ValueError, match="unknown timeframe"):
        bars_per_year("7m")


def test_returns_and_growth(perf: Performance) -> None:
    # 1.1 * 0.9 * 0.9 * 1.2 * 1.05 * 1.01 = 0.891 * 1.2 * 1.05 * 1.01 = 1.1338866
    assert perf.total_return == pytest.approx(0.1338866, rel=1e-12)
    assert perf.final_equity == pytest.approx(113.38866)
    assert perf.bars == 8
    # 8 bars = 8/365 years -> CAGR = 1.1338866 ** (365 / 8) - 1 = 307.8439...
    assert perf.cagr == pytest.approx(307.84391, rel=1e-6)


def test_sharpe_sortino_volatility(perf: Performance) -> None:
    # mean = (0 + .1 - .1 - .1 + .2 + .05 + 0 + .01) / 8 = 0.16 / 8 = 0.02
    # deviations from 0.02: -.02 .08 -.12 -.12 .18 .03 -.02 -.01
    # squares: .0004 .0064 .0144 .0144 .0324 .0009 .0004 .0001 -> sum 0.0694
    # sample variance = 0.0694 / 7 = 0.009914285..., sd = 0.0995705...
    sd = math.sqrt(0.0694 / 7)
    # Sharpe = 0.02 / 0.0995705 * sqrt(365) = 0.200863 * 19.104973 = 3.837476
    assert perf.sharpe == pytest.approx(3.837476, rel=1e-6)
    assert perf.sharpe == pytest.approx(0.02 / sd * math.sqrt(365))
    # downside = min(r, 0) = 0 0 -.1 -.1 0 0 0 0 -> mean of squares = (.01 + .01) / 8 = 0.0025
    # downside deviation = 0.05 -> Sortino = 0.02 / 0.05 * sqrt(365) = 0.4 * 19.104973 = 7.64199
    assert perf.sortino == pytest.approx(7.641989, rel=1e-6)
    # annual volatility = 0.0995705 * 19.104973 = 1.902292
    assert perf.volatility_annual == pytest.approx(1.902292, rel=1e-6)


def test_drawdown_calmar(perf: Performance) -> None:
    assert perf.max_drawdown == pytest.approx(-0.19, abs=1e-12)  # 89.1 / 110 - 1
    assert perf.max_drawdown_duration_bars == 3  # bars 2, 3, 4 below the 110 peak
    # Calmar = CAGR / |max drawdown| = 307.84391 / 0.19 = 1620.231
    assert perf.calmar == pytest.approx(1620.2311, rel=1e-6)
    dd = drawdown(np.array([100.0, 110.0, 99.0, 121.0]))
    assert dd == pytest.approx([0.0, 0.0, -0.1, 0.0], abs=1e-12)


def test_trade_statistics(perf: Performance) -> None:
    assert perf.trades == 5
    assert perf.win_rate == pytest.approx(0.4)  # 2 wins (+10, +20) of 5
    # gross profit 30, gross loss 5 + 0 + 5 = 10 -> profit factor 3
    assert perf.profit_factor == pytest.approx(3.0)
    # average P&L = (10 - 5 + 0 + 20 - 5) / 5 = 4
    assert perf.avg_trade_pnl == pytest.approx(4.0)
    # expectancy = P(win) * avg win + P(loss) * avg loss = 0.4 * 15 + 0.6 * (-10 / 3) = 6 - 2 = 4
    assert perf.expectancy == pytest.approx(4.0)
    # average return = (.1 - .1 + 0 + .1 - .2) / 5 = -0.02: positive P&L, negative mean return
    assert perf.avg_trade_return == pytest.approx(-0.02)


def test_exposure_turnover_fees(perf: Performance) -> None:
    assert perf.exposure == pytest.approx(5 / 8)  # long 3 bars, short 2 bars, flat 3 bars
    assert perf.turnover == pytest.approx(4.0)  # 421.47033 / (842.94066 / 8)
    assert perf.fees_paid == 1.25


def test_honesty_fields_on_a_short_curve(perf: Performance) -> None:
    # fewer than 10 bars: no bootstrap interval; the JSON gets nulls, not NaN
    assert math.isnan(perf.sharpe_ci_low) and math.isnan(perf.sharpe_ci_high)
    assert 0.0 <= perf.probabilistic_sharpe <= 1.0
    assert perf.deflated_sharpe == pytest.approx(perf.probabilistic_sharpe)  # n_trials = 1
    d = perf.as_dict()
    assert d["sharpe_ci_low"] is None and d["trades"] == 5 and d["n_trials"] == 1


def test_no_trades_and_all_winners() -> None:
    eq = np.array([101.0, 102.0])
    none = performance(
        eq, initial_cash=100, timeframe="1h", trades=[], units=np.zeros(2), fees_paid=0,
        traded_notional=0, min_annualized_days=0,
    )  # fmt: skip
    assert none.trades == 0 and math.isnan(none.win_rate) and math.isnan(none.profit_factor)
    assert math.isnan(none.expectancy) and none.exposure == 0.0
    assert math.isnan(none.calmar)  # no drawdown: Calmar undefined
    winners = performance(
        eq, initial_cash=100, timeframe="1h", trades=[_trade(10, 1)], units=np.ones(2),
        fees_paid=0, traded_notional=0, min_annualized_days=0,
    )  # fmt: skip
    assert winners.profit_factor == math.inf and winners.win_rate == 1.0


def test_drawdown_duration_counts_bars_below_the_initial_cash() -> None:
    """Losing from the first bar is a drawdown from the initial cash, in depth AND duration."""
    # start 100, then 90, 95, 100, 100: bars 0 and 1 (90, 95) are below the starting 100 and
    # bar 2 recovers to it. Depth 90 / 100 - 1 = -10 %, duration 2 bars.
    p = performance(
        np.array([90.0, 95.0, 100.0, 100.0]), initial_cash=100, timeframe="1d", trades=[],
        units=np.ones(4), fees_paid=0, traded_notional=0, min_annualized_days=0,
    )  # fmt: skip
    assert p.max_drawdown == pytest.approx(-0.1)
    assert p.max_drawdown_duration_bars == 2


def test_empty_curve_has_no_growth() -> None:
    p = performance(
        np.array([]), initial_cash=100, timeframe="1d", trades=[], units=np.array([]),
        fees_paid=0, traded_notional=0, min_annualized_days=0,
    )  # fmt: skip
    assert p.total_return == 0.0 and p.cagr == 0.0 and p.max_drawdown == 0.0
    assert p.final_equity == 100 and p.bars == 0


def test_cagr_by_hand_and_on_overflow() -> None:
    from trading.metrics import compound_annual_growth

    assert compound_annual_growth(0.21, 2.0) == pytest.approx(0.1)  # 1.1 * 1.1 = 1.21
    assert compound_annual_growth(-0.19, 1.0) == pytest.approx(-0.19)
    # +50 % in three 5m bars: 1.5 ** (105120 / 3) overflows a float -> inf, not a crash
    p = performance(
        np.array([1.0, 1.0, 1.5]), initial_cash=1.0, timeframe="5m", trades=[],
        units=np.ones(3), fees_paid=0, traded_notional=0, min_annualized_days=0,
    )  # fmt: skip
    assert p.cagr == math.inf and p.total_return == pytest.approx(0.5)
    assert p.as_dict()["cagr"] is None  # JSON-safe


def test_ruined_curve() -> None:
    p = performance(
        np.array([50.0, 0.0]), initial_cash=100, timeframe="1d", trades=[], units=np.ones(2),
        fees_paid=0, traded_notional=0, min_annualized_days=0,
    )  # fmt: skip
    assert p.total_return == -1.0 and p.cagr == -1.0 and p.max_drawdown == -1.0


# ---------------------------------------------------------------------------------------------
# Probabilistic and deflated Sharpe, by hand.
#
# r = [.03, -.01, .03, -.01]: mean .01, population sd .02, z = +-1 -> skew 0, kurtosis 1.
# sample sd = .02 * sqrt(4/3) -> per-bar Sharpe sr = .01 / (.02 * sqrt(4/3)) = sqrt(3)/4.
# PSR = Phi(sr * sqrt(n - 1) / sqrt(1 - skew*sr + (kurt - 1)/4 * sr^2)) = Phi(sqrt(3)/4 * sqrt(3))
#     = Phi(0.75) = 0.77337 (normal table).
# ---------------------------------------------------------------------------------------------
R4 = np.array([0.03, -0.01, 0.03, -0.01])


def test_probabilistic_sharpe_by_hand() -> None:
    assert probabilistic_sharpe(R4) == pytest.approx(0.773373, abs=1e-6)
    # against a benchmark of sqrt(3)/4 per bar (the observed one): Phi(0) = 0.5
    assert probabilistic_sharpe(R4, math.sqrt(3) / 4) == pytest.approx(0.5)
    assert math.isnan(probabilistic_sharpe(np.array([0.01, 0.02])))  # < 3 bars
    assert math.isnan(probabilistic_sharpe(np.zeros(10)))  # no dispersion


def test_expected_max_sharpe_by_hand() -> None:
    # E[max of N] = sqrt(V) * ((1 - g) * Phi^-1(1 - 1/N) + g * Phi^-1(1 - 1/(N e))), g = 0.5772
    # N = 2: Phi^-1(0.5) = 0; 1 - 1/(2e) = 0.816060, Phi^-1(0.816060) = 0.900453
    #        -> 0.577216 * 0.900453 = 0.519755 (times sqrt(V) = 1)
    assert expected_max_sharpe(1, 1.0) == 0.0
    assert expected_max_sharpe(2, 1.0) == pytest.approx(0.519755, abs=1e-6)
    assert expected_max_sharpe(2, 4.0) == pytest.approx(2 * 0.519755, abs=1e-6)  # sqrt(V) = 2


def test_deflated_sharpe_by_hand() -> None:
    # Default trials variance = the sampling variance of sr: (1 - 0 + 0) / (n - 1) = 1/3.
    # Benchmark = sqrt(1/3) * 0.519755 = 0.300081; PSR z = (0.433013 - 0.300081) * sqrt(3)
    # = 0.75 - 0.519755 = 0.230245 -> Phi(0.230245) = 0.591049
    assert deflated_sharpe(R4, 1) == pytest.approx(0.773373, abs=1e-6)
    assert deflated_sharpe(R4, 2) == pytest.approx(0.591049, abs=1e-6)
    # An explicit trials variance of 0.75 (sd 0.866025): benchmark 0.866025 * 0.519755 = 0.450122
    # z = (0.433013 - 0.450122) * sqrt(3) = -0.029634 -> Phi = 0.5 - 0.398942 * 0.029634 = 0.488178
    assert deflated_sharpe(R4, 2, trial_sharpe_variance=0.75) == pytest.approx(0.488180, abs=3e-6)


def test_classification_metrics_by_hand() -> None:
    # true 0 0 1 2 2 / predicted 0 1 1 2 0 -> confusion rows (true): [1 1 0] [0 1 0] [1 0 1]
    # F1: class 0 p=1/2 r=1/2 -> 1/2; class 1 p=1/2 r=1 -> 2/3; class 2 p=1 r=1/2 -> 2/3
    # macro F1 = (1/2 + 2/3 + 2/3) / 3 = 11/18
    m = classification_metrics(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]))
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["f1_macro"] == pytest.approx(11 / 18)
    assert m["n"] == 5


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------
bar_return = st.floats(-0.5, 0.5, allow_nan=False, allow_infinity=False)
returns_list = st.lists(bar_return, min_size=3, max_size=60)


def _dispersed(r: list[float]) -> bool:
    return float(np.std(r)) > 1e-6


@settings(max_examples=60, deadline=None)
@given(r=returns_list, initial=st.floats(1.0, 1e6))
def test_drawdown_bounds_and_consistency(r: list[float], initial: float) -> None:
    equity = initial * np.cumprod(1.0 + np.array(r))
    p = performance(
        equity, initial_cash=initial, timeframe="5m", trades=[], units=np.ones(len(r)),
        fees_paid=0, traded_notional=0, min_annualized_days=0, n_boot=20,
    )  # fmt: skip
    assert -1.0 <= p.max_drawdown <= 0.0
    assert 0 <= p.max_drawdown_duration_bars <= len(r)
    assert (p.max_drawdown < 0) == (p.max_drawdown_duration_bars > 0)
    assert p.total_return > -1.0
    assert p.total_return == pytest.approx(float(np.prod(1.0 + np.array(r))) - 1.0, abs=1e-9)
    assert np.all(drawdown(equity) <= 0.0)


@settings(max_examples=60, deadline=None)
@given(r=returns_list, scale=st.floats(0.01, 100.0))
def test_sharpe_and_sortino_are_scale_free(r: list[float], scale: float) -> None:
    # Float limits, not the metric: a return like 1e-160 squares to 0 once scaled (no downside
    # left), and a mean that cancels to ~0 carries rounding that a tiny spread magnifies.
    x = np.round(np.array(r), 12)
    assume(float(np.std(x)) > 1e-3)
    assert sharpe(scale * x, 365) == pytest.approx(sharpe(x, 365), rel=1e-9, abs=1e-9)
    assert sortino(scale * x, 365) == pytest.approx(sortino(x, 365), rel=1e-9, abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(level=st.floats(1e-3, 1e7), n=st.integers(1, 50))
def test_constant_equity_has_no_return_and_no_drawdown(level: float, n: int) -> None:
    p = performance(
        np.full(n, level), initial_cash=level, timeframe="1h", trades=[], units=np.zeros(n),
        fees_paid=0, traded_notional=0, min_annualized_days=0, n_boot=20,
    )  # fmt: skip
    assert p.total_return == 0.0 and p.cagr == 0.0
    assert p.max_drawdown == 0.0 and p.max_drawdown_duration_bars == 0
    assert p.sharpe == 0.0 and p.sortino == 0.0 and p.volatility_annual == 0.0
    assert max_drawdown_duration(np.full(n, level)) == 0


@settings(max_examples=60, deadline=None)
@given(r=returns_list, bench=st.floats(-1.0, 1.0))
def test_psr_is_a_probability(r: list[float], bench: float) -> None:
    x = np.array(r)
    psr = probabilistic_sharpe(x, bench)
    if _dispersed(r):
        assert 0.0 <= psr <= 1.0
    for trials in (1, 10, 1000):
        dsr = deflated_sharpe(x, trials)
        assert math.isnan(dsr) or 0.0 <= dsr <= 1.0


@settings(max_examples=60, deadline=None)
@given(
    half=st.lists(st.floats(0.001, 0.05), min_size=5, max_size=40),
    mu=st.floats(-0.02, 0.02),
    step=st.floats(1e-4, 0.02),
)
def test_psr_increases_with_the_observed_sharpe(half: list[float], mu: float, step: float) -> None:
    """Same dispersion and shape (symmetric, skew 0), higher mean -> higher Sharpe -> higher PSR."""
    base = np.concatenate([np.array(half), -np.array(half)])  # std >= 0.001: always dispersed
    low, high = base + mu, base + mu + step
    assert sharpe(high, 1) > sharpe(low, 1)
    assert probabilistic_sharpe(high) >= probabilistic_sharpe(low)
    # and lower against a higher benchmark
    assert probabilistic_sharpe(low, 0.1) <= probabilistic_sharpe(low, 0.0)


@settings(max_examples=40, deadline=None)
@given(r=st.lists(bar_return, min_size=10, max_size=60), var=st.none() | st.floats(1e-4, 1.0))
def test_deflated_sharpe_falls_as_trials_grow(r: list[float], var: float | None) -> None:
    assume(_dispersed(r))
    x = np.array(r)
    trials = [1, 2, 5, 10, 100, 1000, 10**6]
    dsr = [deflated_sharpe(x, n, var) for n in trials]
    assert all(a >= b for a, b in zip(dsr, dsr[1:], strict=False))
    assert dsr[0] == pytest.approx(probabilistic_sharpe(x))
    emax = [expected_max_sharpe(n, 1.0) for n in trials]
    assert all(a < b for a, b in zip(emax, emax[1:], strict=False))


def test_no_annualized_figure_under_thirty_days() -> None:
    """EVALUATION.md: a window shorter than 30 days gets no CAGR, Calmar or annual volatility,
    and its Sharpe and Sortino are per bar (the same hand curve as above: 8 daily bars)."""
    short = performance(
        EQUITY,
        initial_cash=INITIAL,
        timeframe="1d",
        trades=TRADES,
        units=UNITS,
        fees_paid=1.25,
        traded_notional=421.47033,
    )
    assert short.sharpe_units == "per bar"
    assert math.isnan(short.cagr) and math.isnan(short.calmar)
    assert math.isnan(short.volatility_annual)
    sd = math.sqrt(0.0694 / 7)
    assert short.sharpe == pytest.approx(0.02 / sd)  # not x sqrt(365)
    assert short.sortino == pytest.approx(0.4)
    as_dict = short.as_dict()
    assert as_dict["cagr"] is None and as_dict["calmar"] is None
    long = performance(
        np.full(30, INITIAL), initial_cash=INITIAL, timeframe="1d", trades=[], units=np.zeros(30),
        fees_paid=0.0, traded_notional=0.0,
    )  # fmt: skip
    assert long.sharpe_units == "annualized" and long.cagr == 0.0
