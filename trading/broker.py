"""Brokers: the Broker protocol and the PaperBroker that simulates an exchange on candles.

Execution model of the PaperBroker (the backtests and the paper trading loop):

* A market order submitted after the close of bar t fills at the OPEN of the next bar the
  broker sees (t+1) — never at a price the decision could not have traded at.
* Fill price = reference price x (1 + slippage) for buys, x (1 - slippage) for sells. Slippage
  is a fixed fraction (``FixedSlippage``), walked through the latest order-book snapshot at or
  before the bar (``OrderBookSlippage``), or a per-bar schedule (``ScheduledSlippage``, stress).
* Fee = fill notional x fee fraction (taker for market and stop orders, maker for limit orders).
* Without margin, a buy is cut to what the cash pays for, fee included (the rest is cancelled).
* A position opened by an order with bracket fractions gets a stop-loss and a take-profit at
  fill price x (1 -/+ fraction). Each bar, after the open fills, the bar's range is checked:
  a long's stop fills at min(open, stop) (a gap through the stop fills at the open), its
  take-profit at max(open, take-profit); if both lie inside one bar the stop is assumed first.

The arithmetic helpers below are the ONLY place where fill prices, fees, and cash changes are
computed; the vectorized engine calls them too, which is why the two engines agree exactly.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from trading.domain import Bar, FeeModel, Fill, Order, OrderReason, Side

# ---------------------------------------------------------------- shared arithmetic


def slipped_price(reference_price: float, side: Side, slippage_fraction: float) -> float:
    """Price after slippage: buys pay more, sells receive less."""
    if side == "buy":
        return reference_price * (1.0 + slippage_fraction)
    return reference_price * (1.0 - slippage_fraction)


def fee_for(notional: float, fee_fraction: float) -> float:
    return notional * fee_fraction


def affordable_amount(cash: float, fill_price: float, fee_fraction: float) -> float:
    """Most base units ``cash`` buys at ``fill_price`` with the fee on top."""
    return cash / (fill_price * (1.0 + fee_fraction))


def cash_after_fill(cash: float, side: Side, notional: float, fee: float) -> float:
    if side == "buy":
        return cash - notional - fee
    return cash + notional - fee


def stop_trigger(
    direction: int,
    bar_open: float,
    bar_high: float,
    bar_low: float,
    stop_loss_price: float | None,
    take_profit_price: float | None,
) -> tuple[OrderReason, float] | None:
    """Which bracket leg a bar triggers and at what reference price (None: neither)."""
    if direction > 0:
        if stop_loss_price is not None and bar_low <= stop_loss_price:
            return "stop_loss", min(bar_open, stop_loss_price)
        if take_profit_price is not None and bar_high >= take_profit_price:
            return "take_profit", max(bar_open, take_profit_price)
    elif direction < 0:
        if stop_loss_price is not None and bar_high >= stop_loss_price:
            return "stop_loss", max(bar_open, stop_loss_price)
        if take_profit_price is not None and bar_low <= take_profit_price:
            return "take_profit", min(bar_open, take_profit_price)
    return None


def bracket_prices(
    fill_price: float,
    direction: int,
    stop_loss_fraction: float | None,
    take_profit_fraction: float | None,
) -> tuple[float | None, float | None]:
    sl = None if stop_loss_fraction is None else fill_price * (1.0 - direction * stop_loss_fraction)
    tp = (
        None
        if take_profit_fraction is None
        else fill_price * (1.0 + direction * take_profit_fraction)
    )
    return sl, tp


def fill_terms(
    side: Side,
    amount: float,
    fillable: float,
    reference_price: float,
    slippage_fraction: float,
    fee_fraction: float,
    cash: float,
    cash_limited: bool,
) -> tuple[float, float, float]:
    """(amount, price, fee) of a fill: slippage on the reference price, the amount cut to the
    book's depth and (for a cash-limited buy) to what the cash pays for, the fee on top."""
    price = slipped_price(reference_price, side, slippage_fraction)
    amount = min(amount, fillable)
    if side == "buy" and cash_limited:
        amount = min(amount, affordable_amount(cash, price, fee_fraction))
    return amount, price, fee_for(amount * price, fee_fraction)


def make_client_order_id(account: str, symbol: str, ts_ms: int, seq: int) -> str:
    """Deterministic id: re-running a step builds the same id, so a retry can be reconciled."""
    return f"{account}-{symbol.replace('/', '')}-{ts_ms}-{seq}"


# ---------------------------------------------------------------- slippage models


class SlippageModel(Protocol):
    def fraction(self, symbol: str, side: Side, amount: float, ts_ms: int) -> tuple[float, float]:
        """(slippage fraction, fillable amount) for an order executed at ``ts_ms``."""
        ...


@dataclass(frozen=True, slots=True)
class FixedSlippage:
    slippage_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.slippage_fraction < 0.5:
            raise ValueError(f"slippage_fraction={self.slippage_fraction!r}: must be in [0, 0.5)")

    def fraction(self, symbol: str, side: Side, amount: float, ts_ms: int) -> tuple[float, float]:
        return self.slippage_fraction, amount


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """One order-book snapshot: levels best first; prices in quote, sizes in base units."""

    ts_ms: int
    bid_prices: tuple[float, ...]
    bid_sizes: tuple[float, ...]
    ask_prices: tuple[float, ...]
    ask_sizes: tuple[float, ...]

    @property
    def mid(self) -> float:
        return (self.bid_prices[0] + self.ask_prices[0]) / 2.0


def walk_book(snapshot: BookSnapshot, side: Side, amount: float) -> tuple[float, float]:
    """(volume-weighted price, filled amount) of a market order of ``amount`` through the book."""
    prices, sizes = (
        (snapshot.ask_prices, snapshot.ask_sizes)
        if side == "buy"
        else (snapshot.bid_prices, snapshot.bid_sizes)
    )
    left, cost = amount, 0.0
    for price, size in zip(prices, sizes, strict=True):
        take = min(left, size)
        cost += take * price
        left -= take
        if left <= 0:
            break
    filled = amount - max(left, 0.0)
    return (cost / filled if filled > 0 else float("nan")), filled


@dataclass
class OrderBookSlippage:
    """Slippage = how far the order's VWAP through the latest snapshot lies from the mid.

    Uses the last snapshot at or before the execution time (never a later one). Orders larger
    than the book's depth fill partially; the rest is cancelled. Without such a snapshot:
    ``fallback``'s slippage (the serving loop: its fixed slippage), or LookupError.
    """

    snapshots: Mapping[str, Sequence[BookSnapshot]]  # per symbol, sorted by ts_ms
    fallback: SlippageModel | None = None

    def fraction(self, symbol: str, side: Side, amount: float, ts_ms: int) -> tuple[float, float]:
        books = self.snapshots.get(symbol)
        i = -1 if not books else bisect.bisect_right([b.ts_ms for b in books], ts_ms) - 1
        if i < 0 and self.fallback is not None:
            return self.fallback.fraction(symbol, side, amount, ts_ms)
        if not books:
            raise LookupError(f"no order-book snapshot for {symbol}")
        if i < 0:
            raise LookupError(f"no order-book snapshot for {symbol} at or before ts_ms={ts_ms}")
        book = books[i]
        vwap, filled = walk_book(book, side, amount)
        if filled <= 0:
            return 0.0, 0.0
        frac = vwap / book.mid - 1.0 if side == "buy" else 1.0 - vwap / book.mid
        return frac, filled


@dataclass(frozen=True)
class ScheduledSlippage:
    """A base slippage with per-bar overrides (e.g. a wide-spread illiquid stretch)."""

    base_fraction: float
    overrides: Mapping[int, float] = field(default_factory=dict)  # ts_ms -> fraction

    def fraction(self, symbol: str, side: Side, amount: float, ts_ms: int) -> tuple[float, float]:
        return self.overrides.get(ts_ms, self.base_fraction), amount


# ---------------------------------------------------------------- brokers


class Broker(Protocol):
    """What the trading step needs from a broker (paper or live)."""

    def submit(self, order: Order) -> None: ...

    def cancel(self, client_order_id: str) -> bool: ...

    def open_orders(self) -> list[Order]: ...

    def order_status(self, client_order_id: str) -> str:
        """'open', 'filled', 'cancelled', 'rejected' or 'unknown' (reconcile by client id)."""
        ...

    def process_bar(self, bar: Bar, available_cash: float) -> list[Fill]:
        """Execute what this (newly closed) bar allows; return the fills in time order."""
        ...


@dataclass
class _Bracket:
    units: float
    stop_loss_price: float | None
    take_profit_price: float | None
    client_order_id: str


class PaperBroker:
    """Simulated exchange on candles (see the module docstring for the execution model)."""

    def __init__(
        self,
        fees: FeeModel,
        slippage: SlippageModel | None = None,
        *,
        allow_margin: bool = False,
    ) -> None:
        self.fees = fees
        self.slippage: SlippageModel = slippage or FixedSlippage(0.0)
        self.allow_margin = allow_margin
        self._pending: list[Order] = []
        self._status: dict[str, str] = {}
        self._net_units: dict[str, float] = {}
        self._brackets: dict[str, _Bracket] = {}
        self._fill_seq = 0

    # -- protocol
    def submit(self, order: Order) -> None:
        if order.client_order_id in self._status:
            raise ValueError(f"duplicate client_order_id {order.client_order_id!r}")
        self._pending.append(order)
        self._status[order.client_order_id] = "open"

    def cancel(self, client_order_id: str) -> bool:
        for i, order in enumerate(self._pending):
            if order.client_order_id == client_order_id:
                del self._pending[i]
                self._status[client_order_id] = "cancelled"
                return True
        return False

    def open_orders(self) -> list[Order]:
        return list(self._pending)

    def order_status(self, client_order_id: str) -> str:
        return self._status.get(client_order_id, "unknown")

    def net_units(self, symbol: str) -> float:
        return self._net_units.get(symbol, 0.0)

    def bracket(self, symbol: str) -> tuple[float | None, float | None] | None:
        b = self._brackets.get(symbol)
        return None if b is None else (b.stop_loss_price, b.take_profit_price)

    def process_bar(self, bar: Bar, available_cash: float) -> list[Fill]:
        fills: list[Fill] = []
        cash = available_cash
        still: list[Order] = []
        for order in self._pending:
            if order.symbol != bar.symbol:
                still.append(order)
                continue
            reference = self._reference_price(order, bar)
            if reference is None:
                still.append(order)
                continue
            fill = self._execute(order, bar, reference, cash, order.reason)
            if fill is not None:
                fills.append(fill)
                cash = cash_after_fill(cash, fill.side, fill.notional, fill.fee)
        self._pending = still
        bracket_fill = self._check_bracket(bar, cash)
        if bracket_fill is not None:
            fills.append(bracket_fill)
        return fills

    # -- internals
    def _reference_price(self, order: Order, bar: Bar) -> float | None:
        if order.order_type == "market":
            return bar.open
        assert order.price is not None, (
            f"{order.order_type} order {order.client_order_id} needs a price"
        )
        if order.order_type == "limit":
            if order.side == "buy" and bar.low <= order.price:
                return min(bar.open, order.price)
            if order.side == "sell" and bar.high >= order.price:
                return max(bar.open, order.price)
            return None
        # stop order
        if order.side == "buy" and bar.high >= order.price:
            return max(bar.open, order.price)
        if order.side == "sell" and bar.low <= order.price:
            return min(bar.open, order.price)
        return None

    def _execute(
        self, order: Order, bar: Bar, reference: float, cash: float, reason: OrderReason
    ) -> Fill | None:
        if order.order_type == "limit":
            slip, fillable = 0.0, order.amount  # a resting limit order gets its price
        else:
            slip, fillable = self.slippage.fraction(
                order.symbol, order.side, order.amount, bar.ts_ms
            )
        fee_fraction = self.fees.fraction(order.order_type)
        amount, price, fee = fill_terms(
            order.side,
            order.amount,
            fillable,
            reference,
            slip,
            fee_fraction,
            cash,
            cash_limited=not self.allow_margin,
        )
        if not amount > 0:
            self._status[order.client_order_id] = "rejected"
            return None
        self._fill_seq += 1
        fill = Fill(
            fill_id=f"{order.client_order_id}-f{self._fill_seq}",
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            ts_ms=bar.ts_ms,
            side=order.side,
            price=price,
            amount=amount,
            fee=fee,
            reason=reason,
            reference_price=reference,
        )
        self._status[order.client_order_id] = "filled"
        before = self._net_units.get(order.symbol, 0.0)
        after = before + amount if order.side == "buy" else before - amount
        self._net_units[order.symbol] = after
        self._update_bracket(order, fill, before, after)
        return fill

    def _update_bracket(self, order: Order, fill: Fill, before: float, after: float) -> None:
        symbol = order.symbol
        if after == 0.0:
            self._brackets.pop(symbol, None)
            return
        if before == 0.0 or (before > 0) != (after > 0):
            self._brackets.pop(symbol, None)
            direction = 1 if after > 0 else -1
            sl, tp = bracket_prices(
                fill.price, direction, order.stop_loss_fraction, order.take_profit_fraction
            )
            if sl is not None or tp is not None:
                self._brackets[symbol] = _Bracket(after, sl, tp, order.client_order_id)
        elif symbol in self._brackets:
            self._brackets[symbol].units = after

    def _check_bracket(self, bar: Bar, cash: float) -> Fill | None:
        b = self._brackets.get(bar.symbol)
        if b is None:
            return None
        direction = 1 if b.units > 0 else -1
        hit = stop_trigger(
            direction, bar.open, bar.high, bar.low, b.stop_loss_price, b.take_profit_price
        )
        if hit is None:
            return None
        reason, reference = hit
        suffix = "sl" if reason == "stop_loss" else "tp"
        exit_order = Order(
            client_order_id=f"{b.client_order_id}-{suffix}",
            symbol=bar.symbol,
            side="sell" if direction > 0 else "buy",
            amount=abs(b.units),
            order_type="stop",
            price=b.stop_loss_price if reason == "stop_loss" else b.take_profit_price,
            created_ts_ms=bar.ts_ms,
            reason=reason,
        )
        self._status[exit_order.client_order_id] = "open"
        # A protective exit always closes the whole position (no cash cap on covering a short).
        saved, self.allow_margin = self.allow_margin, True
        try:
            return self._execute(exit_order, bar, reference, cash, reason)
        finally:
            self.allow_margin = saved
