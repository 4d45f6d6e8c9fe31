"""The rows the serving loop queues for the warehouse, one builder per table.

``LoopRows`` holds the current ``WriteBatch`` (handed to the ``BufferedWriter`` at each flush)
and the rows of the orders still open (an order's row is written again with its status when it
fills). Keys are the tables' natural keys, so a re-sent row replaces the earlier one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from trading.decide import BarStep
from trading.domain import Bar, Fill
from trading.feedback import Resolved
from trading.portfolio import Portfolio
from trading.writer import WriteBatch


@dataclass
class LoopRows:
    account: str
    exchange: str
    timeframe: str
    mode: str
    batch: WriteBatch = field(default_factory=WriteBatch)
    order_rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # open orders

    def take(self) -> WriteBatch:
        """The batch so far; a new one starts."""
        batch, self.batch = self.batch, WriteBatch()
        return batch

    def event(self, eid: str, ts_ms: int, kind: str, symbol: str | None, message: str) -> None:
        row = {"event_id": eid, "ts": ts_ms, "kind": kind, "symbol": symbol, "message": message}
        self.batch.add("loop_events", (eid,), {"account": self.account, **row})

    def prediction(self, bar: Bar, out: BarStep) -> dict[str, Any]:
        """The bar's prediction row (kept by the feedback, written again once resolved)."""
        chosen = out.chosen
        p = chosen.decision.probabilities if chosen.source == "model" else None
        row: dict[str, Any] = {
            "exchange": self.exchange,
            "symbol": bar.symbol,
            "timeframe": self.timeframe,
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
        return row

    def resolved(self, r: Resolved, resolved_at: int) -> None:
        row = {
            **(r.row or {}),
            "outcome_class": r.outcome,
            "outcome_return": r.outcome_return,
            "resolved_at": resolved_at,
        }
        self.batch.add("predictions", (r.symbol, r.ts_ms, r.model_id), row)

    def signal(self, bar: Bar, out: BarStep, threshold: float) -> None:
        result = out.result
        d = result.decision
        self.batch.add(
            "signals",
            (bar.symbol, bar.ts_ms),
            {
                "account": self.account,
                "exchange": self.exchange,
                "symbol": bar.symbol,
                "timeframe": self.timeframe,
                "ts": bar.ts_ms,
                "signal": result.target_direction,
                "confidence": d.confidence,
                "threshold": threshold,
                "size_fraction": d.size_fraction,
                "reason": f"{d.reason}; {result.note}",
            },
        )

    def orders(self, bar: Bar, out: BarStep, when: int) -> None:
        for o in out.result.orders:
            row = {
                "account": self.account,
                "client_order_id": o.client_order_id,
                "exchange": self.exchange,
                "symbol": o.symbol,
                "ts": bar.ts_ms,
                "side": o.side,
                "order_type": o.order_type,
                "amount": o.amount,
                "price": o.price,
                "status": "open",
                "exchange_order_id": None,
                "mode": self.mode,
                "updated_at": when,
            }
            self.order_rows[o.client_order_id] = row
            self.batch.add("orders", (o.client_order_id,), dict(row))

    def fills(
        self,
        fills: Iterable[Fill],
        when: int,
        status: Callable[[str], str],
        exchange_order_id: Callable[[str], str | None] | None,
    ) -> None:
        """Fill rows, and each filled order's row again with the broker's status (a live
        broker's ``exchange_order_id`` too)."""
        for f in fills:
            quote = f.symbol.split("/")[-1] if "/" in f.symbol else None
            self.batch.add(
                "fills",
                (f.fill_id,),
                {
                    "account": self.account,
                    "fill_id": f.fill_id,
                    "client_order_id": f.client_order_id,
                    "exchange": self.exchange,
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
                    "account": self.account,
                    "client_order_id": f.client_order_id,
                    "exchange": self.exchange,
                    "symbol": f.symbol,
                    "ts": f.ts_ms,
                    "side": f.side,
                    "order_type": "stop",
                    "amount": f.amount,
                    "price": f.reference_price,
                    "exchange_order_id": None,
                    "mode": self.mode,
                }
            row.update({"status": status(f.client_order_id), "updated_at": when})
            if exchange_order_id is not None:
                row["exchange_order_id"] = exchange_order_id(f.client_order_id)
            self.batch.add("orders", (f.client_order_id,), row)

    def equity(self, ts_ms: int, portfolio: Portfolio, peak: float) -> None:
        equity = portfolio.equity()
        self.batch.add(
            "equity",
            (ts_ms,),
            {
                "account": self.account,
                "ts": ts_ms,
                "cash": portfolio.cash,
                "position_value": equity - portfolio.cash,
                "equity": equity,
                # a negative fraction below the peak, as in the backtest's metrics
                "drawdown": equity / peak - 1.0 if peak > 0 else 0.0,
            },
        )

    def latency(
        self, batch: WriteBatch, buckets: Iterable[tuple[str, float, int]], at: int
    ) -> None:
        for stage, upper, count in buckets:
            batch.add(
                "loop_latency",
                (stage, upper),
                {
                    "account": self.account,
                    "stage": stage,
                    "bucket_upper_us": upper,
                    "count": count,
                    "updated_at": at,
                },
            )
