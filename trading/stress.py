"""Stress scenarios: replay a strategy on deliberately damaged copies of real candles.

* ``crash_30pct``: one bar closes 30 % below its open and prices stay there;
* ``vol_x3``: for a stretch, every bar's log move (close to close, and open/high/low around the
  close) is tripled; prices after the stretch keep the resulting level;
* ``illiquid_spread``: for a stretch, slippage is 20x the base (at least 0.5 %) and volume 5 %;
* ``outage_gap``: the exchange sends nothing for a stretch (bars removed): pending orders and
  stops execute at the first bar after the gap, at whatever price it opens.

Each scenario is replayed through the event-driven engine (the live loop's step) and reported
next to the undamaged run: drawdown, return, stop exits and whether the kill switch fired.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from trading.backtest import BacktestConfig, Candles, SignalSeries, run_event_driven
from trading.broker import ScheduledSlippage
from trading.metrics import drawdown

SCENARIOS = ("baseline", "crash_30pct", "vol_x3", "illiquid_spread", "outage_gap")


def stressed_candles(
    candles: Candles, scenario: str, *, at_fraction: float = 0.5, stretch_bars: int = 60
) -> tuple[Candles, dict[int, float]]:
    """(damaged candles, slippage overrides by ts_ms) for one scenario."""
    n = len(candles)
    k = min(max(int(n * at_fraction), 1), n - 1)
    end = min(k + stretch_bars, n)
    o, h, lo, c, v = (
        a.copy() for a in (candles.open, candles.high, candles.low, candles.close, candles.volume)
    )
    overrides: dict[int, float] = {}
    ts = candles.ts_ms.copy()
    if scenario == "baseline":
        pass
    elif scenario == "crash_30pct":
        new_close = o[k] * 0.7
        factor = new_close / c[k]
        c[k], lo[k] = new_close, min(lo[k] * factor, new_close)
        h[k] = max(o[k], h[k] * factor if h[k] * factor > o[k] else o[k])
        for a in (o, h, lo, c):
            a[k + 1 :] *= factor
    elif scenario == "vol_x3":
        level = c[k - 1]
        for i in range(k, end):
            step = (candles.close[i] / candles.close[i - 1]) ** 3
            new_c = level * step
            o[i], h[i], lo[i] = (new_c * (x / c[i]) ** 3 for x in (o[i], h[i], lo[i]))
            c[i] = new_c
            level = new_c
        factor = level / candles.close[end - 1]
        for a in (o, h, lo, c):
            a[end:] *= factor
        h[k:end] = np.maximum.reduce([h[k:end], o[k:end], c[k:end]])
        lo[k:end] = np.minimum.reduce([lo[k:end], o[k:end], c[k:end]])
    elif scenario == "illiquid_spread":
        v[k:end] *= 0.05
        overrides = {int(t): -1.0 for t in ts[k:end]}  # filled in by run_stress
    elif scenario == "outage_gap":
        keep = np.ones(n, bool)
        keep[k:end] = False
        return Candles(
            candles.symbol,
            candles.timeframe,
            ts[keep],
            o[keep],
            h[keep],
            lo[keep],
            c[keep],
            v[keep],
        ), {}
    else:
        raise ValueError(f"unknown stress scenario {scenario!r}; known: {SCENARIOS}")
    return Candles(candles.symbol, candles.timeframe, ts, o, h, lo, c, v), overrides


def run_stress(
    candles: Candles,
    make_signals: Callable[[Candles], SignalSeries],
    config: BacktestConfig,
    scenarios: tuple[str, ...] = SCENARIOS,
) -> list[dict[str, Any]]:
    """One row per scenario: its effect on drawdown and on the risk controls."""
    rows = []
    for name in scenarios:
        damaged, overrides = stressed_candles(candles, name)
        wide = max(20 * config.slippage_fraction, 0.005)
        slip = ScheduledSlippage(config.slippage_fraction, {t: wide for t in overrides})
        result = run_event_driven(damaged, make_signals(damaged), config, slippage=slip)
        eq = np.concatenate(([config.initial_cash], result.equity))
        rows.append(
            {
                "scenario": name,
                "bars": len(damaged),
                "total_return": float(eq[-1] / eq[0] - 1),
                "max_drawdown": float(drawdown(eq).min()),
                "worst_bar_return": float(np.min(eq[1:] / eq[:-1] - 1)),
                "trades": len(result.trades),
                "stop_exits": result.stop_exits,
                "kill_switch_fired": result.kill_switch_bar is not None,
                "kill_switch_bar": result.kill_switch_bar,
                "fees_paid": result.fees_paid,
            }
        )
    return rows


def with_risk(config: BacktestConfig, **changes: Any) -> BacktestConfig:
    return replace(config, limits=replace(config.limits, **changes))
