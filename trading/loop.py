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
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from expectations.candle_check import check_candle
from pipelines.features import FEATURE_SET_VERSION, feature_columns
from pipelines.resample import timeframe_ms
from trading.alerts import Alerter, AlertKind
from trading.broker import BookSnapshot, Broker, FixedSlippage, OrderBookSlippage, PaperBroker
from trading.decide import (
    BarDecider,
    BarStep,
    Costs,
    ModelContext,
    PrecomputedBar,
    infer_online,
    model_context,
)
from trading.domain import Bar, Order
from trading.fallback import ModelManager
from trading.feedback import Feedback, Pending, Resolved
from trading.latency import LatencyRecorder
from trading.loop_config import LoopConfig, SymbolState, default_limits
from trading.loop_rows import LoopRows
from trading.microstructure import half_spread_fraction
from trading.portfolio import Portfolio
from trading.protections import Protections, kill_file, reset_file
from trading.risk import RiskState, reset_accuracy_kill, reset_kill_switch
from trading.state import (
    broker_restore,
    broker_to_dict,
    check_positions,
    check_series,
    fills_net_units,
    load_snapshot,
    portfolio_from_dict,
    portfolio_to_dict,
    risk_from_dict,
    risk_to_dict,
)
from trading.step import TradingState
from trading.thresholds import AdaptiveThresholds
from trading.writer import BufferedWriter, WriteBatch, WriterBacklogFull, now_ms

log = logging.getLogger("tradeloop.serve")
FRESH_BOOK_BARS = 5  # an older order-book snapshot no longer prices a bar's costs


class TickLike(Protocol):
    now_ms: int
    bars: tuple[Bar, ...]
    alerts: tuple[str, ...]


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
        control_files: bool = True,
        log_events: bool = True,
        alerts: Alerter | None = None,
    ) -> None:
        """``control_files``: look for the manual kill and reset files under ``home`` at every
        step (``serve``); off for a backtest in a folder no ``tradeloop kill`` can reach, where the
        two file-system checks a candle were a tenth of its per-bar cost. ``log_events``: log
        each loop event (``serve``); a backtest keeps them in ``events`` and its report only,
        instead of thousands of threshold-mode lines on the terminal. ``alerts``: where the
        events a person is told about go (``trading.alerts``: kill switch, degradation, stale
        data, a live order in an unknown state), one alert per event."""
        self.config = config
        self.manager = manager
        self.writer = writer
        self.home = home
        self.columns = feature_columns()
        self.step_ms = timeframe_ms(config.timeframe)
        # paper fills walk the symbol's latest order book when it has one (trading.microstructure)
        self.books: dict[str, list[BookSnapshot]] = {}
        self.broker: Broker = broker or PaperBroker(
            config.fees,
            OrderBookSlippage(self.books, FixedSlippage(config.slippage_fraction)),
            allow_margin=False,
        )
        self.state = TradingState(Portfolio(cash=config.initial_cash), RiskState(), config.account)
        self.thresholds = AdaptiveThresholds(config.thresholds)
        self.protections = Protections(config.protections)
        self.feedback = Feedback(config.feedback, on_degraded=on_retrain, clock=clock)
        self._clock = clock
        self.candles_dropped = 0  # candles the gate's candle rules refused (``_checked``)
        self.decider = BarDecider(config.rules, self.state, self.broker, self.protections)
        self._model: tuple[int, ModelContext | None] = (-1, None)  # (manager generation, ...)
        self.latency = LatencyRecorder()
        self.symbols: dict[str, SymbolState] = {}
        self.rows = LoopRows(config.account, config.exchange, config.timeframe, config.mode)
        self.steps = 0
        self.candle_index = 0
        self.event_seq = 0
        self.last_ts_ms: int | None = None
        self.events: list[tuple[int, str, str | None, str]] = []  # kept for callers/tests
        self.seen_generation = 0
        self._kill_path = kill_file(home, config.account)
        self._reset_path = reset_file(home, config.account)
        self._control = control_files
        self._log_events = log_events
        self.alerts = alerts
        # what this loop serves (source, exchange, symbols, timeframe): stored in the snapshot;
        # a restore of another series is refused (trading.state.check_series)
        self.series: dict[str, Any] | None = None
        # why the writer refused the last batch (live backlog over its limit): no trading
        self.writes_refused: str | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def batch(self) -> WriteBatch:
        """The rows queued since the last flush."""
        return self.rows.batch

    @batch.setter
    def batch(self, value: WriteBatch) -> None:
        self.rows.batch = value

    def _sym(self, symbol: str) -> SymbolState:
        s = self.symbols.get(symbol)
        if s is None:
            pred = self.manager.predictor
            required = None if pred is None else pred.required_features
            s = SymbolState(symbol, self.config, len(self.columns), required)
            self.symbols[symbol] = s
            self.books[symbol] = s.books
        return s

    def event(
        self,
        ts_ms: int,
        kind: str,
        message: str,
        symbol: str | None = None,
        *,
        alert: AlertKind | None = None,
    ) -> None:
        """Log and store a loop event; ``alert``: also a notification of that kind."""
        self.event_seq += 1
        if self._log_events:
            log.warning("[%s] %s%s", kind, f"{symbol}: " if symbol else "", message)
        self.events.append((ts_ms, kind, symbol, message))
        eid = f"{ts_ms}-{self.event_seq}"
        self.rows.event(eid, ts_ms, kind, symbol, message)
        if alert is not None and self.alerts is not None:
            self.alerts.alert(
                alert,
                message,
                key=f"{self.config.account}:{eid}",
                account=self.config.account,
                symbol=symbol,
                model=self.manager.active_id,
                ts_ms=ts_ms,
            )

    # ------------------------------------------------------------------ warm-up (restart)
    def warm(self, tick: TickLike) -> None:
        """Feed candles through the candle-derived state only (no decisions, no writes)."""
        self._feed_side(tick)
        for bar in self._checked(tick.bars, record=False):
            self._sym(bar.symbol).push(bar, self.columns)

    def _checked(self, bars: Iterable[Bar], *, record: bool) -> list[Bar]:
        """The bars that pass the quality gate's candle rules (``expectations.candle_check``:
        finite, positive, OHLC consistent, on the grid, closed and not in the future by the wall
        clock, after the symbol's last accepted candle). A bad one is dropped and counted, and
        (``record``) stored as a ``data`` event: the candle-derived state never sees it, so one
        NaN cannot poison RSI or the model's window, and the next good candle carries on."""
        now = int(self._clock() * 1000)
        kept: list[Bar] = []
        for bar in bars:
            s = self.symbols.get(bar.symbol)
            why = check_candle(bar, self.config.timeframe, s.last_ts_ms if s else None, now)
            if why is None:
                kept.append(bar)
                continue
            self.candles_dropped += 1
            if record:
                self.event(bar.ts_ms, "data", f"candle dropped: {why}", bar.symbol)
        return kept

    # ------------------------------------------------------------------ the step
    def on_tick(
        self, tick: TickLike, precomputed: Mapping[str, PrecomputedBar] | None = None
    ) -> None:
        """Process one tick. ``precomputed``: the model outputs of this tick's bars, by symbol
        (a batched backtest's features and inference); a symbol found there skips the online
        feature engine and ONNX Runtime for the bar, everything else runs as without it."""
        t_start = time.perf_counter_ns()
        cfg = self.config
        bars = sorted(self._checked(tick.bars, record=True), key=lambda b: b.symbol)
        ts_ms = bars[0].ts_ms if bars else (self.last_ts_ms or 0)
        for alert in tick.alerts:
            self.event(ts_ms, "alert", alert)
        if self._control:
            self._control_files(ts_ms)
        if self.steps % cfg.model_check_every_steps == 0:
            self._check_model(ts_ms)
        self._stale_alerts(tick.now_ms, {b.symbol for b in bars}, ts_ms)
        self._feed_side(tick)
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
            self.rows.resolved(r, ts_ms + self.step_ms)
        if resolved:
            self._after_resolution(ts_ms)

        if self.writes_refused is None:  # else the writer refused rows: no trading (flush)
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

        self.rows.equity(ts_ms, self.state.portfolio, self.state.risk.peak_equity)
        msg = self.protections.on_equity(self.candle_index, self.state.portfolio.equity())
        if msg:
            self.event(ts_ms, "protection", msg)
        self.candle_index += 1
        self.steps += 1
        self.last_ts_ms = ts_ms
        self.latency.record_ns("total", time.perf_counter_ns() - t_start)
        if self.steps % cfg.flush_every_steps == 0:
            self.flush()

    def _feed_side(self, tick: TickLike) -> None:
        """The order books and trades the market received before the tick's candles
        (``Tick.side``), to each symbol's online engine and order book, in time order."""
        for side in getattr(tick, "side", ()):
            if side:
                self._sym(side.symbol).feed(side)

    def _costs(self, s: SymbolState, bar: Bar) -> Costs | None:
        """The bar's costs with its order book's half spread (a snapshot taken at most
        ``FRESH_BOOK_BARS`` bars before the bar closed); None: the configured estimate."""
        book = s.book
        if book is None or book.ts_ms < bar.ts_ms - FRESH_BOOK_BARS * self.step_ms:
            return None
        half = half_spread_fraction(book)
        if half is None:
            return None
        c = self.config.costs
        return Costs(c.taker_fee, c.slippage_fraction, half)

    def _check_model(self, ts_ms: int, *, restored_id: str | None = None) -> None:
        """Look up the champion (hot swap). A NEW champion resets the rolling metrics and the kill
        switch; ``restored_id`` is the model of a just-restored snapshot, whose state is kept."""
        for ev in self.manager.refresh():
            self.event(ts_ms, ev.kind, ev.message)
        if self.manager.generation == self.seen_generation:
            return
        self.seen_generation = self.manager.generation
        if self.manager.predictor is not None:  # the engines compute what it reads, only that
            for s in self.symbols.values():
                s.use_features(self.manager.predictor.required_features, self.columns)
        if restored_id is not None and self.manager.model_id == restored_id:
            return
        self.feedback.reset_model()
        # only the accuracy leg measures the model; a drawdown kill (and its equity peak)
        # stays until `tradeloop kill --reset`
        if reset_accuracy_kill(self.state.risk):
            self.event(
                ts_ms,
                "kill",
                f"kill switch reset: new champion {self.manager.model_id}",
                alert="kill_reset",
            )
        elif self.state.risk.killed:
            self.event(
                ts_ms,
                "kill",
                f"new champion {self.manager.model_id}; the {self.state.risk.kill_kind} kill "
                "stays on until `tradeloop kill --reset`",
            )

    def _control_files(self, ts_ms: int) -> None:
        killed = self._kill_path.exists()
        if killed != self.protections.manual_kill:
            self.protections.manual_kill = killed
            self.event(
                ts_ms,
                "kill",
                "manual kill: no new orders" if killed else "manual kill lifted",
                alert="kill_fired" if killed else "kill_reset",
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
                    ts_ms,
                    "kill",
                    "kill switch reset by hand; rolling accuracy starts afresh",
                    alert="kill_reset",
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
                    alert="stale",
                )

    def _after_resolution(self, ts_ms: int) -> None:
        fb = self.feedback
        acc, n = fb.accuracy, fb.resolved
        why = self.protections.check_accuracy(acc, n)
        if why and not self.state.risk.killed:
            self.state.risk.killed = True
            self.state.risk.kill_reason = why
            self.state.risk.kill_kind = "accuracy"
            self.event(
                ts_ms,
                "kill",
                f"kill switch fired: {why} (model {self.manager.active_id}); "
                "no new positions until a new champion or a manual reset",
                alert="kill_fired",
            )
        change = self.thresholds.update(acc, n)
        if change is not None:
            self.event(ts_ms, "threshold", change.reason)
        trigger = fb.check_degradation()
        if trigger:
            self.event(ts_ms, "retrain", f"retraining requested: {trigger}", alert="degraded")

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
            costs=self._costs(s, bar),
        )
        for msg in out.messages:
            self.event(bar.ts_ms, "protection", msg, bar.symbol)
        if out.result.kill_switch_fired:
            self.event(
                bar.ts_ms,
                "kill",
                f"kill switch fired: {self.state.risk.kill_reason}",
                bar.symbol,
                alert="kill_fired",
            )
        self._bar_rows(bar, s, out)

    def _bar_rows(self, bar: Bar, s: SymbolState, out: BarStep) -> None:
        chosen = out.chosen
        if chosen.predicted:
            row = self.rows.prediction(bar, out)
            h, fb = chosen.horizon_bars, self.feedback
            threshold = fb.threshold(s.label_sigma, h)
            fb.add(
                Pending(
                    bar.symbol,
                    bar.ts_ms,
                    chosen.model_id,
                    chosen.predicted,
                    bar.close,
                    threshold,
                    h,
                    h,
                    chosen.counted,
                    row,
                )
            )
        self.rows.signal(bar, out, self.thresholds.current.min_confidence)
        when = bar.ts_ms + self.step_ms
        self.rows.fills(
            out.result.fills,
            when,
            self.broker.order_status,
            getattr(self.broker, "exchange_order_id", None),  # live broker: the exchange's id
        )
        self.rows.orders(bar, out, when)

    # ------------------------------------------------------------------ persistence
    def snapshot(self) -> dict[str, Any]:
        if not isinstance(self.broker, PaperBroker):
            to_dict = getattr(self.broker, "to_dict", None)  # the live broker's book
            broker: dict[str, Any] = to_dict() if to_dict is not None else {}
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
            "order_rows": self.rows.order_rows,
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
            "series": self.series,
        }

    def flush(self, *, wait: bool = False) -> None:
        """Hand the current batch (+ latency and the state snapshot) to the writer."""
        batch = self.rows.take()
        if self.writer is None:
            return
        if self.last_ts_ms is not None:
            updated = now_ms()
            buckets = [
                (stage, upper, count)
                for stage, h in self.latency.histograms.items()
                for upper, count in h.nonzero()
            ]
            self.rows.latency(batch, buckets, updated)
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
        if wait:
            self.writer.flush()  # bounded: retries end, bad rows are set aside
        try:
            self.writer.submit(batch)
        except WriterBacklogFull as exc:
            # live: the warehouse is behind; keep the rows (sent with the next batch it takes)
            # and trade no more until it accepts again (an order it cannot record is not sent)
            self.rows.batch = batch
            if self.writes_refused is None:
                self.event(
                    self.last_ts_ms or 0,
                    "alert",
                    f"warehouse writes refused ({exc}); no trading until they are accepted",
                )
            self.writes_refused = str(exc)
            return
        if self.writes_refused is not None:
            self.writes_refused = None
            self.event(self.last_ts_ms or 0, "alert", "warehouse writes accepted again; trading")
        if wait:
            self.writer.flush()

    def restore(self, con: Any) -> int | None:
        """Load the account's snapshot; returns its last candle time (None: fresh start).
        The caller then replays candles up to it through ``warm`` (same numbers as before)."""
        data = load_snapshot(con, self.config.account)
        if data is None:
            return None
        check_series(data.get("series"), self.series, self.config.account)
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
        self.rows.order_rows = dict(data["order_rows"])
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
    candles_dropped: int = 0  # refused by the gate's candle rules (``data`` events say why)


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
    waits for the writer at the end, also when the loop raises."""
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
    try:
        for tick in market.ticks(after_ts_ms=start):
            loop.on_tick(tick)
            ticks += 1
            candles += len(tick.bars)
            if heartbeat is not None:
                heartbeat(loop)
            if (max_candles is not None and candles >= max_candles) or (
                stop is not None and stop()
            ):
                break
    finally:  # an exception (an exchange error, SystemExit on a signal) loses no queued rows
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
        loop.candles_dropped,
    )


def iter_bars(ticks: Iterable[Any]) -> Iterator[Bar]:
    for t in ticks:
        yield from t.bars


__all__ = [
    "FEATURE_SET_VERSION",
    "LoopConfig",
    "SymbolState",
    "default_limits",
    "Order",
    "PrecomputedBar",
    "RunSummary",
    "ServingLoop",
    "run",
]
