"""The serving loop: scheduling, I/O and state around the per-bar decision path.

Per tick (candles that closed at one open time, one per symbol):

1. manual kill / reset files; the registry's champion (every ``model_check_every_steps``
   ticks: hot swap between ticks, see ``trading.fallback``);
2. per candle: online features (``OnlineFeatureEngine``), volatility, RSI; the feedback
   resolves predictions whose horizon ended; the accuracy kill switch and the adaptive
   thresholds see the new rolling accuracy;
3. ONE ONNX Runtime call for every symbol whose window is complete and of good quality
   (``trading.decide.infer_online``), unless the caller passed that bar's model outputs
   (``precomputed``: a backtest that ran features and inference in batch);
4. per candle: ``trading.decide.BarDecider.run`` -- confidence, the model rule (gate, classes,
   thresholds, edge against costs) or the RSI fallback under the same gate, protections, the
   kill switch, risk and ``trading.step.step`` (the event-driven backtest's step);
5. rows for predictions, signals, orders, fills, equity and events go into a batch that the
   ``BufferedWriter`` writes in the background every ``flush_every_steps`` ticks together with
   the state snapshot (``trading.state``).

Imports neither torch nor Prefect.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipelines.features import FEATURE_SET_VERSION, OnlineFeatureEngine, feature_columns
from pipelines.resample import timeframe_ms
from trading.broker import Broker, FixedSlippage, PaperBroker
from trading.confidence import ConfidencePolicy, VolatilityReference
from trading.decide import (
    BarDecider,
    BarStep,
    Costs,
    DecisionRules,
    ModelContext,
    PrecomputedBar,
    Targets,
    infer_online,
    model_context,
)
from trading.decision import OnlineRSI, OnlineVolatility, RsiRule
from trading.domain import Bar, FeeModel, Fill, Order
from trading.fallback import ModelManager
from trading.feedback import Feedback, FeedbackConfig, Pending, Resolved
from trading.latency import LatencyRecorder
from trading.portfolio import Portfolio
from trading.protections import ProtectionConfig, Protections, kill_file, reset_file
from trading.risk import RiskLimits, RiskState, reset_kill_switch
from trading.state import (
    broker_restore,
    broker_to_dict,
    check_positions,
    fills_net_units,
    load_snapshot,
    portfolio_from_dict,
    portfolio_to_dict,
    risk_from_dict,
    risk_to_dict,
)
from trading.step import TradingState
from trading.thresholds import AdaptiveThresholds, ThresholdPolicy
from trading.writer import BufferedWriter, WriteBatch, now_ms
from warehouse.settings import (
    DEFAULT_HALF_SPREAD_FRACTION,
    DEFAULT_MAKER_FEE,
    DEFAULT_SLIPPAGE_FRACTION,
    DEFAULT_TAKER_FEE,
    Settings,
)

log = logging.getLogger("tradeloop.serve")

WINDOW_CAPACITY = 256


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
    volatility_window: int = 20
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


class TickLike(Protocol):
    now_ms: int
    bars: tuple[Bar, ...]
    alerts: tuple[str, ...]


class SymbolState:
    """Candle-derived state of one symbol (rebuilt exactly by replaying its candles), plus the
    targets of its decision rules (kept in the snapshot)."""

    def __init__(self, symbol: str, config: LoopConfig, n_features: int) -> None:
        self.symbol = symbol
        self.engine = OnlineFeatureEngine(config.timeframe)
        self.buf = np.full((2 * WINDOW_CAPACITY, n_features), np.nan, dtype=np.float32)
        self.pos = 0
        self.rows = 0
        self.online_features = True  # False once a bar's features came precomputed
        self.vol = OnlineVolatility(config.volatility_window)
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

    def _features(self, bar: Bar, columns: list[str]) -> None:
        feats = self.engine.step(
            {
                "ts": bar.ts_ms,
                "open": bar.open,
                "high": bar.high,
                "low": bar.low,
                "close": bar.close,
                "volume": bar.volume,
            }
        )
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


class ServingLoop:
    def __init__(
        self,
        config: LoopConfig,
        *,
        manager: ModelManager,
        writer: BufferedWriter | None,
        home: Path,
        broker: Broker | None = None,
        on_retrain: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.manager = manager
        self.writer = writer
        self.home = home
        self.columns = feature_columns()
        self.step_ms = timeframe_ms(config.timeframe)
        self.broker: Broker = broker or PaperBroker(
            config.fees, FixedSlippage(config.slippage_fraction), allow_margin=False
        )
        self.state = TradingState(Portfolio(cash=config.initial_cash), RiskState(), config.account)
        self.thresholds = AdaptiveThresholds(config.thresholds)
        self.protections = Protections(config.protections)
        self.feedback = Feedback(config.feedback, on_degraded=on_retrain, clock=clock)
        self.decider = BarDecider(config.rules, self.state, self.broker, self.protections)
        self._model: tuple[int, ModelContext | None] = (-1, None)  # (manager generation, ...)
        self.latency = LatencyRecorder()
        self.symbols: dict[str, SymbolState] = {}
        self.batch = WriteBatch()
        self.steps = 0
        self.candle_index = 0
        self.event_seq = 0
        self.last_ts_ms: int | None = None
        self.events: list[tuple[int, str, str | None, str]] = []  # kept for callers/tests
        self.order_rows: dict[str, dict[str, Any]] = {}
        self.seen_generation = 0
        self._kill_path = kill_file(home, config.account)
        self._reset_path = reset_file(home, config.account)

    # ------------------------------------------------------------------ helpers
    def _sym(self, symbol: str) -> SymbolState:
        s = self.symbols.get(symbol)
        if s is None:
            s = self.symbols[symbol] = SymbolState(symbol, self.config, len(self.columns))
        return s

    def event(self, ts_ms: int, kind: str, message: str, symbol: str | None = None) -> None:
        self.event_seq += 1
        log.warning("[%s] %s%s", kind, f"{symbol}: " if symbol else "", message)
        self.events.append((ts_ms, kind, symbol, message))
        eid = f"{ts_ms}-{self.event_seq}"
        self.batch.add(
            "loop_events",
            (eid,),
            {
                "account": self.config.account,
                "event_id": eid,
                "ts": ts_ms,
                "kind": kind,
                "symbol": symbol,
                "message": message,
            },
        )

    # ------------------------------------------------------------------ warm-up (restart)
    def warm(self, tick: TickLike) -> None:
        """Feed candles through the candle-derived state only (no decisions, no writes)."""
        for bar in tick.bars:
            self._sym(bar.symbol).push(bar, self.columns)

    # ------------------------------------------------------------------ the step
    def on_tick(
        self, tick: TickLike, precomputed: Mapping[str, PrecomputedBar] | None = None
    ) -> None:
        """Process one tick. ``precomputed``: the model outputs of this tick's bars, by symbol
        (a batched backtest's features and inference); a symbol found there skips the online
        feature engine and ONNX Runtime for the bar, everything else runs as without it."""
        t_start = time.perf_counter_ns()
        cfg = self.config
        bars = sorted(tick.bars, key=lambda b: b.symbol)
        ts_ms = bars[0].ts_ms if bars else (self.last_ts_ms or 0)
        for alert in tick.alerts:
            self.event(ts_ms, "alert", alert)
        self._control_files(ts_ms)
        if self.steps % cfg.model_check_every_steps == 0:
            self._check_model(ts_ms)
        self._stale_alerts(tick.now_ms, {b.symbol for b in bars}, ts_ms)
        if not bars:
            return
        given = precomputed or {}

        # 2. features, volatility, feedback
        t0 = time.perf_counter_ns()
        resolved: list[Resolved] = []
        for bar in bars:
            s = self._sym(bar.symbol)
            s.push(bar, self.columns, features=bar.symbol not in given)
            resolved.extend(self.feedback.on_bar(bar.symbol, bar.close))
        self.latency.record_ns("features", time.perf_counter_ns() - t0)
        for r in resolved:
            self._resolved_row(r, ts_ms)
        if resolved:
            self._after_resolution(ts_ms)

        # 3. batched inference (bars without precomputed outputs)
        t1 = time.perf_counter_ns()
        outputs = self._infer([b for b in bars if b.symbol not in given])
        outputs.update(given)
        self.latency.record_ns("inference", time.perf_counter_ns() - t1)

        # 4. the decision path, per bar
        t2 = time.perf_counter_ns()
        model = self._model_context()
        for bar in bars:
            self._decide_and_step(bar, outputs[bar.symbol], model, tick.now_ms)
        self.latency.record_ns("decision", time.perf_counter_ns() - t2)

        equity = self.state.portfolio.equity()
        peak = self.state.risk.peak_equity
        self.batch.add(
            "equity",
            (ts_ms,),
            {
                "account": cfg.account,
                "ts": ts_ms,
                "cash": self.state.portfolio.cash,
                "position_value": equity - self.state.portfolio.cash,
                "equity": equity,
                # a negative fraction below the peak, as in the backtest's metrics
                "drawdown": equity / peak - 1.0 if peak > 0 else 0.0,
            },
        )
        msg = self.protections.on_equity(self.candle_index, equity)
        if msg:
            self.event(ts_ms, "protection", msg)
        self.candle_index += 1
        self.steps += 1
        self.last_ts_ms = ts_ms
        self.latency.record_ns("total", time.perf_counter_ns() - t_start)
        if self.steps % cfg.flush_every_steps == 0:
            self.flush()

    def _check_model(self, ts_ms: int, *, restored_id: str | None = None) -> None:
        """Look up the champion (hot swap). A NEW champion resets the rolling metrics and the kill
        switch; ``restored_id`` is the model of a just-restored snapshot, whose state is kept."""
        for ev in self.manager.refresh():
            self.event(ts_ms, ev.kind, ev.message)
        if self.manager.generation == self.seen_generation:
            return
        self.seen_generation = self.manager.generation
        if restored_id is not None and self.manager.model_id == restored_id:
            return
        self.feedback.reset_model()
        if self.state.risk.killed:
            reset_kill_switch(self.state.risk)
            self.event(ts_ms, "kill", f"kill switch reset: new champion {self.manager.model_id}")

    def _control_files(self, ts_ms: int) -> None:
        killed = self._kill_path.exists()
        if killed != self.protections.manual_kill:
            self.protections.manual_kill = killed
            self.event(
                ts_ms, "kill", "manual kill: no new orders" if killed else "manual kill lifted"
            )
            if killed:
                for o in self.broker.open_orders():
                    self.broker.cancel(o.client_order_id)
        if self._reset_path.exists():
            self._reset_path.unlink(missing_ok=True)
            if self.state.risk.killed:
                # both legs measure afresh (as after a new champion): the drawdown from a new
                # peak, the accuracy over new resolutions; else the same step would fire it again
                reset_kill_switch(self.state.risk)
                self.feedback.reset_model()
                self.event(
                    ts_ms, "kill", "kill switch reset by hand; rolling accuracy starts afresh"
                )

    def _stale_alerts(self, now_ms: int, arrived: set[str], ts_ms: int) -> None:
        limit = self.config.stale_after_timeframes * self.step_ms
        for sym, s in self.symbols.items():
            if sym in arrived or s.last_ts_ms is None:
                if sym in arrived and s.stale_alerted:
                    s.stale_alerted = False
                    self.event(ts_ms, "alert", "data fresh again", sym)
                continue
            if not s.stale_alerted and now_ms - (s.last_ts_ms + self.step_ms) > limit:
                s.stale_alerted = True
                self.event(
                    ts_ms,
                    "alert",
                    f"stale data: no closed candle since "
                    f"{s.last_ts_ms} for more than {self.config.stale_after_timeframes:g} "
                    "timeframes; no new signals",
                    sym,
                )

    def _after_resolution(self, ts_ms: int) -> None:
        fb = self.feedback
        acc, n = fb.accuracy, fb.resolved
        why = self.protections.check_accuracy(acc, n)
        if why and not self.state.risk.killed:
            self.state.risk.killed = True
            self.state.risk.kill_reason = why
            self.event(
                ts_ms,
                "kill",
                f"kill switch fired: {why} (model {self.manager.active_id}); "
                "no new positions until a new champion or a manual reset",
            )
        change = self.thresholds.update(acc, n)
        if change is not None:
            self.event(ts_ms, "threshold", change.reason)
        trigger = fb.check_degradation()
        if trigger:
            self.event(ts_ms, "retrain", f"retraining requested: {trigger}")

    def _model_context(self) -> ModelContext | None:
        """The loaded model's id, horizon and per-class returns (cached per swap)."""
        m = self.manager
        if self._model[0] != m.generation:
            ctx = None
            if m.predictor is not None and m.model_id:
                ctx = model_context(m.model_id, m.predictor.info, self.config.default_horizon_bars)
            self._model = (m.generation, ctx)
        return self._model[1]

    def _infer(self, bars: list[Bar]) -> dict[str, PrecomputedBar]:
        pred = self.manager.predictor
        if pred is None:
            why = self.manager.fallback_reason
            return {
                b.symbol: PrecomputedBar.fallback(why, self.symbols[b.symbol].engine.gap_bars)
                for b in bars
            }
        length = pred.info.window_len
        windows = {b.symbol: self.symbols[b.symbol].window(length) for b in bars}
        gaps = {b.symbol: self.symbols[b.symbol].engine.gap_bars for b in bars}
        return infer_online(pred, windows, gaps, self.config.min_feature_quality)

    def _set_source(self, symbol: str, source: str, why: str, ts_ms: int) -> None:
        s = self.symbols[symbol]
        if s.source != source:
            old = s.source
            s.source = source
            if not (old == "fallback" and source == "fallback"):
                self.event(ts_ms, "fallback", f"{old} -> {source}: {why}", symbol)

    def _decide_and_step(
        self, bar: Bar, pre: PrecomputedBar, model: ModelContext | None, now_ms: int
    ) -> None:
        cfg = self.config
        s = self.symbols[bar.symbol]
        if pre.probabilities is None:
            self._set_source(bar.symbol, "fallback", pre.fallback_reason or "", bar.ts_ms)
        else:
            self._set_source(bar.symbol, "model", f"model {self.manager.model_id}", bar.ts_ms)
        stale = now_ms - (bar.ts_ms + self.step_ms) > cfg.stale_after_timeframes * self.step_ms
        out = self.decider.run(
            bar,
            pre,
            sigma=s.sigma,
            sigma_ref=s.vol_ref.value,
            rsi=s.rsi_value,
            hits=self.feedback.hits,
            resolved=self.feedback.resolved,
            targets=s.targets,
            thresholds=self.thresholds.current,
            model=model,
            candle_index=self.candle_index,
            stale=stale,
        )
        for msg in out.messages:
            self.event(bar.ts_ms, "protection", msg, bar.symbol)
        if out.result.kill_switch_fired:
            self.event(
                bar.ts_ms, "kill", f"kill switch fired: {self.state.risk.kill_reason}", bar.symbol
            )
        self._bar_rows(bar, s, out)

    def _bar_rows(self, bar: Bar, s: SymbolState, out: BarStep) -> None:
        cfg = self.config
        chosen, result = out.chosen, out.result
        decision = result.decision
        acct, ex, tf = cfg.account, cfg.exchange, cfg.timeframe
        if chosen.predicted:
            p = chosen.decision.probabilities if chosen.source == "model" else None
            row: dict[str, Any] = {
                "exchange": ex,
                "symbol": bar.symbol,
                "timeframe": tf,
                "ts": bar.ts_ms,
                "model_id": chosen.model_id,
                "horizon_bars": chosen.horizon_bars,
                "p_buy": p[0] if p else None,
                "p_hold": p[1] if p else None,
                "p_sell": p[2] if p else None,
                "confidence": chosen.confidence,
                "predicted_class": chosen.predicted,
            }
            self.batch.add("predictions", (bar.symbol, bar.ts_ms, chosen.model_id), dict(row))
            h = chosen.horizon_bars
            self.feedback.add(
                Pending(
                    bar.symbol,
                    bar.ts_ms,
                    chosen.model_id,
                    chosen.predicted,
                    bar.close,
                    self.feedback.threshold(s.label_sigma, h),
                    h,
                    h,
                    chosen.counted,
                    row,
                )
            )
        self.batch.add(
            "signals",
            (bar.symbol, bar.ts_ms),
            {
                "account": acct,
                "exchange": ex,
                "symbol": bar.symbol,
                "timeframe": tf,
                "ts": bar.ts_ms,
                "signal": result.target_direction,
                "confidence": decision.confidence,
                "threshold": self.thresholds.current.min_confidence,
                "size_fraction": decision.size_fraction,
                "reason": f"{decision.reason}; {result.note}",
            },
        )
        when = bar.ts_ms + self.step_ms
        for f in result.fills:
            self._fill_rows(f, when)
        for o in result.orders:
            order = {
                "account": acct,
                "client_order_id": o.client_order_id,
                "exchange": ex,
                "symbol": o.symbol,
                "ts": bar.ts_ms,
                "side": o.side,
                "order_type": o.order_type,
                "amount": o.amount,
                "price": o.price,
                "status": "open",
                "exchange_order_id": None,
                "mode": cfg.mode,
                "updated_at": when,
            }
            self.order_rows[o.client_order_id] = order
            self.batch.add("orders", (o.client_order_id,), dict(order))

    def _fill_rows(self, f: Fill, when: int) -> None:
        cfg = self.config
        quote = f.symbol.split("/")[-1] if "/" in f.symbol else None
        self.batch.add(
            "fills",
            (f.fill_id,),
            {
                "account": cfg.account,
                "fill_id": f.fill_id,
                "client_order_id": f.client_order_id,
                "exchange": cfg.exchange,
                "symbol": f.symbol,
                "ts": f.ts_ms,
                "side": f.side,
                "price": f.price,
                "amount": f.amount,
                "fee": f.fee,
                "fee_currency": quote,
            },
        )
        row = self.order_rows.pop(f.client_order_id, None)
        if row is None:  # a protective (stop / take-profit) order the broker created
            row = {
                "account": cfg.account,
                "client_order_id": f.client_order_id,
                "exchange": cfg.exchange,
                "symbol": f.symbol,
                "ts": f.ts_ms,
                "side": f.side,
                "order_type": "stop",
                "amount": f.amount,
                "price": f.reference_price,
                "exchange_order_id": None,
                "mode": cfg.mode,
            }
        row.update({"status": self.broker.order_status(f.client_order_id), "updated_at": when})
        exchange_order_id = getattr(self.broker, "exchange_order_id", None)
        if exchange_order_id is not None:  # live broker: the exchange's order id
            row["exchange_order_id"] = exchange_order_id(f.client_order_id)
        self.batch.add("orders", (f.client_order_id,), row)

    def _resolved_row(self, r: Resolved, ts_ms: int) -> None:
        base = r.row or {}
        self.batch.add(
            "predictions",
            (r.symbol, r.ts_ms, r.model_id),
            {
                **base,
                "outcome_class": r.outcome,
                "outcome_return": r.outcome_return,
                "resolved_at": ts_ms + self.step_ms,
            },
        )

    # ------------------------------------------------------------------ persistence
    def snapshot(self) -> dict[str, Any]:
        if not isinstance(self.broker, PaperBroker):
            broker: dict[str, Any] = {}
        else:
            broker = broker_to_dict(self.broker)
        return {
            "version": 1,
            "steps": self.steps,
            "candle_index": self.candle_index,
            "event_seq": self.event_seq,
            "last_ts_ms": self.last_ts_ms,
            "portfolio": portfolio_to_dict(self.state.portfolio),
            "risk": risk_to_dict(self.state.risk),
            "broker": broker,
            "protections": self.protections.to_dict(),
            "thresholds": self.thresholds.to_dict(),
            "feedback": self.feedback.to_dict(),
            "order_rows": self.order_rows,
            "symbols": {
                k: {
                    "model_target": s.targets.model,
                    "rsi_target": s.targets.fallback,
                    "source": s.source,
                    "stale_alerted": s.stale_alerted,
                }
                for k, s in self.symbols.items()
            },
            "model_id": self.manager.model_id,
            "latency": self.latency.to_dict(),
        }

    def flush(self, *, wait: bool = False) -> None:
        """Hand the current batch (+ latency and the state snapshot) to the writer."""
        if self.writer is None:
            self.batch = WriteBatch()
            return
        batch = self.batch
        self.batch = WriteBatch()
        if self.last_ts_ms is not None:
            updated = now_ms()
            for stage, h in self.latency.histograms.items():
                for upper, count in h.nonzero():
                    batch.add(
                        "loop_latency",
                        (stage, upper),
                        {
                            "account": self.config.account,
                            "stage": stage,
                            "bucket_upper_us": upper,
                            "count": count,
                            "updated_at": updated,
                        },
                    )
            batch.add(
                "loop_state",
                (self.config.account,),
                {
                    "account": self.config.account,
                    "last_ts": self.last_ts_ms,
                    "steps": self.steps,
                    "model_id": self.manager.active_id,
                    "state_json": json.dumps(self.snapshot(), allow_nan=True),
                    "updated_at": updated,
                },
            )
        self.writer.submit(batch)
        if wait:
            self.writer.flush()

    def restore(self, con: Any) -> int | None:
        """Load the account's snapshot; returns its last candle time (None: fresh start).
        The caller then replays candles up to it through ``warm`` (same numbers as before)."""
        data = load_snapshot(con, self.config.account)
        if data is None:
            return None
        self.steps = int(data["steps"])
        self.candle_index = int(data["candle_index"])
        self.event_seq = int(data["event_seq"])
        self.last_ts_ms = data["last_ts_ms"]
        self.state.portfolio = portfolio_from_dict(data["portfolio"])
        self.state.risk = risk_from_dict(data["risk"])
        if isinstance(self.broker, PaperBroker) and data["broker"]:
            broker_restore(self.broker, data["broker"])
        self.protections.load(data["protections"])
        self.thresholds.load(data["thresholds"])
        self.feedback.load(data["feedback"])
        self.order_rows = dict(data["order_rows"])
        self._pending_symbol_state = data["symbols"]
        self.latency.load(data.get("latency", {}))
        # the model comes back now, not at the next model check (until then the RSI fallback
        # would decide, and the first load would count as a new champion and wipe the restored
        # feedback and kill switch)
        self._check_model(int(self.last_ts_ms or 0), restored_id=data.get("model_id"))
        if self.last_ts_ms is not None:
            check_positions(
                self.state.portfolio,
                fills_net_units(con, self.config.account, int(self.last_ts_ms)),
                self.config.account,
            )
        return self.last_ts_ms

    def finish_restore(self) -> None:
        """After warm-up: put back the per-symbol decision state of the snapshot."""
        for sym, d in getattr(self, "_pending_symbol_state", {}).items():
            s = self._sym(sym)
            s.targets.model = int(d["model_target"])
            s.targets.fallback = int(d.get("rsi_target", 0))
            s.source = str(d["source"])
            s.stale_alerted = bool(d["stale_alerted"])
        self._pending_symbol_state = {}


class Market(Protocol):
    def ticks(self, *, after_ts_ms: int | None = None) -> Iterator[Any]: ...


@dataclass(frozen=True)
class RunSummary:
    ticks: int
    candles: int
    last_ts_ms: int | None
    equity: float
    positions: dict[str, float]
    resumed_from_ts_ms: int | None
    events: int


def run(
    loop: ServingLoop,
    market: Any,
    *,
    max_candles: int | None = None,
    con: Any = None,
    heartbeat: Callable[[ServingLoop], None] | None = None,
    stop: Callable[[], bool] | None = None,
    warm_until_ts_ms: int | None = None,
) -> RunSummary:
    """Restore (when ``con`` is given and a snapshot exists) and re-warm from the market's
    history up to the snapshot; on a fresh start, warm up to ``warm_until_ts_ms`` when given
    (those candles only feed the features: no decisions, no rows). Then process ticks until the
    market ends, ``max_candles`` candles were processed, or ``stop()`` says so. Flushes and
    waits for the writer at the end."""
    resumed = loop.restore(con) if con is not None else None
    start = resumed if resumed is not None else warm_until_ts_ms
    if start is not None:
        if not hasattr(market, "history"):
            raise RuntimeError("a warm-up needs a market with history to feed the features")
        for t in market.history(start):
            loop.warm(t)
        if resumed is not None:
            loop.finish_restore()
    ticks = candles = 0
    for tick in market.ticks(after_ts_ms=start):
        loop.on_tick(tick)
        ticks += 1
        candles += len(tick.bars)
        if heartbeat is not None:
            heartbeat(loop)
        if (max_candles is not None and candles >= max_candles) or (stop is not None and stop()):
            break
    loop.flush(wait=True)
    p = loop.state.portfolio
    return RunSummary(
        ticks,
        candles,
        loop.last_ts_ms,
        p.equity(),
        {s: x.units for s, x in p.positions.items()},
        resumed,
        len(loop.events),
    )


def iter_bars(ticks: Iterable[Any]) -> Iterator[Bar]:
    for t in ticks:
        yield from t.bars


__all__ = [
    "FEATURE_SET_VERSION",
    "LoopConfig",
    "Order",
    "PrecomputedBar",
    "RunSummary",
    "ServingLoop",
    "run",
]
