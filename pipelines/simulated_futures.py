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

:func:`simulated_futures` gives them as rows of the warehouse tables (``mark_candles``,
``funding_rates``, ``open_interest``); the loopback exchange serves the same values in
Binance's USD-M shape.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.resample import resample_arrow, timeframe_ms
from pipelines.simulated_exchange import SimulatedExchange, candles_table

TS = pa.timestamp("ms", tz="UTC")

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


def simulated_futures(
    exchange: SimulatedExchange,
    contract: str,
    kind: str,
    since_ms: int,
    until_ms: int,
    *,
    timeframe: str | None = None,
) -> pa.Table:
    """What the simulated exchange has for the perpetual ``contract`` (e.g. ``BTC/USDT:USDT``,
    on the underlying ``BTC/USDT``) in [since_ms, until_ms), as rows of the table ``kind``
    (``mark_candles``, ``funding_rates`` or ``open_interest``). ``timeframe``: the candle or
    open-interest period (default 1h); funding comes every 8 h."""
    underlying = contract.split(":")[0]
    name = exchange.name
    if kind == "funding_rates":
        stamps = funding_times(since_ms, until_ms)
        return _rows(name, contract, FUNDING_INTERVAL, stamps, funding_rate=funding_rate_at(stamps))
    tf = timeframe or "1h"
    step = timeframe_ms(tf)
    if kind == "open_interest":
        times = open_interest_times(tf, since_ms, until_ms)
        if times.size == 0:
            return _rows(name, contract, tf, times, open_interest=times, open_interest_value=times)
        a = exchange.candle_arrays(underlying, int(times[0]) - 60 * 60_000, int(times[-1]))
        amount = open_interest_at(times)
        value = amount * last_close_before(a["ts"], a["close"], times)
        return _rows(name, contract, tf, times, open_interest=amount, open_interest_value=value)
    if kind != "mark_candles":
        raise ValueError(f"unknown futures data kind {kind!r}")
    a = exchange.candle_arrays(underlying, since_ms - since_ms % step, until_ms - until_ms % step)
    o, h, lo, c = mark_from_trade(a["ts"], a["open"], a["high"], a["low"], a["close"])
    mark = {"ts": a["ts"], "open": o, "high": h, "low": lo, "close": c, "volume": 0 * c}
    table = candles_table(name, contract, "1m", mark)
    if tf != "1m":
        table = resample_arrow(table, tf)
    table = table.filter(pc.greater_equal(table["ts"], pa.scalar(since_ms, TS)))
    return table.set_column(8, "volume", pa.nulls(table.num_rows, pa.float64()))


def _rows(
    exchange: str, contract: str, timeframe: str, ts: np.ndarray, **values: np.ndarray
) -> pa.Table:
    n = ts.size
    return pa.table(
        {
            "exchange": [exchange] * n,
            "symbol": [contract] * n,
            "timeframe": [timeframe] * n,
            "ts": pa.array(ts.astype(np.int64), TS),
            **{
                k: pa.array(np.asarray(v, dtype=np.float64), pa.float64())
                for k, v in values.items()
            },
        }
    )
