"""Fees and slippage move results by exactly their stated amounts (computed analytically)."""

from __future__ import annotations

import numpy as np
import pytest

from trading.backtest import BacktestConfig, SignalSeries, run_event_driven, run_vectorized
from trading.decision import rsi_rule_signals
from trading.domain import FeeModel
from trading.risk import RiskLimits

HALF = RiskLimits(max_position_fraction=0.5)  # never cash-limited: sizes are w x E / close


def _cfg(fee: float, slip: float) -> BacktestConfig:
    return BacktestConfig(
        initial_cash=10_000.0, fees=FeeModel(fee, fee), slippage_fraction=slip, limits=HALF
    )


def test_one_round_trip_cost_delta_is_exact(eth_btc) -> None:  # type: ignore[no-untyped-def]
    c = eth_btc.slice(0, 50)
    sig = np.zeros(len(c), np.int8)
    sig[3:20] = 1  # decide long at bar 3 (buy at bar 4 open), flat at bar 20 (sell at 21 open)
    signals = SignalSeries.of(sig)
    units = 0.5 * 10_000.0 / c.close[3]
    p_in, p_out = c.open[4], c.open[21]
    base = run_vectorized(c, signals, _cfg(0.0, 0.0)).equity[-1]
    fee, slip = 0.001, 0.0005
    with_fee = run_vectorized(c, signals, _cfg(fee, 0.0)).equity[-1]
    with_slip = run_vectorized(c, signals, _cfg(0.0, slip)).equity[-1]
    assert with_fee - base == pytest.approx(-fee * units * (p_in + p_out), abs=1e-9)
    assert with_slip - base == pytest.approx(-slip * units * (p_in + p_out), abs=1e-9)
    both = run_event_driven(c, signals, _cfg(fee, slip)).equity[-1]
    expected = units * (p_out * (1 - slip) - p_in * (1 + slip)) - fee * units * (
        p_in * (1 + slip) + p_out * (1 - slip)
    )
    assert both - 10_000.0 == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(("fee", "slip"), [(0.0, 0.0), (0.001, 0.0), (0.0, 0.001), (0.00075, 5e-4)])
def test_many_trades_equity_follows_the_cost_formula(eth_btc, fee: float, slip: float) -> None:  # type: ignore[no-untyped-def]
    """Walk the RSI rule's trades: E' = E + u (out(1-s) - in(1+s)) - f u (in(1+s) + out(1-s))."""
    c = eth_btc
    signals = SignalSeries.of(rsi_rule_signals(c.close))
    r = run_event_driven(c, signals, _cfg(fee, slip))
    assert len(r.trades) >= 10
    sig = signals.signal
    entries = np.flatnonzero((sig[1:] == 1) & (sig[:-1] == 0)) + 1
    if sig[0] == 1:
        entries = np.concatenate(([0], entries))
    equity = 10_000.0
    for t in entries:
        if t + 1 >= len(c):
            break
        exits = np.flatnonzero(sig[t + 1 :] == 0)
        if not exits.size or t + 1 + exits[0] + 1 >= len(c):
            break
        x = t + 1 + int(exits[0])
        u = 0.5 * equity / c.close[t]
        p_in, p_out = c.open[t + 1] * (1 + slip), c.open[x + 1] * (1 - slip)
        equity += u * (p_out - p_in) - fee * u * (p_in + p_out)
    closed_equity = 10_000.0 + sum(t.pnl for t in r.trades)
    assert closed_equity == pytest.approx(equity, rel=1e-12)
    assert r.fees_paid == pytest.approx(fee * r.traded_notional, rel=1e-12)
