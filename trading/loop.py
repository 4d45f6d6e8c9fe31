"""The serving loop: market ticks -> online features -> ONNX Runtime (batched across symbols)
-> confidence -> adaptive thresholds -> protections -> the shared step (risk -> orders ->
broker) -> buffered warehouse writes. Imports neither torch nor Prefect.

Per tick (candles that closed at one open time, one per symbol):

1. manual kill / reset files; the registry's champion (every ``model_check_every_steps``
   ticks: hot swap between ticks, see ``trading.fallback``);
2. per candle: online features (``OnlineFeatureEngine``), volatility, RSI fallback state; the
   feedback resolves predictions whose horizon ended; the accuracy kill switch and the
   adaptive thresholds see the new rolling accuracy;
3. ONE ``OnnxPredictor.predict`` call for every symbol whose window is complete and whose
   feature quality is at least ``min_feature_quality``; the others (and all of them on an ONNX
   Runtime error or without a model) decide by the RSI rule;
4. per candle: confidence score (``trading.confidence``), decision
   (``trading.decision.ProbabilityDecider`` with the adaptive thresholds), protections, then
   ``trading.step.step`` — the same function the event-driven backtest runs;
5. rows for predictions, signals, orders, fills, equity and events go into a batch that the
   ``BufferedWriter`` writes in the background every ``flush_every_steps`` ticks together with
   the state snapshot (``trading.state``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipelines.features import FEATURE_SET_VERSION, OnlineFeatureEngine, feature_columns
from pipelines.resample import timeframe_ms
from trading.broker import Broker, FixedSlippage, PaperBroker
from trading.confidence import ConfidencePolicy, VolatilityReference, score
from trading.decision import OnlineVolatility, ProbabilityDecider, RsiDecider, RsiRule
from trading.domain import Bar, Decision, FeeModel, Fill, Order
from trading.fallback import FALLBACK_ID, ModelManager
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
from trading.step import TradingState, step
from trading.thresholds import AdaptiveThresholds, ThresholdPolicy
from trading.writer import BufferedWriter, WriteBatch, now_ms

log = logging.getLogger("tradeloop.serve")

CLASS_NAMES = ("buy", "hold", "sell")
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
    fees: FeeModel = field(default_factory=lambda: FeeModel(0.001, 0.001))
    slippage_fraction: float = 0.0005
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


class TickLike(Protocol):
    now_ms: int
    bars: tuple[Bar, ...]
    alerts: tuple[str, ...]


def model_decision(
    decider: ProbabilityDecider,
    probabilities: tuple[float, float, float],
    confidence: float,
) -> Decision:
    """The model path's decision once thresholds are set (shared with backtest checks)."""
    return decider.update(probabilities, confidence)


class SymbolState:
    """Candle-derived state of one symbol (rebuilt exactly by replaying its candles)."""

    def __init__(self, symbol: str, config: LoopConfig, n_features: int) -> None:
        self.symbol = symbol
        self.engine = OnlineFeatureEngine(config.timeframe)
        self.buf = np.full((2 * WINDOW_CAPACITY, n_features), np.nan, dtype=np.float32)
        self.pos = 0
        self.rows = 0
        self.vol = OnlineVolatility(config.volatility_window)
        self.label_vol = OnlineVolatility(config.feedback.vol_window_bars)
        self.vol_ref = VolatilityReference(config.confidence.reference_alpha)
        self.rsi = RsiDecider(config.rsi)
        self.model = ProbabilityDecider(config.thresholds.thresholds("base"))
        self.last_ts_ms: int | None = None
        self.sigma = math.nan
        self.label_sigma = math.nan
        self.rsi_decision = Decision(0)
        self.source = "fallback"
        self.stale_alerted = False

    def push(self, bar: Bar, columns: list[str]) -> None:
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
        self.sigma = self.vol.update(bar.close)
        self.label_sigma = self.label_vol.update(bar.close)
        self.vol_ref.update(self.sigma)
        self.rsi_decision = self.rsi.update(bar.close)
        self.last_ts_ms = bar.ts_ms

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
    def on_tick(self, tick: TickLike) -> None:
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

        # 2. features, volatility, feedback
        t0 = time.perf_counter_ns()
        resolved: list[Resolved] = []
        for bar in bars:
            s = self._sym(bar.symbol)
            s.push(bar, self.columns)
            resolved.extend(self.feedback.on_bar(bar.symbol, bar.close))
        self.latency.record_ns("features", time.perf_counter_ns() - t0)
        for r in resolved:
            self._resolved_row(r, ts_ms)
        if resolved:
            self._after_resolution(ts_ms)

        # 3. batched inference
        t1 = time.perf_counter_ns()
        outputs = self._infer(bars, ts_ms)
        self.latency.record_ns("inference", time.perf_counter_ns() - t1)

        # 4. decisions and the shared step
        t2 = time.perf_counter_ns()
        for bar in bars:
            self._decide_and_step(bar, outputs.get(bar.symbol), tick.now_ms)
        self.latency.record_ns("decision", time.perf_counter_ns() - t2)

        equity = self.state.portfolio.equity()
        self.batch.add(
            "equity",
            (ts_ms,),
            {
                "account": cfg.account,
                "ts": ts_ms,
                "cash": self.state.portfolio.cash,
                "position_value": equity - self.state.portfolio.cash,
                "equity": equity,
                "drawdown": 1.0 - equity / self.state.risk.peak_equity
                if self.state.risk.peak_equity > 0
                else 0.0,
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

    def _infer(self, bars: list[Bar], ts_ms: int) -> dict[str, tuple[np.ndarray, float, float]]:
        pred = self.manager.predictor
        if pred is None:
            self._set_sources(bars, "fallback", self.manager.fallback_reason, ts_ms)
            return {}
        info = pred.info
        used = pred.used_index
        windows, names, present = [], [], {}
        low_quality: list[tuple[str, str]] = []
        for bar in bars:
            s = self.symbols[bar.symbol]
            w = s.window(info.window_len)
            if w is None:
                low_quality.append((bar.symbol, "warm-up: window not complete"))
                continue
            last = w[-1, used]
            frac = float(np.isfinite(last).mean())
            if not np.isfinite(w[:, used]).all() or frac < self.config.min_feature_quality:
                low_quality.append((bar.symbol, f"feature quality {frac:.2f} (missing inputs)"))
                continue
            windows.append(w)
            names.append(bar.symbol)
            present[bar.symbol] = frac
        for sym, why in low_quality:
            self._set_source(sym, "fallback", why, ts_ms)
        if not windows:
            return {}
        try:
            p = pred.predict(np.stack(windows))
        except Exception as exc:  # ONNX Runtime error: the fallback decides this step
            for sym in names:
                self._set_source(
                    sym, "fallback", f"ONNX Runtime error: {type(exc).__name__}: {exc}", ts_ms
                )
            return {}
        out = {}
        for k, sym in enumerate(names):
            self._set_source(sym, "model", f"model {self.manager.model_id}", ts_ms)
            out[sym] = (p.probabilities[k].astype(np.float64), float(p.confidence[k]), present[sym])
        return out

    def _set_sources(self, bars: list[Bar], source: str, why: str, ts_ms: int) -> None:
        for b in bars:
            self._set_source(b.symbol, source, why, ts_ms)

    def _set_source(self, symbol: str, source: str, why: str, ts_ms: int) -> None:
        s = self.symbols[symbol]
        if s.source != source:
            old = s.source
            s.source = source
            if not (old == "fallback" and source == "fallback"):
                self.event(ts_ms, "fallback", f"{old} -> {source}: {why}", symbol)

    def _decide_and_step(
        self, bar: Bar, output: tuple[np.ndarray, float, float] | None, now_ms: int
    ) -> None:
        cfg = self.config
        s = self.symbols[bar.symbol]
        horizon = cfg.default_horizon_bars
        if output is not None:
            probs, model_conf, present = output
            parts = score(
                model_conf,
                sigma=s.sigma,
                sigma_ref=s.vol_ref.value,
                present_fraction=present,
                gap_bars=s.engine.gap_bars,
                hits=self.feedback.hits,
                resolved=self.feedback.resolved,
                policy=cfg.confidence,
            )
            s.model.thresholds = self.thresholds.current
            p3 = (float(probs[0]), float(probs[1]), float(probs[2]))
            decision = model_decision(s.model, p3, parts.value)
            model_id = self.manager.model_id or FALLBACK_ID
            assert self.manager.predictor is not None
            horizon = self.manager.predictor.info.horizon_bars or horizon
            predicted = CLASS_NAMES[int(np.argmax(probs))]
            pred_row: dict[str, float | None] = {
                "p_buy": p3[0],
                "p_hold": p3[1],
                "p_sell": p3[2],
                "confidence": parts.value,
            }
            counted = True
        else:
            d = s.rsi_decision
            decision = Decision(
                d.signal, d.confidence, cfg.fallback_size_fraction, f"fallback: {d.reason}"
            )
            model_id = FALLBACK_ID
            value = _rsi_value(s.rsi.rsi)
            predicted = (
                ("buy" if value < cfg.rsi.lower else "sell" if value > cfg.rsi.upper else "hold")
                if not math.isnan(value)
                else ""
            )
            pred_row = {"p_buy": None, "p_hold": None, "p_sell": None, "confidence": None}
            counted = False
        stale = now_ms - (bar.ts_ms + self.step_ms) > cfg.stale_after_timeframes * self.step_ms

        def protect(d: Decision, fills: tuple[Fill, ...]) -> Decision:
            # after this bar's fills: an exit that filled at this bar's open makes a new signal
            # an ENTRY (seen by the locks), not "keep the position"
            for msg in self.protections.on_fills(self.candle_index, fills):
                self.event(bar.ts_ms, "protection", msg, bar.symbol)
            current = self.state.portfolio.direction(bar.symbol)
            if stale:
                d = Decision(
                    current,
                    d.confidence,
                    d.size_fraction,
                    "stale data: no new signal",
                    d.probabilities,
                )
            return self.protections.apply(d, bar.symbol, current, self.candle_index)

        result = step(bar, decision, s.sigma, self.state, self.broker, cfg.limits, protect)
        decision = result.decision
        if result.kill_switch_fired:
            self.event(
                bar.ts_ms, "kill", f"kill switch fired: {self.state.risk.kill_reason}", bar.symbol
            )
        # rows
        acct, ex, tf = cfg.account, cfg.exchange, cfg.timeframe
        if predicted:
            thr = self.feedback.threshold(s.label_sigma, horizon)
            row = {
                "exchange": ex,
                "symbol": bar.symbol,
                "timeframe": tf,
                "ts": bar.ts_ms,
                "model_id": model_id,
                "horizon_bars": horizon,
                **pred_row,
                "predicted_class": predicted,
            }
            self.batch.add("predictions", (bar.symbol, bar.ts_ms, model_id), dict(row))
            self.feedback.add(
                Pending(
                    bar.symbol,
                    bar.ts_ms,
                    model_id,
                    predicted,
                    bar.close,
                    thr,
                    horizon,
                    horizon,
                    counted,
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
            row = {
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
            self.order_rows[o.client_order_id] = row
            self.batch.add("orders", (o.client_order_id,), dict(row))

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
                    "model_target": s.model.target,
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
            s.model.target = int(d["model_target"])
            s.source = str(d["source"])
            s.stale_alerted = bool(d["stale_alerted"])
        self._pending_symbol_state = {}


def _rsi_value(rsi: Any) -> float:
    """The RSI value an ``OnlineRSI`` last produced (nan in warm-up)."""
    if rsi.count < rsi.period:
        return math.nan
    if rsi.avg_loss == 0.0:
        return 50.0 if rsi.avg_gain == 0.0 else 100.0
    return 100.0 - 100.0 / (1.0 + rsi.avg_gain / rsi.avg_loss)


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


__all__ = ["LoopConfig", "RunSummary", "ServingLoop", "run", "FEATURE_SET_VERSION", "Order"]
