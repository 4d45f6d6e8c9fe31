"""Cash, positions, equity and closed round trips of one account, updated from fills."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from trading.broker import cash_after_fill
from trading.domain import Fill, Position, Trade


@dataclass
class Portfolio:
    """Mutable book of one account. Equity = cash + sum(units x last marked price)."""

    cash: float
    positions: dict[str, Position] = field(default_factory=dict)
    last_price: dict[str, float] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    fees_paid: float = 0.0
    traded_notional: float = 0.0
    fills: int = 0

    def units(self, symbol: str) -> float:
        p = self.positions.get(symbol)
        return 0.0 if p is None else p.units

    def direction(self, symbol: str) -> int:
        u = self.units(symbol)
        return 1 if u > 0 else -1 if u < 0 else 0

    def mark(self, symbol: str, price: float) -> None:
        self.last_price[symbol] = price

    def equity(self) -> float:
        total = self.cash
        for symbol, p in self.positions.items():
            total += p.units * self.last_price[symbol]
        return total

    def exposure(self, symbol: str) -> float:
        """|position value| in quote currency at the last marked price."""
        p = self.positions.get(symbol)
        return 0.0 if p is None else abs(p.units * self.last_price[symbol])

    def apply_fill(self, fill: Fill) -> Trade | None:
        """Book a fill; returns the round trip it closed (if it closed or flipped a position)."""
        self.cash = cash_after_fill(self.cash, fill.side, fill.notional, fill.fee)
        self.fees_paid += fill.fee
        self.traded_notional += fill.notional
        self.fills += 1
        signed = fill.amount if fill.side == "buy" else -fill.amount
        p = self.positions.get(fill.symbol)
        before = 0.0 if p is None else p.units
        after = before + signed
        trade: Trade | None = None
        if p is None or before == 0.0:
            self.positions[fill.symbol] = Position(
                fill.symbol, after, fill.price, fill.ts_ms, fill.fee
            )
        elif (before > 0) == (signed > 0):  # adding to the position
            units = after
            avg = (before * p.entry_price + signed * fill.price) / units
            self.positions[fill.symbol] = replace(
                p, units=units, entry_price=avg, entry_fee=p.entry_fee + fill.fee
            )
        else:  # reducing, closing or flipping
            closed = min(fill.amount, abs(before))
            exit_fee = fill.fee * (closed / fill.amount)
            entry_fee = p.entry_fee * (closed / abs(before))
            direction = p.direction
            gross = closed * (fill.price - p.entry_price) * direction
            trade = Trade(
                symbol=fill.symbol,
                direction=direction,
                entry_ts_ms=p.entry_ts_ms,
                exit_ts_ms=fill.ts_ms,
                entry_price=p.entry_price,
                exit_price=fill.price,
                units=closed,
                pnl=gross - entry_fee - exit_fee,
                fees=entry_fee + exit_fee,
                exit_reason=fill.reason,
            )
            self.trades.append(trade)
            if fill.amount < abs(before):
                self.positions[fill.symbol] = replace(
                    p, units=after, entry_fee=p.entry_fee - entry_fee
                )
            elif fill.amount > abs(before):
                self.positions[fill.symbol] = Position(
                    fill.symbol, after, fill.price, fill.ts_ms, fill.fee - exit_fee
                )
            else:
                del self.positions[fill.symbol]
        if fill.symbol not in self.last_price:
            self.last_price[fill.symbol] = fill.price
        return trade
