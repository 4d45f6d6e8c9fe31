"""A perpetual contract on the simulated exchange: mark prices, funding rates, open interest.

Everything is a deterministic function of time and of the underlying's 1m candles (from
``pipelines.simulated_exchange.SimulatedExchange`` or any 1m table), so the loopback
exchange, the offline demo and the tests all see the same values, and nothing at time t
depends on a candle after t:

* the **premium** of the contract over its mark price is a smooth function of time,
  up to about 15 basis points, slowly changing sign;
* the **mark price** candles are the underlying's 1m candles divided by ``1 + premium`` at
  their open time (so the basis, trade close / mark close - 1, equals the premium);
* the **funding rate** at each funding time (every 8 h, stamped ``FUNDING_STAMP_MS`` late, as
  Binance's are) is Binance's formula on the premium: the mean premium over the interval that
  ends there plus clamp(0.01 % - premium mean, ±0.05 %), clamped to ±0.75 %;
* the **open interest** at each period boundary is a positive smooth function of time in
  contracts; its value is that times the underlying's last close before the boundary.
"""

from __future__ import annotations

import numpy as np

from pipelines.resample import timeframe_ms

HOUR_MS = 3_600_000
FUNDING_INTERVAL = "8h"
FUNDING_INTERVAL_MS = 8 * HOUR_MS
FUNDING_STAMP_MS = 17  # Binance stamps funding a few ms after the hour (00:00:00.017)
INTEREST_RATE = 0.0001  # per funding interval (0.01 %), Binance's default
MAX_FUNDING_RATE = 0.0075
BASE_OPEN_INTEREST = 1_000_000.0


def premium(ts_ms: np.ndarray | int) -> np.ndarray:
    """The contract's premium over its mark price at ``ts_ms`` (a fraction, |p| < 1.6e-3)."""
    t = np.asarray(ts_ms, dtype=np.float64) / HOUR_MS
    return np.asarray(
        1.2e-3 * np.sin(2 * np.pi * t / 61.0) + 3e-4 * np.sin(2 * np.pi * t / 7.3 + 1.0) + 5e-5
    )


def mark_from_trade(
    ts: np.ndarray, opens: np.ndarray, highs: np.ndarray, lows: np.ndarray, closes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mark-price 1m candles from the contract's 1m trade candles (same open times)."""
    scale = 1.0 / (1.0 + premium(ts))
    return opens * scale, highs * scale, lows * scale, closes * scale


def funding_times(since_ms: int, until_ms: int) -> np.ndarray:
    """The funding times (stamped, epoch ms) in [since_ms, until_ms)."""
    first = since_ms - FUNDING_STAMP_MS
    first += (-first) % FUNDING_INTERVAL_MS
    stamps = np.arange(first, until_ms - FUNDING_STAMP_MS, FUNDING_INTERVAL_MS, dtype=np.int64)
    return stamps + FUNDING_STAMP_MS


def funding_rate_at(stamps: np.ndarray) -> np.ndarray:
    """Binance's funding formula on the premium, sampled each minute of the interval that ends
    at each funding time (only times before it)."""
    boundary = np.asarray(stamps, dtype=np.int64) - FUNDING_STAMP_MS
    minutes = np.arange(-FUNDING_INTERVAL_MS, 0, 60_000, dtype=np.int64)
    mean = premium(boundary[:, None] + minutes[None, :]).mean(axis=1)
    rate = mean + np.clip(INTEREST_RATE - mean, -5e-4, 5e-4)
    return np.asarray(np.clip(rate, -MAX_FUNDING_RATE, MAX_FUNDING_RATE))


def open_interest_times(timeframe: str, since_ms: int, until_ms: int) -> np.ndarray:
    """The period boundaries (epoch ms) in [since_ms, until_ms) for a statistics period."""
    step = timeframe_ms(timeframe)
    first = since_ms + (-since_ms) % step
    return np.arange(first, until_ms, step, dtype=np.int64)


def open_interest_at(ts_ms: np.ndarray) -> np.ndarray:
    """Contracts outstanding at ``ts_ms`` (> 0)."""
    t = np.asarray(ts_ms, dtype=np.float64) / HOUR_MS
    return np.asarray(
        BASE_OPEN_INTEREST
        * (1.0 + 0.25 * np.sin(2 * np.pi * t / 97.0) + 0.05 * np.sin(2 * np.pi * t / 5.0 + 2.0))
    )


def last_close_before(ts_1m: np.ndarray, closes: np.ndarray, at_ms: np.ndarray) -> np.ndarray:
    """The close of the last 1m candle closed at or before each of ``at_ms`` (NaN if none)."""
    idx = np.searchsorted(ts_1m + 60_000, at_ms, side="right") - 1
    out = np.full(len(at_ms), np.nan)
    ok = idx >= 0
    out[ok] = closes[idx[ok]]
    return out
