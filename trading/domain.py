"""Small frozen domain objects shared by the decision, risk, broker and portfolio code.

Units: prices in quote currency per base unit; ``amount`` in base units (always > 0, the
direction is in ``side``); fees and cash in quote currency; ``*_fraction`` are plain fractions
(0.001 = 0.1 %); ``ts_ms`` are UTC epoch milliseconds of a candle's OPEN time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop"]
OrderReason = Literal["entry", "exit", "flip", "stop_loss", "take_profit"]
Direction = Literal[-1, 0, 1]


@dataclass(frozen=True, slots=True)
class Bar:
    """One closed candle of one symbol (``ts_ms`` = open time, UTC epoch ms)."""

    symbol: str
    ts_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    index: int = -1  # position in the backtest's bar array; -1 when live


@dataclass(frozen=True, slots=True)
class FeeModel:
    """Exchange fees as fractions of traded notional, per side."""

    maker_fraction: float = 0.0
    taker_fraction: float = 0.0

    def __post_init__(self) -> None:
        for name in ("maker_fraction", "taker_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 0.1:
                raise ValueError(f"FeeModel.{name}={value!r}: must be a fraction in [0, 0.1)")

    def fraction(self, order_type: OrderType) -> float:
        return self.maker_fraction if order_type == "limit" else self.taker_fraction


@dataclass(frozen=True, slots=True)
class Order:
    """An order to the broker. ``price`` is the limit/stop price (None for market orders)."""

    client_order_id: str
    symbol: str
    side: Side
    amount: float
    order_type: OrderType = "market"
    price: float | None = None
    created_ts_ms: int = 0
    reason: OrderReason = "entry"
    # Bracket set on the position this order opens, as fractions of the fill price (None: none).
    stop_loss_fraction: float | None = None
    take_profit_fraction: float | None = None

    def __post_init__(self) -> None:
        if not self.amount > 0:
            raise ValueError(
                f"order {self.client_order_id}: amount must be > 0, got {self.amount!r}"
            )
        if self.side not in ("buy", "sell"):
            raise ValueError(f"order {self.client_order_id}: side {self.side!r} not buy/sell")


@dataclass(frozen=True, slots=True)
class Fill:
    """An executed (part of an) order."""

    fill_id: str
    client_order_id: str
    symbol: str
    ts_ms: int
    side: Side
    price: float  # after slippage
    amount: float
    fee: float  # quote currency
    reason: OrderReason
    reference_price: float  # the price before slippage (bar open or stop level)

    @property
    def notional(self) -> float:
        return self.amount * self.price


@dataclass(frozen=True, slots=True)
class Position:
    """An open position: ``units`` > 0 long, < 0 short (base units)."""

    symbol: str
    units: float
    entry_price: float
    entry_ts_ms: int
    entry_fee: float  # fee paid to open (quote), carried to the round trip
    stop_loss_price: float | None = None
    take_profit_price: float | None = None

    @property
    def direction(self) -> int:
        return 1 if self.units > 0 else -1 if self.units < 0 else 0


@dataclass(frozen=True, slots=True)
class Trade:
    """A closed round trip (entry fill to exit fill), net of both fees."""

    symbol: str
    direction: int
    entry_ts_ms: int
    exit_ts_ms: int
    entry_price: float
    exit_price: float
    units: float  # base units, > 0
    pnl: float  # quote currency, after fees
    fees: float
    exit_reason: OrderReason

    @property
    def return_fraction(self) -> float:
        """Net P&L over the entry notional."""
        return self.pnl / (self.units * self.entry_price)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the signal wants for one symbol after one bar's close.

    ``signal`` is the TARGET direction (1 long, 0 flat, -1 short); ``size_fraction`` in [0, 1]
    scales the per-symbol exposure limit; ``confidence`` in [0, 1].
    """

    signal: int
    confidence: float = 1.0
    size_fraction: float = 1.0
    reason: str = ""
    probabilities: tuple[float, float, float] | None = None  # [buy, hold, sell]

    def __post_init__(self) -> None:
        if self.signal not in (-1, 0, 1):
            raise ValueError(f"Decision.signal={self.signal!r}: must be -1, 0 or 1")
        if not 0.0 <= self.size_fraction <= 1.0:
            raise ValueError(f"Decision.size_fraction={self.size_fraction!r}: must be in [0, 1]")
