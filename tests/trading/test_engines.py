"""The vectorized and the event-driven engine agree on real data; hand-computed trades."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.data import REAL_CANDLE_FILES as CANDLE_FILES
from trading.backtest import (
    BacktestConfig,
    SignalSeries,
    load_candle_file,
    run_event_driven,
    run_vectorized,
)
from trading.decision import RsiDecider, RsiRule, rolling_volatility, rsi_rule_signals
from trading.domain import FeeModel
from trading.risk import RiskLimits

CONFIGS = {
    "long_flat": RiskLimits(),
    "stops_and_kill_switch": RiskLimits(
        stop_loss_vol_mult=2.0, take_profit_vol_mult=3.0, max_drawdown_fraction=0.03
    ),
    "long_short_half_size": RiskLimits(
        allow_short=True, stop_loss_vol_mult=3.0, max_position_fraction=0.5
    ),
}


@pytest.mark.parametrize("name", CANDLE_FILES)
@pytest.mark.parametrize("limits_name", list(CONFIGS))
def test_engines_agree_on_real_data(candles_dir: Path, name: str, limits_name: str) -> None:
    candles = load_candle_file(candles_dir / name)
    limits = CONFIGS[limits_name]
    config = BacktestConfig(fees=FeeModel(0.0005, 0.001), slippage_fraction=0.0004, limits=limits)
    rule = RsiRule(allow_short=limits.allow_short)
    signals = SignalSeries.of(rsi_rule_signals(candles.close, rule))
    vol = rolling_volatility(candles.close, config.volatility_window)
    vec = run_vectorized(candles, signals, config, volatility=vol)
    ev = run_event_driven(candles, signals, config, volatility=vol)
    assert np.max(np.abs(vec.equity - ev.equity)) <= 1e-9
    assert len(vec.trades) == len(ev.trades)
    assert [t.exit_reason for t in vec.trades] == [t.exit_reason for t in ev.trades]
    assert vec.kill_switch_bar == ev.kill_switch_bar
    # The live loop's online deciders (RSI and volatility computed bar by bar) give the same.
    decider = RsiDecider(rule)
    online = run_event_driven(candles, lambda bar: decider.update(bar.close), config)
    assert np.max(np.abs(vec.equity - online.equity)) <= 1e-9
    if limits_name == "long_flat" and name != "XRP_ETH-5m.feather":
        assert len(vec.trades) > 0  # the comparison covers real trading


def test_hand_computed_slice(eth_btc) -> None:  # type: ignore[no-untyped-def]
    """6 real ETH/BTC 5m bars, signals [1, 1, 0, 1, 0, 0], taker fee 0.1 %, no slippage.

    bar  open        close       signal   action (at the NEXT bar's open)
    0    0.0984      0.0994766   1        buy at bar 1 open 0.09946999
    1    0.09946999  0.09969     1        hold
    2    0.09969     0.09999     0        sell at bar 3 open 0.09999
    3    0.09999     0.09900001  1        buy at bar 4 open 0.099
    4    0.099       0.099       0        sell at bar 5 open 0.09899779
    5    0.09899779  0.0971      0        -

    Buy size: the target is 1000 / 0.0994766 = 10052.6 units, more than 1000 cash pays for with
    the fee, so the buy is cut to 1000 / (0.09946999 x 1.001) = 10043.24 units.
    (Prices are the file's float64 values, e.g. 0.09946999000000001.)
    """
    c = eth_btc.slice(0, 6)
    o1, o3, o4, o5 = 0.09946999000000001, 0.09999000000000001, 0.099, 0.09899779
    assert c.open.tolist() == [0.0984, o1, 0.09969000000000001, o3, o4, o5]
    assert c.close.tolist() == [
        0.0994766,
        0.09969000000000001,
        0.09999000000000001,
        0.09900001,
        0.099,
        0.0971,
    ]
    signals = SignalSeries.of(np.array([1, 1, 0, 1, 0, 0]))
    config = BacktestConfig(initial_cash=1000.0, fees=FeeModel(0.001, 0.001))
    f = 0.001
    u1 = 1000 / (o1 * (1 + f))
    e1 = u1 * o3 * (1 - f)  # cash after the first sell
    u2 = e1 / (o4 * (1 + f))
    e2 = u2 * o5 * (1 - f)
    expected_equity = [1000.0, u1 * c.close[1], u1 * c.close[2], e1, u2 * 0.099, e2]
    # the same numbers written out
    assert u1 == pytest.approx(10043.2402, abs=1e-4)
    assert expected_equity == pytest.approx(
        [1000.0, 1001.2106, 1004.2236, 1003.2194, 1002.2171, 1001.1926], abs=1e-4
    )
    for engine in (run_vectorized, run_event_driven):
        r = engine(c, signals, config)
        assert r.equity.tolist() == pytest.approx(expected_equity, abs=1e-9)
        assert len(r.trades) == 2
        t1, t2 = r.trades
        assert (t1.entry_price, t1.exit_price, t2.entry_price, t2.exit_price) == (o1, o3, o4, o5)
        assert t1.units == pytest.approx(u1, rel=1e-12)
        assert t1.pnl == pytest.approx(e1 - 1000.0, abs=1e-9)
        assert t2.pnl == pytest.approx(e2 - e1, abs=1e-9)
        assert r.fees_paid == pytest.approx(f * (u1 * o1 + u1 * o3 + u2 * o4 + u2 * o5), abs=1e-9)
        assert r.units.tolist() == pytest.approx([0, u1, u1, 0, u2, 0], abs=1e-9)


def test_stops_fill_at_stop_or_gap_open(eth_btc) -> None:  # type: ignore[no-untyped-def]
    """A long stopped out: the fill is min(open, stop) x (1 - slippage), taker fee."""
    c = eth_btc.slice(0, 200)
    config = BacktestConfig(
        fees=FeeModel(0.0, 0.001),
        slippage_fraction=0.0002,
        limits=RiskLimits(stop_loss_vol_mult=1.0),
    )
    vol = rolling_volatility(c.close, 20)
    signals = SignalSeries.of(np.ones(len(c)))
    r = run_event_driven(c, signals, config, volatility=vol)
    stop_fills = [f for f in r.fills if f.reason == "stop_loss"]
    assert stop_fills, "expected a stop-loss on this stretch"
    first_entry = r.fills[0]
    entry_bar = int(np.flatnonzero(c.ts_ms == first_entry.ts_ms)[0])
    stop_price = first_entry.price * (1 - 1.0 * vol[entry_bar - 1])
    s = stop_fills[0]
    k = int(np.flatnonzero(c.ts_ms == s.ts_ms)[0])
    assert c.low[k] <= stop_price
    assert np.all(c.low[entry_bar:k] > stop_price)  # the first bar that touched it
    assert s.reference_price == min(c.open[k], stop_price)
    assert s.price == pytest.approx(s.reference_price * (1 - 0.0002), rel=1e-15)
    # after the stop the long is not re-entered while the signal stays long
    assert len(r.trades) == 1 and r.units[k:].max() == 0
