"""Restart exactly: the loop's state as JSON in ``loop_state`` (one row per account).

The snapshot holds the portfolio (cash, positions, last prices, round trips, totals), the shared
``RiskState``, the paper broker's book (pending orders, brackets, statuses, fill sequence), and
the loop's rolling state (protections, thresholds, feedback, decider targets, per-symbol last
candle). Candle-derived state (online features, RSI, volatility) is rebuilt by replaying the
candles up to the snapshot's last candle through the same code, which gives the same numbers.
After a restore, the positions are checked against the ``fills`` table: the net units of every
symbol from the stored fills must equal the snapshot's positions.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

import duckdb

from trading.broker import PaperBroker, _Bracket
from trading.domain import Order, Position, Trade
from trading.portfolio import Portfolio
from trading.risk import RiskState


class StateError(RuntimeError):
    """The stored state cannot be restored or contradicts the warehouse."""


def _num(x: float) -> float | None:
    return None if math.isinf(x) or math.isnan(x) else x


def portfolio_to_dict(p: Portfolio) -> dict[str, Any]:
    return {
        "cash": p.cash,
        "positions": [asdict(x) for x in p.positions.values()],
        "last_price": dict(p.last_price),
        "trades": [asdict(t) for t in p.trades],
        "fees_paid": p.fees_paid,
        "traded_notional": p.traded_notional,
        "fills": p.fills,
    }


def portfolio_from_dict(d: dict[str, Any]) -> Portfolio:
    p = Portfolio(cash=float(d["cash"]))
    p.positions = {x["symbol"]: Position(**x) for x in d["positions"]}
    p.last_price = {k: float(v) for k, v in d["last_price"].items()}
    p.trades = [Trade(**t) for t in d["trades"]]
    p.fees_paid = float(d["fees_paid"])
    p.traded_notional = float(d["traded_notional"])
    p.fills = int(d["fills"])
    return p


def risk_to_dict(r: RiskState) -> dict[str, Any]:
    return {
        "peak_equity": _num(r.peak_equity),
        "killed": r.killed,
        "kill_reason": r.kill_reason,
        "kill_kind": r.kill_kind,
        "blocked_direction": dict(r.blocked_direction),
        "order_seq": r.order_seq,
    }


def risk_from_dict(d: dict[str, Any]) -> RiskState:
    peak = d["peak_equity"]
    reason = str(d["kill_reason"])
    kind = d.get("kill_kind")
    if kind is None:  # a snapshot from before kill kinds: the drawdown reason says which
        kind = ("drawdown" if reason.startswith("drawdown") else "accuracy") if d["killed"] else ""
    return RiskState(
        peak_equity=-math.inf if peak is None else float(peak),
        killed=bool(d["killed"]),
        kill_reason=reason,
        kill_kind=str(kind),
        blocked_direction={k: int(v) for k, v in d["blocked_direction"].items()},
        order_seq=int(d["order_seq"]),
    )


def broker_to_dict(b: PaperBroker) -> dict[str, Any]:
    """The PaperBroker's book (its internals: pending orders, brackets, statuses)."""
    return {
        "pending": [asdict(o) for o in b._pending],
        "status": dict(b._status),
        "net_units": dict(b._net_units),
        "brackets": {s: asdict(x) for s, x in b._brackets.items()},
        "fill_seq": b._fill_seq,
    }


def broker_restore(b: PaperBroker, d: dict[str, Any]) -> None:
    b._pending = [Order(**o) for o in d["pending"]]
    b._status = dict(d["status"])
    b._net_units = {k: float(v) for k, v in d["net_units"].items()}
    b._brackets = {s: _Bracket(**x) for s, x in d["brackets"].items()}
    b._fill_seq = int(d["fill_seq"])


def load_snapshot(con: duckdb.DuckDBPyConnection, account: str) -> dict[str, Any] | None:
    row = con.execute("SELECT state_json FROM loop_state WHERE account = ?", [account]).fetchone()
    if row is None:
        return None
    try:
        data: dict[str, Any] = json.loads(row[0])
    except ValueError as exc:
        raise StateError(f"loop_state for account {account!r}: unreadable JSON ({exc})") from exc
    return data


def fills_net_units(
    con: duckdb.DuckDBPyConnection, account: str, up_to_ts_ms: int
) -> dict[str, float]:
    """Net units per symbol from the stored fills of candles up to ``up_to_ts_ms`` (fills of
    later candles may exist when a crash came between a batch's rows and its snapshot)."""
    rows = con.execute(
        "SELECT symbol, sum(CASE WHEN side = 'buy' THEN amount ELSE -amount END) "
        "FROM fills WHERE account = ? AND epoch_ms(ts) <= ? GROUP BY symbol",
        [account, up_to_ts_ms],
    ).fetchall()
    return {s: float(u) for s, u in rows}


def check_positions(portfolio: Portfolio, fills_units: dict[str, float], account: str) -> None:
    """Raise StateError when the snapshot's positions differ from the stored fills."""
    symbols = set(fills_units) | set(portfolio.positions)
    for s in sorted(symbols):
        want = portfolio.units(s)
        got = fills_units.get(s, 0.0)
        if abs(want - got) > 1e-9 * max(1.0, abs(want)):
            raise StateError(
                f"account {account!r} {s}: snapshot position {want!r} but the fills table nets "
                f"{got!r}; the warehouse and the loop state disagree"
            )


class SeriesMismatch(StateError):
    """The account's snapshot is of another series than the one this run serves."""


def describe_series(series: dict[str, Any]) -> str:
    symbols = ", ".join(series.get("symbols") or []) or "?"
    return (
        f"{series.get('source', '?')} ({symbols} {series.get('timeframe', '?')} on "
        f"{series.get('exchange', '?')})"
    )


def check_series(
    stored: dict[str, Any] | None, serving: dict[str, Any] | None, account: str
) -> None:
    """Refuse to resume ``account`` from a snapshot of another series: its portfolio, last
    candle time and decision state belong to that series (resuming served 0 candles of a
    series whose candles all lie before the stored last candle, and said nothing). A snapshot
    written before series were recorded (``stored`` None) resumes as before."""
    if stored is None or serving is None or stored == serving:
        return
    raise SeriesMismatch(
        f"account {account!r} holds the state of {describe_series(stored)}, not "
        f"{describe_series(serving)}; serve it under another --account"
    )
