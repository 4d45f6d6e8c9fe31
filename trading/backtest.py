"""Two backtest engines that must agree (a test holds their equity equal to 1e-9 on real data).

* ``run_event_driven``: bar by bar through ``trading.step.step`` — the same decision, risk,
  broker (``PaperBroker``) and portfolio code the live loop runs. Supports every slippage model
  (fixed, order book, schedule) and online deciders (RSI, model probabilities).
* ``run_vectorized``: the same execution model computed per TRADE instead of per bar: numpy
  finds the next decision that changes the position, numpy finds the first bar that hits a
  stop, numpy marks equity between fills; fills use the broker's own arithmetic
  (``broker.fill_terms``) and are booked by the same ``Portfolio``. Fixed slippage only.

Execution model (both): a decision made at the close of bar t fills at the open of bar t+1
with slippage and the taker fee; equity is marked at each bar's close; see ``trading.broker``
and ``trading.risk`` for stops, sizing and the kill switch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from trading.broker import FixedSlippage, PaperBroker, SlippageModel, bracket_prices, fill_terms
from trading.broker import stop_trigger as _stop_trigger
from trading.decision import OnlineVolatility, rolling_volatility
from trading.domain import Bar, Decision, FeeModel, Fill, OrderReason, Side, Trade
from trading.portfolio import Portfolio
from trading.risk import RiskLimits, RiskState, confidence_scale, entry_weight, target_units
from trading.step import TradingState, step

CANDLE_COLUMNS = ("ts", "open", "high", "low", "close", "volume")


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Candles:
    """One symbol's candles as numpy arrays (ts_ms = open time, UTC epoch ms), time-sorted."""

    symbol: str
    timeframe: str
    ts_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return int(self.ts_ms.size)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, symbol: str, timeframe: str) -> Candles:
        """From a polars frame with ``ts`` (or ``date``), open, high, low, close, volume."""
        if "ts" not in frame.columns and "date" in frame.columns:
            frame = frame.rename({"date": "ts"})
        missing = [c for c in CANDLE_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"candles for {symbol}: missing column(s) {missing}")
        frame = frame.sort("ts")
        ts = frame["ts"]
        if ts.dtype == pl.Datetime or isinstance(ts.dtype, pl.Datetime):
            ts_ms = ts.dt.epoch("ms").to_numpy()
        else:
            ts_ms = ts.cast(pl.Int64).to_numpy()
        if ts_ms.size > 1 and not np.all(np.diff(ts_ms) > 0):
            raise ValueError(f"candles for {symbol}: duplicate timestamps")
        arrays = {c: frame[c].cast(pl.Float64).to_numpy() for c in CANDLE_COLUMNS[1:]}
        for c, a in arrays.items():
            bad = np.flatnonzero(~np.isfinite(a) | ((a <= 0) if c != "volume" else (a < 0)))
            if bad.size:
                raise ValueError(f"candles for {symbol}: bad {c}={a[bad[0]]!r} at row {bad[0]}")
        return cls(symbol, timeframe, ts_ms.astype(np.int64), **arrays)

    def slice(self, start: int, stop: int) -> Candles:
        return Candles(
            self.symbol,
            self.timeframe,
            self.ts_ms[start:stop],
            self.open[start:stop],
            self.high[start:stop],
            self.low[start:stop],
            self.close[start:stop],
            self.volume[start:stop],
        )

    def bar(self, i: int) -> Bar:
        return Bar(
            self.symbol,
            int(self.ts_ms[i]),
            float(self.open[i]),
            float(self.high[i]),
            float(self.low[i]),
            float(self.close[i]),
            float(self.volume[i]),
            i,
        )


def load_candle_file(path: str | Path, symbol: str | None = None) -> Candles:
    """A real candle file (Feather/Arrow IPC, Parquet or CSV with date|ts and OHLCV)."""
    p = Path(path)
    if p.suffix in (".feather", ".arrow", ".ipc"):
        frame = pl.read_ipc(p)
    elif p.suffix == ".parquet":
        frame = pl.read_parquet(p)
    else:
        frame = pl.read_csv(p, try_parse_dates=True)
    stem = p.stem  # e.g. ETH_BTC-5m
    timeframe = stem.rsplit("-", 1)[1] if "-" in stem else "1m"
    name = symbol or stem.rsplit("-", 1)[0].replace("_", "/")
    return Candles.from_frame(frame, name, timeframe)


@dataclass(frozen=True)
class SignalSeries:
    """Per-bar decision inputs aligned with a ``Candles``: target signal in {-1, 0, 1},
    confidence in [0, 1] and size fraction in [0, 1]."""

    signal: np.ndarray
    confidence: np.ndarray
    size: np.ndarray

    @classmethod
    def of(
        cls,
        signal: np.ndarray,
        confidence: np.ndarray | None = None,
        size: np.ndarray | None = None,
    ) -> SignalSeries:
        s = np.asarray(signal).astype(np.int8)
        n = s.size
        return cls(
            s,
            np.ones(n) if confidence is None else np.asarray(confidence, dtype=np.float64),
            np.ones(n) if size is None else np.asarray(size, dtype=np.float64),
        )

    def decision(self, i: int) -> Decision:
        return Decision(
            int(self.signal[i]), float(self.confidence[i]), float(self.size[i]), "signal"
        )


@dataclass(frozen=True)
class BacktestConfig:
    initial_cash: float = 10_000.0
    fees: FeeModel = field(default_factory=lambda: FeeModel(0.001, 0.001))
    slippage_fraction: float = 0.0
    limits: RiskLimits = field(default_factory=RiskLimits)
    volatility_window: int = 20
    account: str = "backtest"


@dataclass
class BacktestResult:
    symbol: str
    timeframe: str
    ts_ms: np.ndarray
    equity: np.ndarray  # at each bar's close, quote currency
    units: np.ndarray  # position at each bar's close, base units
    trades: list[Trade]
    fills: list[Fill]
    fees_paid: float
    traded_notional: float
    initial_cash: float
    kill_switch_bar: int | None = None
    engine: str = ""

    @property
    def stop_exits(self) -> int:
        return sum(1 for t in self.trades if t.exit_reason in ("stop_loss", "take_profit"))


# ---------------------------------------------------------------- event-driven engine

Decide = Callable[[Bar], Decision]


def run_event_driven(
    candles: Candles,
    decide: Decide | SignalSeries,
    config: BacktestConfig,
    *,
    slippage: SlippageModel | None = None,
    volatility: np.ndarray | None = None,
) -> BacktestResult:
    """Bar-by-bar backtest through ``trading.step.step`` (the live loop's step)."""
    decide_fn: Decide = (
        (lambda bar: decide.decision(bar.index)) if isinstance(decide, SignalSeries) else decide
    )
    broker = PaperBroker(
        config.fees, slippage or FixedSlippage(config.slippage_fraction), allow_margin=False
    )
    state = TradingState(Portfolio(cash=config.initial_cash), RiskState(), config.account)
    online_vol = OnlineVolatility(config.volatility_window)
    n = len(candles)
    equity = np.empty(n)
    units = np.empty(n)
    fills: list[Fill] = []
    kill_bar: int | None = None
    for i in range(n):
        bar = candles.bar(i)
        vol = online_vol.update(bar.close) if volatility is None else float(volatility[i])
        result = step(bar, decide_fn(bar), vol, state, broker, config.limits)
        equity[i] = result.equity
        units[i] = result.units
        fills.extend(result.fills)
        if result.kill_switch_fired:
            kill_bar = i
    p = state.portfolio
    return BacktestResult(
        candles.symbol,
        candles.timeframe,
        candles.ts_ms,
        equity,
        units,
        list(p.trades),
        fills,
        p.fees_paid,
        p.traded_notional,
        config.initial_cash,
        kill_bar,
        "event",
    )


# ---------------------------------------------------------------- vectorized engine


class _Search:
    """O(log n) look-ups over the target signal: where it next differs from a value, and the
    next bar where a new position may be opened."""

    def __init__(self, s: np.ndarray, entry_ok: np.ndarray) -> None:
        self.s = s
        self.n = s.size
        self.changes = np.flatnonzero(np.diff(s) != 0) + 1
        self.entries = np.flatnonzero((s != 0) & entry_ok)

    def first_diff(self, t: int, value: int) -> int:
        """First index >= t with s != value (n when none)."""
        if t >= self.n:
            return self.n
        if self.s[t] != value:
            return t
        k = np.searchsorted(self.changes, t, side="right")
        return int(self.changes[k]) if k < self.changes.size else self.n

    def next_entry(self, t: int) -> int:
        k = np.searchsorted(self.entries, t, side="left")
        return int(self.entries[k]) if k < self.entries.size else self.n


def run_vectorized(
    candles: Candles,
    signals: SignalSeries,
    config: BacktestConfig,
    *,
    volatility: np.ndarray | None = None,
) -> BacktestResult:
    """Per-trade vectorized backtest (fixed slippage, one symbol); same results as
    ``run_event_driven``."""
    limits = config.limits
    n = len(candles)
    o, h, lo, c = candles.open, candles.high, candles.low, candles.close
    vol = rolling_volatility(c, config.volatility_window) if volatility is None else volatility
    s = signals.signal.astype(np.int64)
    if s.size != n:
        raise ValueError(f"signals have {s.size} rows, candles {n}")
    if not limits.allow_short:
        s = np.where(s < 0, 0, s)
    conf, size = signals.confidence, signals.size
    scale = (
        np.ones(n)
        if not limits.confidence_sizing
        else (
            limits.min_size_scale
            + (1.0 - limits.min_size_scale)
            * np.clip((conf - limits.min_confidence) / (1.0 - limits.min_confidence), 0.0, 1.0)
        )
    )
    entry_ok = (conf >= limits.min_confidence) & (limits.max_position_fraction * size * scale > 0)
    if limits.uses_stops:
        entry_ok &= vol > 0
    search = _Search(s, entry_ok)
    fee_fraction = config.fees.taker_fraction
    slip = config.slippage_fraction
    mdd = limits.max_drawdown_fraction

    book = Portfolio(cash=config.initial_cash)
    equity = np.empty(n)
    units_at = np.zeros(n)
    fills: list[Fill] = []
    peak = -math.inf
    killed_at = n  # first bar whose close fired the kill switch
    seq = 0

    def mark(a: int, b: int, units: float) -> None:  # bars a..b inclusive, constant position
        nonlocal peak, killed_at
        if b < a:
            return
        seg = book.cash + units * c[a : b + 1] if units != 0.0 else np.full(b - a + 1, book.cash)
        equity[a : b + 1] = seg
        units_at[a : b + 1] = units
        if mdd is not None and killed_at == n:
            run_peak = np.maximum.accumulate(np.concatenate(([peak], seg)))[1:]
            hit = np.flatnonzero(seg < run_peak * (1.0 - mdd))
            if hit.size:
                killed_at = a + int(hit[0])
        peak = max(peak, float(seg.max()))

    def fill(
        bar: int,
        side: Side,
        amount: float,
        reference: float,
        reason: OrderReason,
        cash_limited: bool,
    ) -> Fill:
        nonlocal seq
        seq += 1
        amt, price, fee = fill_terms(
            side, amount, amount, reference, slip, fee_fraction, book.cash, cash_limited
        )
        f = Fill(
            f"v{seq}",
            f"v{seq}",
            candles.symbol,
            int(candles.ts_ms[bar]),
            side,
            price,
            amt,
            fee,
            reason,
            reference,
        )
        book.apply_fill(f)
        fills.append(f)
        return f

    def open_weight(t: int) -> float:
        d = Decision(int(s[t]) if s[t] != 0 else 1, float(conf[t]), float(size[t]))
        return entry_weight(d, limits, 0.0)

    t = 0  # next decision bar to consider
    marked = 0  # bars < marked have equity
    blocked: int | None = None
    while True:
        # ---- flat: find the decision that opens a position
        if blocked is not None:
            t = search.first_diff(t, blocked)
            blocked = None
        te = search.next_entry(t)
        if te >= killed_at or te >= n - 1:
            mark(marked, n - 1, 0.0)
            break
        d = int(s[te])
        w = open_weight(te)
        mark(marked, te, 0.0)
        if te >= killed_at:  # the kill switch fired on an earlier bar of this flat stretch
            mark(te + 1, n - 1, 0.0)
            break
        target = target_units(d, w, book.cash, float(c[te]))
        f_bar = te + 1
        side: Side = "buy" if target > 0 else "sell"
        entry = fill(f_bar, side, abs(target), float(o[f_bar]), "entry", True)
        sl_frac = None if limits.stop_loss_vol_mult is None else limits.stop_loss_vol_mult * vol[te]
        tp_frac = (
            None if limits.take_profit_vol_mult is None else (limits.take_profit_vol_mult * vol[te])
        )
        while True:
            # ---- in a position opened at bar f_bar
            units = book.units(candles.symbol)
            if units == 0.0:  # entry rejected (no cash)
                marked, t = f_bar, f_bar
                break
            d = 1 if units > 0 else -1
            sl, tp = bracket_prices(entry.price, d, sl_frac, tp_frac)
            tx = search.first_diff(f_bar, d)  # decision that leaves or flips
            last = min(tx, n - 1)
            k = _first_stop(d, h, lo, f_bar, last, sl, tp)
            if k is not None:
                hit = _stop_trigger(d, float(o[k]), float(h[k]), float(lo[k]), sl, tp)
                assert hit is not None
                mark(f_bar, k - 1, units)
                fill(k, "sell" if d > 0 else "buy", abs(units), hit[1], hit[0], False)
                marked, t, blocked = k, k, d
                break
            mark(f_bar, last, units)
            if tx >= n - 1:  # no exit decision that could still fill
                marked = n
                break
            want = int(s[tx])
            if want != 0 and (tx >= killed_at or not entry_ok[tx]):
                want = 0
            if want == 0:
                fill(
                    tx + 1, "sell" if d > 0 else "buy", abs(units), float(o[tx + 1]), "exit", d < 0
                )
                marked, t = tx + 1, tx + 1
                if book.units(candles.symbol) != 0.0:
                    raise NotImplementedError("partial cover of a short: use run_event_driven")
                break
            w = open_weight(tx)
            eq = book.cash + units * float(c[tx])
            target = target_units(want, w, eq, float(c[tx]))
            delta = target - units
            f_bar = tx + 1
            entry = fill(
                f_bar,
                "buy" if delta > 0 else "sell",
                abs(delta),
                float(o[f_bar]),
                "flip",
                delta > 0,
            )
            if book.direction(candles.symbol) != want:
                raise NotImplementedError("partial flip: use run_event_driven")
            sl_frac = (
                None if limits.stop_loss_vol_mult is None else (limits.stop_loss_vol_mult * vol[tx])
            )
            tp_frac = (
                None
                if limits.take_profit_vol_mult is None
                else (limits.take_profit_vol_mult * vol[tx])
            )
        if marked >= n:
            break
    return BacktestResult(
        candles.symbol,
        candles.timeframe,
        candles.ts_ms,
        equity,
        units_at,
        list(book.trades),
        fills,
        book.fees_paid,
        book.traded_notional,
        config.initial_cash,
        None if killed_at == n else killed_at,
        "vectorized",
    )


def _first_stop(
    d: int, h: np.ndarray, lo: np.ndarray, a: int, b: int, sl: float | None, tp: float | None
) -> int | None:
    if (sl is None and tp is None) or b < a:
        return None
    hs, ls = h[a : b + 1], lo[a : b + 1]
    if d > 0:
        hit = (ls <= sl) if sl is not None else np.zeros(hs.size, bool)
        if tp is not None:
            hit = hit | (hs >= tp)
    else:
        hit = (hs >= sl) if sl is not None else np.zeros(hs.size, bool)
        if tp is not None:
            hit = hit | (ls <= tp)
    idx = np.flatnonzero(hit)
    return a + int(idx[0]) if idx.size else None


def buy_and_hold(candles: Candles, config: BacktestConfig) -> BacktestResult:
    """Baseline: long from the first bar's decision to the end (same fees and slippage)."""
    base = BacktestConfig(
        config.initial_cash,
        config.fees,
        config.slippage_fraction,
        RiskLimits(),
        config.volatility_window,
        config.account,
    )
    return run_vectorized(candles, SignalSeries.of(np.ones(len(candles), np.int8)), base)


__all__ = [
    "BacktestConfig",
    "BacktestResult",
    "Candles",
    "SignalSeries",
    "buy_and_hold",
    "confidence_scale",
    "load_candle_file",
    "run_event_driven",
    "run_vectorized",
]
