"""Backtest engine throughput: vectorized vs event-driven, on real candles tiled to 1M bars.

The real UNITTEST/BTC 1m file (13,681 candles) is chained end to end (each copy rescaled to
continue from the previous close) up to 1,000,000 candles. Strategy: the RSI rule with
volatility stops and fees, so the engines handle entries, exits and stop-outs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.results import record
from trading.backtest import (
    BacktestConfig,
    Candles,
    SignalSeries,
    load_candle_file,
    run_event_driven,
    run_vectorized,
)
from trading.decision import rolling_volatility, rsi_rule_signals
from trading.domain import FeeModel
from trading.risk import RiskLimits

DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "candles" / "UNITTEST_BTC-1m.feather"
)


def tiled(n: int) -> Candles:
    base = load_candle_file(DATA)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("open", "high", "low", "close", "volume")}
    scale, total = 1.0, 0
    while total < n:
        for k in parts:
            parts[k].append(getattr(base, k) * (scale if k != "volume" else 1.0))
        scale *= base.close[-1] / base.close[0]
        total += len(base)
    arrays = {k: np.concatenate(v)[:n] for k, v in parts.items()}
    ts = np.arange(n, dtype=np.int64) * 60_000 + int(base.ts_ms[0])
    return Candles("TILED/BTC", "1m", ts, **arrays)


def _best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    n = 1_000_000
    candles = tiled(n)
    config = BacktestConfig(
        fees=FeeModel(0.0005, 0.001),
        slippage_fraction=0.0005,
        limits=RiskLimits(stop_loss_vol_mult=3.0, take_profit_vol_mult=6.0),
    )
    t0 = time.perf_counter()
    signals = SignalSeries.of(rsi_rule_signals(candles.close))
    vol = rolling_volatility(candles.close, config.volatility_window)
    prep_s = time.perf_counter() - t0
    vec_s = _best(lambda: run_vectorized(candles, signals, config, volatility=vol), 3)
    vec = run_vectorized(candles, signals, config, volatility=vol)
    m = 200_000
    sub = candles.slice(0, m)
    sub_sig = SignalSeries.of(signals.signal[:m], signals.confidence[:m], signals.size[:m])
    ev_s = _best(lambda: run_event_driven(sub, sub_sig, config, volatility=vol[:m]), 1)
    ev = run_event_driven(sub, sub_sig, config, volatility=vol[:m])
    vec_sub = run_vectorized(sub, sub_sig, config, volatility=vol[:m])
    diff = float(np.max(np.abs(ev.equity - vec_sub.equity)))
    vec_rate, ev_rate = n / vec_s, m / ev_s
    md = f"""
Real UNITTEST/BTC 1m candles tiled to {n:,} bars; RSI rule, 3-sigma stop, 6-sigma take-profit,
0.1 % taker fee, 0.05 % slippage. Best of 3 for the vectorized engine, 1 run for the
event-driven one (on the first {m:,} bars).

| engine | candles | time (s) | candles/s | trades |
| --- | ---: | ---: | ---: | ---: |
| vectorized (`run_vectorized`) | {n:,} | {vec_s:.3f} | {vec_rate:,.0f} | {len(vec.trades):,} |
| event-driven (`run_event_driven`) | {m:,} | {ev_s:.3f} | {ev_rate:,.0f} | {len(ev.trades):,} |

Vectorized / event-driven throughput: **{vec_rate / ev_rate:,.1f}x**. Signal and volatility
computation for 1M bars (polars/numpy, not included above): {prep_s:.3f} s. Max equity
difference between the engines on the {m:,}-bar run: {diff:.2e}.
"""
    print(md)
    record("Backtest engines", md)


if __name__ == "__main__":
    main()
