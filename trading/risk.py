"""Risk: from a decision to orders, under limits.

* Sizing: the weight (fraction of equity) of a new position is
  ``max_position_fraction x decision.size_fraction x confidence_scale`` where
  ``confidence_scale = m + (1 - m) x (c - min_confidence) / (1 - min_confidence)``
  with m = ``min_size_scale``
  (clipped to [0, 1]; 1 when ``confidence_sizing`` is off), then capped so that the sum of
  all positions stays within ``max_total_exposure_fraction``. Units = weight x equity / close.
* Positions change only when the target DIRECTION changes (entry, exit, flip); the size is set
  at entry and not rebalanced every bar (no churn from small confidence changes).
* Stops: a new position carries a stop-loss at ``stop_loss_vol_mult x sigma`` and a take-profit
  at ``take_profit_vol_mult x sigma`` from its fill price, sigma = the per-bar sigma over the
  horizon forecast at the decision by the symbol's volatility forecaster
  (``trading.volatility``: the realized 20-bar std of log returns unless an EWMA or GARCH
  forecast beat it out of sample; ``LoopConfig.volatility_choice``). The same sigma scales
  confidence sizing (``trading.confidence.volatility_factor``). Without sigma (warm-up) no
  position is opened while stops are on. After a stop or take-profit, the same direction is not
  re-entered until the signal has changed.
* Kill switch: when equity falls more than ``max_drawdown_fraction`` below its peak, no new
  positions are opened (exits still are) until ``reset_kill_switch``.
* Long/flat by default: a short signal means flat unless ``allow_short``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trading.broker import make_client_order_id
from trading.domain import Decision, Order, OrderReason
from trading.portfolio import Portfolio


@dataclass(frozen=True, slots=True)
class RiskLimits:
    max_position_fraction: float = 1.0  # per symbol, of equity
    max_total_exposure_fraction: float = 1.0  # all symbols together, of equity
    min_confidence: float = 0.0  # no new position below this confidence
    confidence_sizing: bool = False
    min_size_scale: float = 0.25  # size at exactly min_confidence, when confidence_sizing
    stop_loss_vol_mult: float | None = None  # stop distance in sigmas (None: no stop-loss)
    take_profit_vol_mult: float | None = None
    max_drawdown_fraction: float | None = None  # kill switch (None: off)
    allow_short: bool = False

    def __post_init__(self) -> None:
        for name in ("max_position_fraction", "max_total_exposure_fraction"):
            v = getattr(self, name)
            if not 0.0 < v <= 10.0:
                raise ValueError(f"RiskLimits.{name}={v!r}: must be in (0, 10]")
        if not 0.0 <= self.min_confidence < 1.0:
            raise ValueError(
                f"RiskLimits.min_confidence={self.min_confidence!r}: must be in [0, 1)"
            )
        for name in ("stop_loss_vol_mult", "take_profit_vol_mult"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"RiskLimits.{name}={v!r}: must be > 0 or None")
        if self.max_drawdown_fraction is not None and not 0 < self.max_drawdown_fraction < 1:
            raise ValueError("RiskLimits.max_drawdown_fraction must be in (0, 1) or None")

    @property
    def uses_stops(self) -> bool:
        return self.stop_loss_vol_mult is not None or self.take_profit_vol_mult is not None


@dataclass
class RiskState:
    """What risk remembers between steps (persisted by the live loop)."""

    peak_equity: float = -math.inf
    killed: bool = False
    kill_reason: str = ""
    # what fired it: "drawdown" (lifted only by hand: `tradeloop kill --reset`) or "accuracy"
    # (a new champion lifts it too)
    kill_kind: str = ""
    blocked_direction: dict[str, int] = field(default_factory=dict)  # after a stop/take-profit
    order_seq: int = 0


def update_kill_switch(state: RiskState, equity: float, limits: RiskLimits) -> bool:
    """Track the equity peak; returns True when the kill switch fires on this update."""
    if equity > state.peak_equity:
        state.peak_equity = equity
    if (
        not state.killed
        and limits.max_drawdown_fraction is not None
        and equity < state.peak_equity * (1.0 - limits.max_drawdown_fraction)
    ):
        state.killed = True
        state.kill_kind = "drawdown"
        state.kill_reason = (
            f"drawdown {1 - equity / state.peak_equity:.2%} > {limits.max_drawdown_fraction:.2%}"
        )
        return True
    return False


def reset_kill_switch(state: RiskState) -> None:
    """Lift the kill switch by hand: the drawdown is measured again from a new peak."""
    state.killed = False
    state.kill_reason = ""
    state.kill_kind = ""
    state.peak_equity = -math.inf


def reset_accuracy_kill(state: RiskState) -> bool:
    """Lift an ACCURACY kill (a new champion is measured afresh); a drawdown kill stays on and
    the equity peak is kept. True when the switch was lifted."""
    if not state.killed or state.kill_kind != "accuracy":
        return False
    state.killed = False
    state.kill_reason = ""
    state.kill_kind = ""
    return True


def confidence_scale(confidence: float, limits: RiskLimits) -> float:
    if not limits.confidence_sizing:
        return 1.0
    span = 1.0 - limits.min_confidence
    x = min(max((confidence - limits.min_confidence) / span, 0.0), 1.0)
    return limits.min_size_scale + (1.0 - limits.min_size_scale) * x


def entry_weight(decision: Decision, limits: RiskLimits, other_exposure_fraction: float) -> float:
    """Fraction of equity for a new position (see module docstring)."""
    w = (
        limits.max_position_fraction
        * decision.size_fraction
        * confidence_scale(decision.confidence, limits)
    )
    return min(w, max(0.0, limits.max_total_exposure_fraction - other_exposure_fraction))


def target_units(direction: int, weight: float, equity: float, price: float) -> float:
    return direction * (weight * equity / price)


def desired_direction(decision: Decision, symbol: str, state: RiskState, limits: RiskLimits) -> int:
    """The decision's direction after long/flat and the stop re-entry block."""
    d = decision.signal
    if d < 0 and not limits.allow_short:
        d = 0
    blocked = state.blocked_direction.get(symbol)
    if blocked is not None:
        if d == blocked:
            return 0
        del state.blocked_direction[symbol]
    return d


@dataclass(frozen=True, slots=True)
class RiskPlan:
    orders: tuple[Order, ...]
    target_direction: int
    note: str


def plan_orders(
    decision: Decision,
    *,
    symbol: str,
    ts_ms: int,
    close: float,
    volatility_fraction: float,
    portfolio: Portfolio,
    state: RiskState,
    limits: RiskLimits,
    account: str = "paper",
) -> RiskPlan:
    """Orders that move ``symbol`` from its current position toward the decision's target."""
    current_units = portfolio.units(symbol)
    current = 1 if current_units > 0 else -1 if current_units < 0 else 0
    want = desired_direction(decision, symbol, state, limits)
    if want == current:
        return RiskPlan((), current, "no change")
    note = ""
    weight = 0.0
    if want != 0:
        refusal = _entry_refusal(decision, volatility_fraction, state, limits)
        if refusal is None:
            equity = portfolio.equity()
            other = sum(portfolio.exposure(s) for s in portfolio.positions if s != symbol)
            weight = entry_weight(decision, limits, other / equity if equity > 0 else 1.0)
            if not weight > 0:
                refusal = "no exposure left under the total limit"
        if refusal is not None:
            note = f"no new {'long' if want > 0 else 'short'}: {refusal}"
            want = 0
            if current == 0:
                return RiskPlan((), 0, note)
    target = 0.0 if want == 0 else target_units(want, weight, portfolio.equity(), close)
    delta = target - current_units
    if delta == 0.0:
        return RiskPlan((), current, note or "no change")
    reason: OrderReason = "exit" if want == 0 else "entry" if current == 0 else "flip"
    sl = tp = None
    if want != 0:
        if limits.stop_loss_vol_mult is not None:
            sl = limits.stop_loss_vol_mult * volatility_fraction
        if limits.take_profit_vol_mult is not None:
            tp = limits.take_profit_vol_mult * volatility_fraction
    state.order_seq += 1
    order = Order(
        client_order_id=make_client_order_id(account, symbol, ts_ms, state.order_seq),
        symbol=symbol,
        side="buy" if delta > 0 else "sell",
        amount=abs(delta),
        order_type="market",
        created_ts_ms=ts_ms,
        reason=reason,
        stop_loss_fraction=sl,
        take_profit_fraction=tp,
    )
    return RiskPlan((order,), want, note or reason)


def _entry_refusal(
    decision: Decision, volatility_fraction: float, state: RiskState, limits: RiskLimits
) -> str | None:
    if state.killed:
        return f"kill switch ({state.kill_reason})"
    if decision.confidence < limits.min_confidence:
        return f"confidence {decision.confidence:.3f} < {limits.min_confidence}"
    if limits.uses_stops and not (volatility_fraction > 0):
        return "volatility unknown (warm-up), stops cannot be placed"
    return None
