"""A deterministic simulated crypto exchange: the embedded default source (no network needed).

The price of each symbol is generated one UTC day at a time from ``origin``; each day's random
draws come from ``SeedSequence([seed, symbol_id, day])`` and the state (log price, log
volatility, regime, last return) carries over from the previous day. So any window of any
symbol is the same whatever was asked before, and generation is vectorised numpy per day.

The model, per 1-minute step t (documented so users know what a model can find in it):

* **Regimes**: a Markov chain over trend-up, trend-down and range; each minute a switch happens
  with probability ``1 / mean_regime_minutes``; the new regime is drawn uniformly among the
  other two.
* **Volatility clustering** (GARCH-like stochastic volatility): log volatility follows an AR(1)
  ``h_t = phi * h_{t-1} + eta_t``, ``phi = vol_persistence``; sigma_t = base_vol * exp(h_t),
  times 1.3 in trend regimes.
* **Fat tails**: innovations are Student-t with ``t_df`` degrees of freedom, scaled to unit
  variance.
* **Drift and momentum** (the weak, predictable structure): in a trend regime the return has
  a drift of +/- ``trend_drift_fraction * sigma_t`` and an MA(1) momentum term
  ``momentum * eps_{t-1}`` (lag-1 autocorrelation about 0.1 inside trends, zero in range).
  The range regime has no drift and no momentum.
  Nothing else is predictable: the signal is real but modest.
* **Intraday volume seasonality**: volume = base * season(minute of day) * (sigma_t /
  base_vol)^0.8 * lognormal noise, with a peak around 14:00-16:00 UTC and a trough at 04:00.
* **Order book**: spread and depth follow volatility: spread_bps = base_spread_bps *
  (sigma_t/base_vol)^0.7, and level sizes shrink as volatility rises.
* **Trades**: per minute, a Poisson number of trades whose buy share is
  0.5 + 0.35 * tanh(return / sigma) (buy/sell pressure follows the move), with amounts summing
  to the candle's volume and prices inside [low, high].
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pyarrow as pa
from scipy.signal import lfilter

MINUTE_MS = 60_000
DAY_MS = 86_400_000
MINUTES_PER_DAY = 1440
DEFAULT_ORIGIN_MS = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)

TREND_UP, TREND_DOWN, RANGE = 0, 1, 2
REGIME_NAMES = ("trend_up", "trend_down", "range")


@dataclass(frozen=True)
class SimulationConfig:
    seed: int = 7
    origin_ms: int = DEFAULT_ORIGIN_MS
    base_vol: float = 0.0012  # per-minute return standard deviation at the long-run level
    vol_persistence: float = 0.995  # phi of the AR(1) log volatility
    vol_of_vol: float = 0.05  # std of the log-volatility innovation
    t_df: float = 4.0  # Student-t degrees of freedom of return innovations
    mean_regime_minutes: float = 720.0
    trend_drift_fraction: float = 0.04  # drift in units of sigma per minute in trend regimes
    momentum: float = 0.1  # MA(1) coefficient in trend regimes
    base_volume: float = 50.0  # base-currency units per minute at the seasonal mean
    base_spread_bps: float = 2.0
    base_depth: float = 5.0  # base-currency size at the first level in normal volatility
    book_level_step_bps: float = 1.0
    trades_per_minute: float = 20.0


@dataclass
class _DayState:
    log_price: float
    log_vol: float
    regime: int
    last_eps: float


@dataclass
class _Day:
    ts_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    sigma: np.ndarray
    regime: np.ndarray
    end: _DayState


class _Path(NamedTuple):
    rng: np.random.Generator  # positioned after the path's draws
    regime: np.ndarray
    sigma: np.ndarray
    log_close: np.ndarray
    end: _DayState


@functools.lru_cache(maxsize=65_536)
def symbol_id(symbol: str) -> int:
    return int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:4], "little")


def _start_price(symbol: str) -> float:
    base = symbol.split("/")[0].upper()
    known = {"BTC": 40_000.0, "ETH": 2_300.0, "SOL": 100.0, "BNB": 300.0, "XRP": 0.6}
    if base in known:
        return known[base]
    return float(10 ** (1 + (symbol_id(symbol) % 300) / 100))  # 10 .. 10,000


_SEASON_HOURS = np.arange(MINUTES_PER_DAY) / 60.0
SEASONALITY = (
    1.0
    + 0.45 * np.cos(2 * np.pi * (_SEASON_HOURS - 15.0) / 24.0)
    + 0.15 * np.cos(4 * np.pi * (_SEASON_HOURS - 15.0) / 24.0)
)
SEASONALITY = SEASONALITY / SEASONALITY.mean()


@dataclass
class SimulatedExchange:
    """Candles, order books and trades for any symbol, deterministic for ``config.seed``."""

    config: SimulationConfig = field(default_factory=SimulationConfig)
    name: str = "simulated"
    _states: dict[str, dict[int, _DayState]] = field(default_factory=dict, repr=False)
    _days: dict[tuple[str, int], _Day] = field(default_factory=dict, repr=False)
    max_cached_days: int = 4096

    # ----------------------------------------------------------------- generation
    def _initial_state(self, symbol: str) -> _DayState:
        lp = float(np.log(_start_price(symbol)))
        return _DayState(log_price=lp, log_vol=0.0, regime=RANGE, last_eps=0.0)

    def _state_at(self, symbol: str, day: int) -> _DayState:
        """State at the start of ``day`` (days since origin), generating earlier days as needed."""
        states = self._states.get(symbol)
        if states is None:
            states = self._states[symbol] = {0: self._initial_state(symbol)}
        if day in states:
            return states[day]
        known = max(d for d in states if d <= day)
        for d in range(known, day):
            # a day before the one asked for: only its end state is needed (the same draws,
            # up to the last one the state depends on; nothing is kept but the state)
            if d + 1 not in states:
                states[d + 1] = self._path(symbol, d, states[d]).end
        return states[day]

    def _day(self, symbol: str, day: int) -> _Day:
        cached = self._days.get((symbol, day))
        if cached is not None:
            return cached
        if day < 0:
            raise ValueError(
                "simulated data starts at origin "
                f"{dt.datetime.fromtimestamp(self.config.origin_ms / 1000, dt.UTC)}"
                f"; day {day} is before it"
            )
        start = self._state_at(symbol, day)
        generated = self._generate_day(symbol, day, start)
        if len(self._days) >= self.max_cached_days:
            self._days.pop(next(iter(self._days)))
        self._days[(symbol, day)] = generated
        self._states[symbol][day + 1] = generated.end
        return generated

    def _path(self, symbol: str, day: int, s: _DayState) -> _Path:
        """The day's regimes, volatility and closes: every draw the next day's state depends
        on, in the order ``_generate_day`` makes them (it continues with ``rng``)."""
        c = self.config
        n = MINUTES_PER_DAY
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([c.seed, symbol_id(symbol), day]))
        )
        # regimes
        switches = rng.random(n) < 1.0 / c.mean_regime_minutes
        segment = np.cumsum(switches)
        n_segments = int(segment[-1]) + 1
        seg_regime = np.empty(n_segments, dtype=np.int64)
        seg_regime[0] = s.regime
        shifts = rng.integers(1, 3, size=n_segments)
        for k in range(1, n_segments):
            seg_regime[k] = (seg_regime[k - 1] + shifts[k]) % 3
        regime = seg_regime[segment]
        # stochastic volatility: AR(1) log-vol via lfilter, continuing yesterday's state
        eta = rng.standard_normal(n) * c.vol_of_vol
        log_vol, _ = lfilter(
            [1.0], [1.0, -c.vol_persistence], eta, zi=[c.vol_persistence * s.log_vol]
        )
        trend = regime != RANGE
        sigma = c.base_vol * np.exp(log_vol) * np.where(trend, 1.3, 1.0)
        # fat-tailed innovations with unit variance
        z = rng.standard_t(c.t_df, size=n) * np.sqrt((c.t_df - 2.0) / c.t_df)
        eps = sigma * z
        prev_eps = np.concatenate(([s.last_eps], eps[:-1]))
        drift = np.select([regime == TREND_UP, regime == TREND_DOWN], [1.0, -1.0], 0.0)
        ret = (
            drift * c.trend_drift_fraction * sigma
            + eps
            + np.where(trend, c.momentum * prev_eps, 0.0)
        )
        log_close = s.log_price + np.cumsum(ret)
        end = _DayState(
            log_price=float(log_close[-1]),
            log_vol=float(log_vol[-1]),
            regime=int(regime[-1]),
            last_eps=float(eps[-1]),
        )
        return _Path(rng, regime, sigma, log_close, end)

    def _generate_day(self, symbol: str, day: int, s: _DayState) -> _Day:
        c = self.config
        n = MINUTES_PER_DAY
        rng, regime, sigma, log_close, end = self._path(symbol, day, s)
        close = np.exp(log_close)
        open_ = np.exp(np.concatenate(([s.log_price], log_close[:-1])))
        wick_hi = np.abs(rng.standard_normal(n)) * sigma * 0.6
        wick_lo = np.abs(rng.standard_normal(n)) * sigma * 0.6
        high = np.maximum(open_, close) * np.exp(wick_hi)
        low = np.minimum(open_, close) * np.exp(-wick_lo)
        noise = rng.lognormal(mean=-0.125, sigma=0.5, size=n)
        volume = c.base_volume * SEASONALITY * (sigma / c.base_vol) ** 0.8 * noise
        ts = self.config.origin_ms + day * DAY_MS + np.arange(n, dtype=np.int64) * MINUTE_MS
        return _Day(ts, open_, high, low, close, volume, sigma, regime, end)

    # ----------------------------------------------------------------- candles
    def candle_arrays(self, symbol: str, since_ms: int, until_ms: int) -> dict[str, np.ndarray]:
        """1m candles with open time in [since_ms, until_ms), as numpy arrays (ts in ms)."""
        c = self.config
        since_ms = max(since_ms, c.origin_ms)
        if until_ms <= since_ms:
            empty = np.empty(0)
            return {k: empty for k in ("open", "high", "low", "close", "volume", "sigma")} | {
                "ts": np.empty(0, dtype=np.int64),
                "regime": np.empty(0, dtype=np.int64),
            }
        first_day = (since_ms - c.origin_ms) // DAY_MS
        last_day = (until_ms - 1 - c.origin_ms) // DAY_MS
        days = [self._day(symbol, d) for d in range(first_day, last_day + 1)]
        cols = {
            name: np.concatenate([getattr(d, name) for d in days])
            for name in ("ts_ms", "open", "high", "low", "close", "volume", "sigma", "regime")
        }
        ts = cols.pop("ts_ms")
        mask = (ts >= since_ms) & (ts < until_ms)
        out = {k: v[mask] for k, v in cols.items()}
        out["ts"] = ts[mask]
        return out

    def candles(
        self, symbol: str, since_ms: int, until_ms: int, *, timeframe: str = "1m"
    ) -> pa.Table:
        """Closed candles in the warehouse schema (``timeframe`` other than 1m is resampled)."""
        from pipelines.resample import resample_arrow, timeframe_ms

        step = timeframe_ms(timeframe)
        aligned_since = since_ms - since_ms % step
        a = self.candle_arrays(
            symbol, aligned_since, until_ms - (until_ms % step) if step > MINUTE_MS else until_ms
        )
        table = candles_table(self.name, symbol, "1m", a)
        if timeframe == "1m":
            return table
        out = resample_arrow(table, timeframe)
        return out.filter(
            pa.compute.greater_equal(out["ts"], pa.scalar(since_ms, pa.timestamp("ms", "UTC")))
        )

    # ----------------------------------------------------------------- order book and trades
    def order_book(self, symbol: str, ts_ms: int, *, depth: int = 20) -> dict[str, list[float]]:
        """A snapshot at ``ts_ms``: mid = last closed minute's close; spread/depth follow vol."""
        c = self.config
        minute = ts_ms - ts_ms % MINUTE_MS
        a = self.candle_arrays(symbol, minute - MINUTE_MS, minute)
        if a["ts"].size == 0:
            a = self.candle_arrays(symbol, minute, minute + MINUTE_MS)
            mid, sigma = float(a["open"][0]), float(a["sigma"][0])
        else:
            mid, sigma = float(a["close"][-1]), float(a["sigma"][-1])
        ratio = sigma / c.base_vol
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([c.seed, symbol_id(symbol), ts_ms, 1]))
        )
        half_spread = mid * c.base_spread_bps * ratio**0.7 / 2e4
        steps = np.arange(depth) * mid * c.book_level_step_bps * ratio**0.5 / 1e4
        sizes_b = c.base_depth / ratio * (1 + 0.3 * np.arange(depth)) * rng.lognormal(0, 0.3, depth)
        sizes_a = c.base_depth / ratio * (1 + 0.3 * np.arange(depth)) * rng.lognormal(0, 0.3, depth)
        return {
            "bid_prices": [float(x) for x in mid - half_spread - steps],
            "bid_sizes": [float(x) for x in sizes_b],
            "ask_prices": [float(x) for x in mid + half_spread + steps],
            "ask_sizes": [float(x) for x in sizes_a],
        }

    def trade_arrays(self, symbol: str, since_ms: int, until_ms: int) -> dict[str, np.ndarray]:
        """Public trades with timestamp in [since_ms, until_ms), ordered by time; ids are stable."""
        c = self.config
        first = since_ms - since_ms % MINUTE_MS
        a = self.candle_arrays(symbol, first, until_ms)
        n = a["ts"].size
        if n == 0:
            return {
                "ts": np.empty(0, np.int64),
                "id": np.empty(0, np.int64),
                "price": np.empty(0),
                "amount": np.empty(0),
                "is_buy": np.empty(0, bool),
            }
        parts = []
        for day_start in np.unique((a["ts"] - c.origin_ms) // DAY_MS):
            parts.append(self._day_trades(symbol, int(day_start)))
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        mask = (merged["ts"] >= since_ms) & (merged["ts"] < until_ms)
        return {k: v[mask] for k, v in merged.items()}

    def _day_trades(self, symbol: str, day: int) -> dict[str, np.ndarray]:
        c = self.config
        d = self._day(symbol, day)
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([c.seed, symbol_id(symbol), day, 2]))
        )
        counts = np.maximum(
            1, rng.poisson(c.trades_per_minute * SEASONALITY * (d.volume / d.volume.mean()) ** 0.5)
        )
        minute = np.repeat(np.arange(d.ts_ms.size), counts)
        offsets = np.sort(rng.integers(0, MINUTE_MS, size=minute.size))
        # sort offsets within each minute: add minute * MINUTE_MS then sort globally
        ts = d.ts_ms[minute] + offsets
        order = np.argsort(ts, kind="stable")
        ts, minute = ts[order], minute[order]
        ret = np.log(d.close / d.open)
        buy_p = 0.5 + 0.35 * np.tanh(ret / d.sigma)
        is_buy = rng.random(minute.size) < buy_p[minute]
        weight = rng.exponential(1.0, minute.size)
        totals = np.bincount(minute, weights=weight, minlength=d.ts_ms.size)
        amount = weight / totals[minute] * d.volume[minute]
        frac = rng.random(minute.size)
        price = d.low[minute] + frac * (d.high[minute] - d.low[minute])
        ids = (day * 10_000_000 + np.arange(minute.size)).astype(np.int64)
        return {"ts": ts, "id": ids, "price": price, "amount": amount, "is_buy": is_buy}


def candles_table(exchange: str, symbol: str, timeframe: str, a: dict[str, np.ndarray]) -> pa.Table:
    n = a["ts"].size
    return pa.table(
        {
            "exchange": pa.array([exchange] * n, pa.string()),
            "symbol": pa.array([symbol] * n, pa.string()),
            "timeframe": pa.array([timeframe] * n, pa.string()),
            "ts": pa.array(a["ts"].astype(np.int64), pa.timestamp("ms", tz="UTC")),
            "open": pa.array(a["open"], pa.float64()),
            "high": pa.array(a["high"], pa.float64()),
            "low": pa.array(a["low"], pa.float64()),
            "close": pa.array(a["close"], pa.float64()),
            "volume": pa.array(a["volume"], pa.float64()),
        }
    )
