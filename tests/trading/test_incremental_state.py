"""The serving loop's per-bar state kept incrementally (for speed) equals its plain definition.

``Feedback.hits`` is a running count of the hits in the rolling window, and the max-drawdown
lock's look-back peak a monotonic queue; both are checked here against a brute-force recount
on random sequences, through model resets, snapshots and old (whole-window) snapshots."""

from __future__ import annotations

import random

import pytest

from trading.feedback import CLASSES, Feedback, FeedbackConfig, Pending
from trading.protections import ProtectionConfig, Protections


def _recount(fb: Feedback) -> int:
    return sum(1 for p, a in fb.recent if p == a)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rolling_hits_equal_a_recount(seed: int) -> None:
    rng = random.Random(seed)
    fb = Feedback(FeedbackConfig(window=25))
    close = 100.0
    for bar in range(670):  # the last reset is at bar 581: the window is full again by the end
        # one prediction a bar, horizon 1..4, a tenth uncounted (fallback), some unjudgeable
        fb.add(
            Pending(
                "X/Y",
                bar,
                "m",
                rng.choice(CLASSES),
                close,
                float("nan") if rng.random() < 0.05 else 0.002,
                1,
                rng.randint(1, 4),
                rng.random() > 0.1,
            )
        )
        close *= 1 + rng.gauss(0, 0.004)
        fb.on_bar("X/Y", close)
        assert fb.hits == _recount(fb)
        if bar % 97 == 96:
            fb.reset_model()
            assert fb.hits == 0
        if bar % 61 == 60:
            restored = Feedback(FeedbackConfig(window=25))
            restored.load(fb.to_dict())
            assert restored.hits == fb.hits == _recount(restored)
            fb = restored
    assert fb.resolved == 25 and 0 < fb.hits < 25


def _brute_peak(history: list[float], lookback: int) -> float:
    return max(history[-lookback:])


@pytest.mark.parametrize("seed", [0, 1])
def test_drawdown_peak_is_the_lookback_max(seed: int) -> None:
    rng = random.Random(seed)
    lookback = 30
    config = ProtectionConfig(
        drawdown_lock_fraction=0.05, drawdown_lookback_candles=lookback, drawdown_lock_candles=7
    )
    fast = Protections(config)
    equity, history = 10_000.0, []
    locks = 0
    for candle in range(2_000):
        equity *= 1 + rng.gauss(0, 0.01)
        if rng.random() < 0.05:
            equity = round(equity, -2)  # ties: equal equities in the window
        history.append(equity)
        before = fast.global_lock_until
        message = fast.on_equity(candle, equity)
        peak = _brute_peak(history, lookback)
        assert fast.equity_window[0][1] == peak
        should_lock = candle >= before and equity < peak * (1 - 0.05)
        assert (message is not None) == should_lock
        locks += message is not None
        if candle % 333 == 0:
            restored = Protections(config)
            restored.load(fast.to_dict())
            assert list(restored.equity_window) == list(fast.equity_window)
            fast = restored
    assert locks > 0  # the lock fired, so the comparison above covered both outcomes


def test_a_whole_window_snapshot_loads_as_the_same_peak() -> None:
    """State saved before the monotonic queue held every (candle, equity) of the window."""
    config = ProtectionConfig(drawdown_lookback_candles=5)
    old = {
        "global_lock_until": -1,
        "global_lock_reason": "",
        "symbol_lock_until": {},
        "stoploss_candles": [],
        "equity_window": [[1, 100.0], [2, 104.0], [3, 101.0], [4, 104.0], [5, 102.0]],
    }
    p = Protections(config)
    p.load(old)
    assert list(p.equity_window) == [(4, 104.0), (5, 102.0)]
    p.on_equity(6, 90.0)  # 13.5 % below the peak 104 of candles 2..6
    assert "peak 104.00" in p.global_lock_reason
