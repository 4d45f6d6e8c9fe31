"""The serving loop's configuration and its per-symbol, candle-derived state."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.features import OnlineFeatureEngine
from pipelines.features.batch import timeframe_ms
from pipelines.features.rebuild import history_start_ms
from trading.broker import BookSnapshot
from trading.confidence import ConfidencePolicy, VolatilityReference
from trading.decide import Costs, DecisionRules, Targets
from trading.decision import OnlineRSI, OnlineVolatility, RsiRule
from trading.domain import Bar, FeeModel
from trading.feedback import FeedbackConfig
from trading.microstructure import SideEvents
from trading.protections import ProtectionConfig
from trading.risk import RiskLimits
from trading.side_data import SideMemory
from trading.side_data import feed as feed_side_data
from trading.thresholds import ThresholdPolicy
from trading.volatility import VolatilityChoice, baseline_choice, choose_for_series
from warehouse.settings import (
    DEFAULT_HALF_SPREAD_FRACTION,
    DEFAULT_MAKER_FEE,
    DEFAULT_SLIPPAGE_FRACTION,
    DEFAULT_TAKER_FEE,
    Settings,
)

WINDOW_CAPACITY = 256
BOOKS_KEPT = 32  # order-book snapshots a symbol keeps for its costs and paper fills
# candles whose order book and trades a symbol keeps for a new engine: its window and the
# longest book / trade-flow dependency (20-bar mean, 10-bar lags) with room to spare
SIDE_KEPT_BARS = 2 * WINDOW_CAPACITY
log = logging.getLogger("tradeloop.serve")


def default_limits() -> RiskLimits:
    return RiskLimits(
        max_position_fraction=0.25,
        max_total_exposure_fraction=1.0,
        min_confidence=0.0,  # the confidence gate is the (adaptive) threshold's min_confidence
        confidence_sizing=True,
        min_size_scale=0.25,
        stop_loss_vol_mult=4.0,
        take_profit_vol_mult=8.0,
        max_drawdown_fraction=0.2,
    )


@dataclass(frozen=True)
class LoopConfig:
    account: str = "paper"
    exchange: str = (
        "simulated"  # the exchange candles/orders are recorded under (settings.exchange)
    )
    timeframe: str = "1m"
    initial_cash: float = 10_000.0
    fees: FeeModel = field(default_factory=lambda: FeeModel(DEFAULT_MAKER_FEE, DEFAULT_TAKER_FEE))
    slippage_fraction: float = DEFAULT_SLIPPAGE_FRACTION
    half_spread_fraction: float = DEFAULT_HALF_SPREAD_FRACTION  # an estimate: in the edge rule
    limits: RiskLimits = field(default_factory=default_limits)
    thresholds: ThresholdPolicy = field(default_factory=ThresholdPolicy)
    confidence: ConfidencePolicy = field(default_factory=ConfidencePolicy)
    protections: ProtectionConfig = field(default_factory=ProtectionConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    rsi: RsiRule = field(default_factory=RsiRule)
    fallback_size_fraction: float = 0.5
    min_feature_quality: float = 0.8
    volatility_window: int = 20  # the realized-sigma baseline's window
    # per symbol: the sigma stops, take-profit and confidence sizing use
    # (``trading.volatility.choose_forecaster``); a symbol not in it uses the baseline
    volatility: Mapping[str, VolatilityChoice] = field(default_factory=dict)
    model_name: str = "signal"
    model_check_every_steps: int = 1
    flush_every_steps: int = 50
    stale_after_timeframes: float = 2.0
    default_horizon_bars: int = 5
    mode: str = "paper"

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> LoopConfig:
        """A config whose costs come from the settings (``TRADELOOP_TAKER_FEE`` ...)."""
        costs: dict[str, Any] = {
            "fees": FeeModel(settings.maker_fee, settings.taker_fee),
            "slippage_fraction": settings.slippage_fraction,
            "half_spread_fraction": settings.half_spread_fraction,
            "exchange": settings.exchange,
        }
        return cls(**{**costs, **overrides})

    @property
    def costs(self) -> Costs:
        return Costs(self.fees.taker_fraction, self.slippage_fraction, self.half_spread_fraction)

    def volatility_choice(self, symbol: str) -> VolatilityChoice:
        """The volatility forecaster of ``symbol`` (the realized baseline unless chosen)."""
        chosen = self.volatility.get(symbol)
        if chosen is not None:
            return chosen
        return baseline_choice(
            self.volatility_window, self.default_horizon_bars, "no forecaster chosen"
        )

    @property
    def rules(self) -> DecisionRules:
        return DecisionRules(
            self.confidence,
            self.rsi,
            self.fallback_size_fraction,
            self.costs,
            self.limits,
            self.default_horizon_bars,
        )


def with_volatility_choices(
    config: LoopConfig,
    con: Any,
    symbols: Iterable[str],
    *,
    before_ms: int | None,
    horizon: int | None = None,
) -> LoopConfig:
    """``config`` with each symbol's volatility forecaster chosen on its stored candles of
    ``config.exchange``/``config.timeframe`` opened before ``before_ms`` (the first candle the
    loop decides on, as ``backtest --model`` chooses); ``before_ms`` None: no stored history
    is known to precede it, so realized sigma. ``horizon``: the forecast horizon (default: the
    loop's ``default_horizon_bars``)."""
    h = int(horizon or config.default_horizon_bars)
    chosen = dict(config.volatility)
    for symbol in symbols:
        if before_ms is None:
            choice = baseline_choice(
                config.volatility_window, h, "fallback: no stored history before the first candle"
            )
        else:
            choice = choose_for_series(
                con,
                symbol=symbol,
                timeframe=config.timeframe,
                exchange=config.exchange,
                before_ms=before_ms,
                horizon=h,
                window=config.volatility_window,
            )
        log.info("sigma of stops, take-profit and sizing for %s: %s", symbol, choice.describe())
        chosen[symbol] = choice
    return dataclasses.replace(config, volatility=chosen)


def retained_bars(timeframe: str) -> int:
    """Candles a symbol keeps for a new engine: the features' whole warm-up (the 1h features
    of a 1m series need 433 hours) plus a full window."""
    step = timeframe_ms(timeframe)
    now = 1_000 * step * 10_000  # any aligned time: the warm-up's length does not depend on it
    return (now - history_start_ms(now, timeframe)) // step + 2 * WINDOW_CAPACITY


class SymbolState:
    """Candle-derived state of one symbol (rebuilt exactly by replaying its candles), plus the
    targets of its decision rules (kept in the snapshot)."""

    def __init__(
        self,
        symbol: str,
        config: LoopConfig,
        n_features: int,
        feature_columns: Sequence[str] | None = None,
    ) -> None:
        self.symbol = symbol
        self.timeframe = config.timeframe
        # only what the serving model reads (``OnnxPredictor.required_features``); None: all
        self.engine_columns = None if feature_columns is None else tuple(feature_columns)
        self.engine = OnlineFeatureEngine(
            config.timeframe, columns=self.engine_columns, symbol=symbol
        )
        # the latest candles (ts_ms, open, high, low, close, volume), as many as the features
        # depend on: replayed into a new engine when a champion needs other features
        self.recent = np.empty((retained_bars(config.timeframe), 6), dtype=np.float64)
        self.recent_n = 0
        self.buf = np.full((2 * WINDOW_CAPACITY, n_features), np.nan, dtype=np.float32)
        self.pos = 0
        self.rows = 0
        self.online_features = True  # False once a bar's features came precomputed
        # the one sigma of stops, take-profit and sizing, in backtest and serve alike
        self.vol = config.volatility_choice(symbol).online()
        self.label_vol = OnlineVolatility(config.feedback.vol_window_bars)
        self.vol_ref = VolatilityReference(config.confidence.reference_alpha)
        self.rsi = OnlineRSI(config.rsi.period)
        self.targets = Targets()
        self.last_ts_ms: int | None = None
        self.sigma = math.nan
        self.label_sigma = math.nan
        self.rsi_value = math.nan
        self.source = "fallback"
        self.stale_alerted = False
        # order book and trades (trading.microstructure): the latest snapshots, for the cost
        # estimate and the paper fills, and what each kept candle's engine step was fed
        self.books: list[BookSnapshot] = []
        self._side: list[SideEvents] = []
        self._side_of: dict[int, tuple[SideEvents, ...]] = {}
        self._side_keys: deque[int] = deque()
        # funding rates, mark candles, open interest, headlines (trading.side_data): kept
        # while the last SIDE_KEPT_BARS candles' features can use them, for a new engine
        self.side_memory = SideMemory(timeframe_ms(config.timeframe), SIDE_KEPT_BARS)

    def feed(self, side: SideEvents) -> None:
        """Order-book snapshots and trades received before the next candle (time order), and
        funding and news data (any order)."""
        if side.data:
            if self.online_features:
                feed_side_data(self.engine, side.data)
            self.side_memory.add(side.data)
            side = dataclasses.replace(side, data=())
        if side.books:
            self.books.extend(side.books)
            if len(self.books) > 2 * BOOKS_KEPT:
                del self.books[:-BOOKS_KEPT]
        if self.online_features:
            _feed_engine(self.engine, side)
            self._side.append(side)

    @property
    def book(self) -> BookSnapshot | None:
        return self.books[-1] if self.books else None

    def push(self, bar: Bar, columns: list[str], *, features: bool = True) -> None:
        """One closed candle; ``features=False`` skips the feature engine (its outputs for the
        bar were computed elsewhere): from then on this symbol has no online window."""
        if features:
            if not self.online_features:
                raise ValueError(
                    f"{self.symbol}: bar {bar.ts_ms} has no precomputed outputs, but earlier "
                    "bars had: the online feature engine has not seen them"
                )
            self._features(bar, columns)
        else:
            self.online_features = False
        self.sigma = self.vol.update(bar.close)
        self.label_sigma = self.label_vol.update(bar.close)
        self.vol_ref.update(self.sigma)
        self.rsi_value = self.rsi.update(bar.close)
        self.last_ts_ms = bar.ts_ms

    def use_features(self, required: Sequence[str], columns: list[str]) -> bool:
        """Compute exactly ``required`` from now on (a new champion's selected set): a new
        engine replays the retained candles, so its window holds the new columns. Returns
        whether the engine changed."""
        wanted = tuple(required)
        if wanted == self.engine_columns or not self.online_features:
            return False
        self.engine_columns = wanted
        self.engine = OnlineFeatureEngine(self.timeframe, columns=wanted, symbol=self.symbol)
        feed_side_data(self.engine, self.side_memory.events)  # before the candles they are for
        self.buf.fill(np.nan)
        self.pos = 0
        self.rows = 0
        cap = self.recent.shape[0]
        for i in range(max(0, self.recent_n - cap), self.recent_n):
            ts_ms, o, h, lo, c, v = self.recent[i % cap]
            for side in self._side_of.get(int(ts_ms), ()):  # the book and trades it saw
                _feed_engine(self.engine, side)
            self._window_row(self._step(int(ts_ms), o, h, lo, c, v), columns)
        for side in self._side:  # received after the last candle
            _feed_engine(self.engine, side)
        return True

    def _step(
        self, ts_ms: int, open_: float, high: float, low: float, close: float, volume: float
    ) -> dict[str, Any]:
        return self.engine.step(
            {"ts": ts_ms, "open": open_, "high": high, "low": low, "close": close, "volume": volume}
        )

    def _features(self, bar: Bar, columns: list[str]) -> None:
        values = (bar.open, bar.high, bar.low, bar.close, bar.volume)
        self.recent[self.recent_n % self.recent.shape[0]] = (bar.ts_ms, *values)
        self.recent_n += 1
        self.side_memory.prune(bar.ts_ms)
        if self._side:  # kept for the last SIDE_KEPT_BARS candles (a new engine's replay)
            self._side_of[bar.ts_ms] = tuple(self._side)
            self._side_keys.append(bar.ts_ms)
            self._side = []
            while len(self._side_keys) > SIDE_KEPT_BARS:
                self._side_of.pop(self._side_keys.popleft(), None)
        self._window_row(self._step(bar.ts_ms, *values), columns)

    def _window_row(self, feats: Mapping[str, Any], columns: list[str]) -> None:
        if self.pos == self.buf.shape[0]:
            self.buf[:WINDOW_CAPACITY] = self.buf[WINDOW_CAPACITY:]
            self.pos = WINDOW_CAPACITY
        row = self.buf[self.pos]
        for j, c in enumerate(columns):
            v = feats.get(c)
            row[j] = np.nan if v is None else v
        self.pos += 1
        self.rows += 1

    def window(self, length: int) -> np.ndarray | None:
        if self.rows < length:
            return None
        return self.buf[self.pos - length : self.pos]


def _feed_engine(engine: OnlineFeatureEngine, side: SideEvents) -> None:
    for b in side.books:
        engine.on_order_book(b.ts_ms, b.bid_prices, b.bid_sizes, b.ask_prices, b.ask_sizes)
    for ts_ms, way, amount in side.trades:
        engine.on_trade(ts_ms, way, amount)
