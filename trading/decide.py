"""The per-bar decision path, one component for ``serve`` and ``backtest --model``.

For one closed bar of one symbol (everything known at its close):

    model outputs (ONNX Runtime: online, or precomputed in batch -> ``PrecomputedBar``)
    -> confidence (``trading.confidence.score``: calibrated probability of the chosen class
       x volatility x feature quality x recent accuracy)
    -> the model rule (``trading.decision.model_event``): confidence gate, hold class,
       probability thresholds (adaptive, ``trading.thresholds``), expected edge against the
       round-trip cost
    -> or, without a usable model, the RSI fallback under the same gate
       (``trading.decision.rsi_event``, its confidence from the rule itself)
    -> protections (stale data, entry gate, locks, manual kill), the kill switch
    -> risk and orders: ``trading.step.step``.

``ServingLoop`` (``trading.loop``) keeps the scheduling, the I/O (rows, events) and the state;
it hands each bar to ``BarDecider.run``. A backtest that computes features and inference in
batch hands the loop ``PrecomputedBar`` values and runs exactly this code.

Expected edge (contract with ``models``): ``expected_return = sum_c p_c x r_c`` with
``r_c = ModelInfo.class_forward_returns`` (mean tradeable forward return of validation bars of
true class c). A model exported without them has no edge estimate: the edge rule is skipped.

Targets: a rule that fires sets the symbol's target (1 long, 0 flat, -1 short) and a bar that
does not fire keeps it, as ``trading.decision``'s deciders do. A kept target that would OPEN or
flip a position (after an entry was refused, e.g. by a lock) needs this bar's confidence at the
gate too, so no entry is ever taken on a confidence below the gate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trading.broker import Broker
from trading.confidence import ConfidencePolicy, score
from trading.decision import RsiRule, Thresholds, model_event, rsi_event
from trading.domain import Bar, Decision, Fill
from trading.fallback import FALLBACK_ID
from trading.protections import Protections
from trading.risk import RiskLimits
from trading.step import StepResult, TradingState, step

CLASS_NAMES = ("buy", "hold", "sell")


@dataclass(frozen=True, slots=True)
class PrecomputedBar:
    """The model's outputs for one bar of one symbol, computed before the decision.

    ``probabilities``: the (3,) [buy, hold, sell] calibrated probabilities, or None when the
    fallback decides (then ``fallback_reason`` says why: warm-up, feature quality, ONNX
    Runtime error, no model). ``model_confidence``: the model's ``confidence`` output for the
    bar. ``present_fraction``: share of the model's inputs present and finite in the bar's
    feature row. ``gap_bars``: the feature row's ``gap_bars`` (bars missing before this one).
    """

    probabilities: np.ndarray | None
    model_confidence: float = math.nan
    present_fraction: float = 0.0
    fallback_reason: str | None = None
    gap_bars: int = 0

    @classmethod
    def fallback(cls, reason: str, gap_bars: int = 0) -> PrecomputedBar:
        return cls(None, math.nan, 0.0, reason, gap_bars)


@dataclass(frozen=True, slots=True)
class Costs:
    """Trading costs as fractions of notional. ``half_spread_fraction`` is an estimate (candles
    carry no spread); the paper broker charges the fee and the slippage."""

    taker_fee: float
    slippage_fraction: float
    half_spread_fraction: float

    @property
    def round_trip(self) -> float:
        """Entering and leaving once: both sides pay fee, slippage and half the spread."""
        return 2.0 * (self.taker_fee + self.slippage_fraction + self.half_spread_fraction)


@dataclass(frozen=True, slots=True)
class ModelContext:
    """What the decision needs to know about the model that produced the probabilities."""

    model_id: str
    horizon_bars: int
    class_forward_returns: tuple[float, float, float] | None


def class_forward_returns(info: Any) -> tuple[float, float, float] | None:
    """``ModelInfo.class_forward_returns``; for a ``ModelInfo`` without that field, the ONNX
    metadata ``tradeloop.class_forward_returns`` (a JSON list of three fractions)."""
    if hasattr(info, "class_forward_returns"):
        value = info.class_forward_returns
    else:
        raw = getattr(info, "metadata", {}).get("tradeloop.class_forward_returns")
        value = json.loads(raw) if raw else None
    if value is None:
        return None
    r = tuple(float(x) for x in value)
    if len(r) != 3 or not all(math.isfinite(x) for x in r):
        raise ValueError(f"class_forward_returns must be three finite fractions, got {value!r}")
    return (r[0], r[1], r[2])


def model_context(model_id: str, info: Any, default_horizon_bars: int) -> ModelContext:
    return ModelContext(
        model_id,
        int(getattr(info, "horizon_bars", 0) or default_horizon_bars),
        class_forward_returns(info),
    )


def expected_return(
    probabilities: Sequence[float], returns: tuple[float, float, float] | None
) -> float | None:
    """``sum_c p_c x r_c`` (fraction); None without per-class returns."""
    if returns is None:
        return None
    return sum(float(p) * r for p, r in zip(probabilities, returns, strict=True))


@dataclass(frozen=True, slots=True)
class DecisionRules:
    """The fixed part of the decision path (from ``LoopConfig.rules``)."""

    confidence: ConfidencePolicy
    rsi: RsiRule
    fallback_size_fraction: float
    costs: Costs
    limits: RiskLimits
    default_horizon_bars: int


@dataclass
class Targets:
    """Per symbol: the last target each rule set (kept on bars where it does not fire)."""

    model: int = 0
    fallback: int = 0


@dataclass(frozen=True, slots=True)
class BarDecision:
    """The decision of one bar before protections and risk, with what its prediction row
    needs. ``predicted`` is "" when there is nothing to resolve later (RSI warm-up)."""

    decision: Decision
    source: str  # "model" | "fallback"
    model_id: str
    horizon_bars: int
    predicted: str
    confidence: float | None
    expected_return: float | None
    counted: bool  # counts toward the model's rolling accuracy


def _first_max(p: tuple[float, float, float]) -> int:
    """``np.argmax`` of three finite numbers (the first of equal maxima), without building an
    array a bar."""
    if p[0] >= p[1] and p[0] >= p[2]:
        return 0
    return 1 if p[1] >= p[2] else 2


def decide_bar(
    pre: PrecomputedBar,
    *,
    sigma: float,
    sigma_ref: float,
    rsi: float,
    hits: int,
    resolved: int,
    targets: Targets,
    thresholds: Thresholds,
    model: ModelContext | None,
    rules: DecisionRules,
    costs: Costs | None = None,
) -> BarDecision:
    """The rule part of the path (confidence, gate, classes, thresholds, edge; or the RSI
    fallback). Updates ``targets``; the RSI target follows its rule on every bar, so the
    fallback takes over with a current opinion. ``costs``: this bar's (the half spread of
    the symbol's order book), else ``rules.costs``."""
    gate = thresholds.min_confidence
    rsi_target, rsi_conf, rsi_reason = rsi_event(rsi, rules.rsi, gate)
    if rsi_target is not None:
        targets.fallback = rsi_target
    p = pre.probabilities
    if p is not None:
        if model is None:
            raise RuntimeError("model probabilities for a bar, but no model is loaded")
        parts = score(
            pre.model_confidence,
            sigma=sigma,
            sigma_ref=sigma_ref,
            present_fraction=pre.present_fraction,
            gap_bars=pre.gap_bars,
            hits=hits,
            resolved=resolved,
            policy=rules.confidence,
        )
        p3 = (float(p[0]), float(p[1]), float(p[2]))
        edge = expected_return(p3, model.class_forward_returns)
        event, reason = model_event(
            p3,
            parts.value,
            thresholds,
            expected_return=edge,
            round_trip_cost=(costs or rules.costs).round_trip,
            allow_short=rules.limits.allow_short,
            target=targets.model,
        )
        if event is not None:
            targets.model = event
        return BarDecision(
            Decision(targets.model, parts.value, 1.0, reason, p3),
            "model",
            model.model_id,
            model.horizon_bars,
            CLASS_NAMES[_first_max(p3)],
            parts.value,
            edge,
            True,
        )
    r = rules.rsi
    predicted = (
        "" if math.isnan(rsi) else "buy" if rsi < r.lower else "sell" if rsi > r.upper else "hold"
    )
    return BarDecision(
        Decision(targets.fallback, rsi_conf, rules.fallback_size_fraction, rsi_reason),
        "fallback",
        FALLBACK_ID,
        rules.default_horizon_bars,
        predicted,
        rsi_conf if predicted else None,
        None,
        False,
    )


def guard(
    d: Decision,
    *,
    current: int,
    gate: float,
    stale: bool,
    killed: bool,
    kill_reason: str,
    blocked: int | None,
    symbol: str,
    candle_index: int,
    protections: Protections,
) -> Decision:
    """The decision after this bar's fills are booked (``current`` is the position then):
    stale data keeps the position; an entry or flip below the confidence gate goes flat;
    then protections (manual kill, locks); then the kill switch refuses new positions.

    ``blocked``: the direction risk refuses to re-enter after a stop-loss or take-profit until
    the signal changes. A gated entry in that direction is left to risk (which refuses it):
    turning it flat would count as a change of signal and lift the block."""
    if stale:
        d = Decision(
            current, d.confidence, d.size_fraction, "stale data: no new signal", d.probabilities
        )
    elif d.signal not in (0, current, blocked) and d.confidence < gate:
        source = d.reason.split(":", 1)[0]
        why = f"{source}: confidence below gate"
        if not d.reason.startswith(why):
            why += f" ({d.confidence:.3f} < {gate:.2f}; no entry on the kept target)"
        else:
            why = d.reason
        d = Decision(0, d.confidence, d.size_fraction, why, d.probabilities)
    d = protections.apply(d, symbol, current, candle_index)
    if killed and d.signal not in (0, current):
        d = Decision(
            0, d.confidence, d.size_fraction, f"kill switch: {kill_reason}", d.probabilities
        )
    return d


@dataclass(frozen=True, slots=True)
class BarStep:
    """One bar through the whole path: its decision, the step's result (fills, orders, the
    decision risk planned from) and the protection locks that started at the bar."""

    chosen: BarDecision
    result: StepResult
    messages: tuple[str, ...]


@dataclass
class BarDecider:
    """The per-bar decision path over one account's trading state (see the module docstring).

    ``state``, ``broker`` and ``protections`` are the loop's own objects (mutated in place)."""

    rules: DecisionRules
    state: TradingState
    broker: Broker
    protections: Protections
    _messages: list[str] = field(default_factory=list)

    def run(
        self,
        bar: Bar,
        pre: PrecomputedBar,
        *,
        sigma: float,
        sigma_ref: float,
        rsi: float,
        hits: int,
        resolved: int,
        targets: Targets,
        thresholds: Thresholds,
        model: ModelContext | None,
        candle_index: int,
        stale: bool,
        costs: Costs | None = None,
    ) -> BarStep:
        chosen = decide_bar(
            pre,
            sigma=sigma,
            sigma_ref=sigma_ref,
            rsi=rsi,
            hits=hits,
            resolved=resolved,
            targets=targets,
            thresholds=thresholds,
            model=model,
            rules=self.rules,
            costs=costs,
        )
        messages: list[str] = []

        def adjust(d: Decision, fills: tuple[Fill, ...]) -> Decision:
            # after this bar's fills: an exit that filled at this bar's open makes a new signal
            # an ENTRY (seen by the gate and the locks), not "keep the position"
            messages.extend(self.protections.on_fills(candle_index, fills))
            risk = self.state.risk
            return guard(
                d,
                current=self.state.portfolio.direction(bar.symbol),
                gate=thresholds.min_confidence,
                stale=stale,
                killed=risk.killed,
                kill_reason=risk.kill_reason,
                blocked=risk.blocked_direction.get(bar.symbol),
                symbol=bar.symbol,
                candle_index=candle_index,
                protections=self.protections,
            )

        result = step(
            bar,
            chosen.decision,
            sigma,
            self.state,
            self.broker,
            self.rules.limits,
            adjust,
        )
        return BarStep(chosen, result, tuple(messages))


def infer_online(
    predictor: Any,
    windows: Mapping[str, np.ndarray | None],
    gap_bars: Mapping[str, int],
    min_feature_quality: float,
) -> dict[str, PrecomputedBar]:
    """ONE ``predictor.predict`` call for every symbol whose window (raw features, oldest
    first; None in warm-up) is complete and of good quality; the others get a fallback bar.
    An ONNX Runtime error makes the whole batch fall back (the reason names it)."""
    used = predictor.used_index
    out: dict[str, PrecomputedBar] = {}
    batch: list[np.ndarray] = []
    names: list[str] = []
    present: list[float] = []
    for sym, w in windows.items():
        gap = gap_bars.get(sym, 0)
        if w is None:
            out[sym] = PrecomputedBar.fallback("warm-up: window not complete", gap)
            continue
        frac = float(np.isfinite(w[-1, used]).mean())
        if frac < min_feature_quality or not np.isfinite(w[:, used]).all():
            out[sym] = PrecomputedBar.fallback(f"feature quality {frac:.2f} (missing inputs)", gap)
            continue
        batch.append(w)
        names.append(sym)
        present.append(frac)
    if not batch:
        return out
    try:
        p = predictor.predict(np.stack(batch))
    except Exception as exc:  # ONNX Runtime error: the fallback decides this step
        why = f"ONNX Runtime error: {type(exc).__name__}: {exc}"
        for sym in names:
            out[sym] = PrecomputedBar.fallback(why, gap_bars.get(sym, 0))
        return out
    for k, sym in enumerate(names):
        out[sym] = PrecomputedBar(
            p.probabilities[k].astype(np.float64),
            float(p.confidence[k]),
            present[k],
            None,
            gap_bars.get(sym, 0),
        )
    return out


__all__ = [
    "BarDecider",
    "BarDecision",
    "BarStep",
    "Costs",
    "DecisionRules",
    "ModelContext",
    "PrecomputedBar",
    "Targets",
    "class_forward_returns",
    "decide_bar",
    "expected_return",
    "guard",
    "infer_online",
    "model_context",
]
