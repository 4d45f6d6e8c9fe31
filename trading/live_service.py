"""Start and stop of a live loop: what ``serve_live`` does around ``trading.loop.run``.

* ``restore_live``: the loop's snapshot (``loop_state``: portfolio, risk state with its order
  sequence, the live broker's book) comes back from the warehouse, then the broker reconciles
  with the exchange (``CcxtBroker.reconcile_on_start``: orders sent after the snapshot, open
  orders, balances), the decision targets follow the positions held (a position bought after
  the snapshot is not taken for "flat" and sold), each finding becomes a ``reconcile`` event,
  the order sequence is floored
  by the order journal (client order ids stay unique across restarts), and the result is
  flushed before the first candle.
* ``stop_on_sigterm``: the first SIGTERM asks the loop to stop after the current step (``run``
  then flushes and waits for the writer); a second one raises ``SystemExit`` at once (``run``
  still flushes in its ``finally``).

No Prefect, no torch.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from trading.live_broker import CcxtBroker
from trading.loop import ServingLoop
from trading.state import load_snapshot
from trading.writer import now_ms


def journal_file(home: Path, account: str) -> Path:
    """The live broker's order journal of ``account`` (every order, written before its send)."""
    return home / "serve" / f"{account}.orders.jsonl"


def restore_live(
    loop: ServingLoop, broker: CcxtBroker, con: Any, symbols: Iterable[str]
) -> int | None:
    """Restore ``loop`` from its snapshot and the exchange (see the module docstring); returns
    the snapshot's last candle time (None: no snapshot)."""
    resumed = loop.restore(con)
    if resumed is not None:
        loop.finish_restore()
        data = load_snapshot(con, loop.config.account)
        if data is not None and data.get("broker"):
            broker.restore(data["broker"])
    symbols = list(symbols)
    notes = broker.reconcile_on_start(symbols)
    _order_rows(loop, broker)
    for symbol in symbols:
        # the rules' targets follow the position the exchange holds for the loop: one bought
        # just before a crash (after the snapshot) must not be read as "flat", and sold at once
        units = broker.net_units(symbol)
        direction = 1 if units > 0 else -1 if units < 0 else 0
        targets = loop._sym(symbol).targets
        if direction and (targets.model, targets.fallback) != (direction, direction):
            targets.model = targets.fallback = direction
            notes.append(f"{symbol}: decision targets set to the held position ({units:g})")
    ts = now_ms()
    for note in notes:
        loop.event(ts, "reconcile", note)
    risk = loop.state.risk
    # every order ever sent is in the journal, and every new id takes a sequence number above
    # its count: an id is never built twice, even after a crash between a send and a snapshot
    risk.order_seq = max(risk.order_seq, broker.journal_entries)
    loop.flush(wait=True)
    return resumed


def _order_rows(loop: ServingLoop, broker: CcxtBroker) -> None:
    """The order rows of orders found only in the journal (their step was never flushed), so
    that their fills update a row of the right type and candle, like any other order's."""
    updated = now_ms()
    for o in broker.recovered:
        if o.client_order_id in loop.rows.order_rows:
            continue
        row = {
            "account": loop.config.account,
            "client_order_id": o.client_order_id,
            "exchange": loop.config.exchange,
            "symbol": o.symbol,
            "ts": o.created_ts_ms,
            "side": o.side,
            "order_type": o.order_type,
            "amount": o.amount,
            "price": o.price,
            "status": broker.order_status(o.client_order_id),
            "exchange_order_id": broker.exchange_order_id(o.client_order_id),
            "mode": loop.config.mode,
            "updated_at": updated,
        }
        if row["status"] != "rejected":  # kept until its fill updates it
            loop.rows.order_rows[o.client_order_id] = row
        loop.rows.batch.add("orders", (o.client_order_id,), dict(row))


@contextmanager
def stop_on_sigterm() -> Iterator[Callable[[], bool]]:
    """Yields ``stop()`` for ``run``: True once SIGTERM arrived (see the module docstring).
    Outside the main thread (a signal handler cannot be set there) nothing is installed."""
    asked: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        asked.append(signum)
        if len(asked) > 1:
            raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield lambda: bool(asked)
    finally:
        signal.signal(signal.SIGTERM, previous)
