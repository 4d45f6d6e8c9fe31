"""One event-driven trading step — the function the event-driven backtest AND the live loop call.

For one newly closed bar of one symbol:

1. broker: orders submitted after the previous bar fill at this bar's open; resting brackets
   (stop-loss / take-profit) are checked against this bar's range;
2. portfolio: the fills are booked, the symbol is marked at this bar's close;
3. risk: the kill switch sees the new equity;
4. decision -> risk: the caller's decision for this bar (made from data up to this bar's close)
   becomes orders, submitted now and filled at the NEXT bar's open.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from trading.broker import Broker
from trading.domain import Bar, Decision, Fill, Order
from trading.portfolio import Portfolio
from trading.risk import RiskLimits, RiskState, plan_orders, update_kill_switch


@dataclass
class TradingState:
    """Everything one account carries from step to step."""

    portfolio: Portfolio
    risk: RiskState = field(default_factory=RiskState)
    account: str = "paper"


@dataclass(frozen=True, slots=True)
class StepResult:
    bar: Bar
    fills: tuple[Fill, ...]
    orders: tuple[Order, ...]
    decision: Decision
    target_direction: int
    equity: float
    cash: float
    units: float
    kill_switch_fired: bool
    note: str


def step(
    bar: Bar,
    decision: Decision,
    volatility_fraction: float,
    state: TradingState,
    broker: Broker,
    limits: RiskLimits,
    adjust: Callable[[Decision, tuple[Fill, ...]], Decision] | None = None,
) -> StepResult:
    """Run one bar through broker -> portfolio -> risk -> orders (see module docstring).

    ``adjust(decision, fills)``, when given, is called after this bar's fills are booked and
    returns the decision to plan orders from (the serving loop's protections: they must see the
    position as it is after an exit filled at this bar's open, or an exit followed by a new
    signal would re-enter straight through a lock)."""
    portfolio = state.portfolio
    fills = broker.process_bar(bar, portfolio.cash)
    for fill in fills:
        before = portfolio.direction(fill.symbol)
        portfolio.apply_fill(fill)
        if fill.reason in ("stop_loss", "take_profit"):
            state.risk.blocked_direction[fill.symbol] = before
    portfolio.mark(bar.symbol, bar.close)
    equity = portfolio.equity()
    fired = update_kill_switch(state.risk, equity, limits)
    if adjust is not None:
        decision = adjust(decision, tuple(fills))
    plan = plan_orders(
        decision,
        symbol=bar.symbol,
        ts_ms=bar.ts_ms,
        close=bar.close,
        volatility_fraction=volatility_fraction,
        portfolio=portfolio,
        state=state.risk,
        limits=limits,
        account=state.account,
    )
    for order in plan.orders:
        broker.submit(order)
    return StepResult(
        bar=bar,
        fills=tuple(fills),
        orders=plan.orders,
        decision=decision,
        target_direction=plan.target_direction,
        equity=equity,
        cash=portfolio.cash,
        units=portfolio.units(bar.symbol),
        kill_switch_fired=fired,
        note=plan.note,
    )
