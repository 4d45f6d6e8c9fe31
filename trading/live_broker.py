"""``CcxtBroker``: the Broker protocol on a real exchange through the ccxt client (live, opt-in).

Same protocol as ``trading.broker.PaperBroker``, so the serving loop and ``trading.step`` run
unchanged. Differences from paper trading:

* ``submit`` sends the order to the exchange at once (a market order submitted after bar t's
  close executes at the exchange's price now, i.e. about bar t+1's open). Fills are taken from
  the exchange's response (price, amount, fee) and handed to the portfolio by the next
  ``process_bar`` of that symbol, which also polls resting orders for new fills.
* Every order carries a deterministic client order id (``newClientOrderId`` on binance; ids
  longer than the exchange's 36 characters are hashed deterministically).
* **Never a blind re-send.** When an order request fails without a definite answer (timeout,
  connection error, 5xx, Binance's -1000/-1001/-1006 "execution status unknown", which ccxt
  maps to ``OperationFailed``: any error that does not prove the exchange refused the order),
  the order is ``unknown`` and the broker first reconciles by client order id
  (``fetch_order`` with ``origClientOrderId``). Only when the exchange CONFIRMS the order
  does not exist (``ccxt.OrderNotFound``) AND the first request can no longer take
  effect — its ``recvWindow`` (after which the exchange rejects a signed request) plus a grace
  period has passed since it was sent — is it sent again, with the same client order id. A
  "not found" inside that window only means "not yet" (the request may still be in flight).
  While the outcome stays unknown the order is kept as ``unknown`` and reconciled again at the
  next ``process_bar``; it is never sent twice on a guess.
  Only a refusal (``InvalidOrder``, ``InsufficientFunds``, ``BadRequest``, ``OperationRejected``)
  makes an order ``rejected``; an authentication error raises.
* Stop-loss / take-profit brackets are watched on each closed bar (same trigger rule as the
  paper broker) and exit with a market order (client id ``<entry id>-sl`` / ``-tp``).
* **Restarts.** Every order is appended to a journal file (fsynced) BEFORE it is sent, and the
  broker's book (orders not final, fills not yet handed to the portfolio, brackets, net units)
  goes into the loop's snapshot (``to_dict`` / ``restore``). On start, ``reconcile_on_start``
  looks up by client order id every order the snapshot does not account for (sent just before
  a crash) and every order still open or unknown, books what filled (and its bracket), lists
  the exchange's open orders and checks the balances against the loop's positions. An order
  from before the restart is never re-sent. ``journal_entries`` (orders ever sent) floors the
  loop's order sequence, so client order ids stay unique across restarts.
* Live trading is allowed only on exchanges whose lookup by client order id is implemented
  and tested (``LIVE_EXCHANGES``: Binance); others are refused before anything starts.
* ``available_cash`` is not used: the exchange enforces the balance and rejects what it can't
  fill (a rejected order is logged and recorded as ``rejected``).
* Keys come from the caller (``Settings.exchange_api_key`` / ``_secret`` SecretStr, or a
  Prefect Secret block resolved in ``flows/``); they are never logged, never put into error
  messages (``LiveBrokerError`` scrubs them) and never written to the warehouse.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ccxt

from pipelines.redaction import register_secrets
from pipelines.sources.ccxt_source import BINANCE_SPOT_OPTIONS, rewrite_api_urls
from trading.broker import bracket_prices, stop_trigger
from trading.domain import Bar, Fill, Order, OrderReason

log = logging.getLogger("tradeloop.live")

MAX_CLIENT_ID_CHARS = 36  # binance: ^[.A-Z:/a-z0-9_-]{1,36}$
_CLIENT_ID_OK = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")


class LiveBrokerError(RuntimeError):
    """An exchange call failed for good (authentication, rejected order, ...)."""


# Exchanges whose order lookup by client order id (``origClientOrderId``) and re-send rule
# (``recvWindow``) are implemented here AND tested against the real ccxt client. Elsewhere a
# lookup may answer "not found" for an order that exists, and the order would be sent twice.
LIVE_EXCHANGES = ("binance",)

# Errors that prove the exchange refused the order (it will not execute). Any other error
# leaves the order's outcome unknown: it is reconciled by client order id, never "rejected".
_REFUSALS: tuple[type[Exception], ...] = (
    ccxt.InvalidOrder,  # the order's own fields; DuplicateOrderId is handled before this
    ccxt.InsufficientFunds,
    ccxt.BadRequest,
    ccxt.OperationRejected,
    ccxt.ArgumentsRequired,
    ccxt.NotSupported,
)


def require_client_id_lookup(exchange_id: str) -> None:
    """Refuse live trading on an exchange without a tested lookup by client order id."""
    if exchange_id not in LIVE_EXCHANGES:
        raise LiveBrokerError(
            f"live trading refused on {exchange_id!r}: reconciliation by client order id is "
            f"implemented and tested only for {', '.join(LIVE_EXCHANGES)}"
        )


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The journal's orders, in the order they were sent. A torn last line (the process was
    killed while writing it) is skipped: the journal is fsynced before the send, so that order
    was never sent."""
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("order journal %s: unreadable line skipped (a write cut short)", path)
    return out


def exchange_client_order_id(client_order_id: str) -> str:
    """The id sent to the exchange: the loop's id when the exchange accepts it, else a
    deterministic hash of it (same input -> same id, so reconciliation still works)."""
    if _CLIENT_ID_OK.match(client_order_id):
        return client_order_id
    digest = hashlib.sha256(client_order_id.encode()).hexdigest()
    return "tl-" + digest[: MAX_CLIENT_ID_CHARS - 3]


@dataclass
class _Tracked:
    order: Order
    exchange_client_id: str
    status: str  # open | filled | cancelled | rejected | unknown
    reported_amount: float = 0.0
    exchange_order_id: str | None = None
    sends: int = 0
    last_send_s: float = 0.0  # wall time of the last send (the request's signed timestamp)
    resend_ok: bool = True  # False for an order from before a restart: never sent again


@dataclass
class _LiveBracket:
    units: float
    stop_loss_price: float | None
    take_profit_price: float | None
    client_order_id: str


_STATUS = {"open": "open", "closed": "filled", "canceled": "cancelled", "expired": "cancelled"}


class CcxtBroker:
    """Orders on a ccxt exchange (see the module docstring)."""

    def __init__(
        self,
        exchange_id: str,
        *,
        api_key: str | None,
        api_secret: str | None,
        sandbox: bool = True,
        api_base: str | None = None,
        timeout_ms: int = 10_000,
        reconcile_attempts: int = 3,
        reconcile_wait_s: float = 0.5,
        max_sends: int = 3,
        recv_window_ms: int = 5_000,
        resend_grace_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        config: dict[str, Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        journal: Path | None = None,
    ) -> None:
        """``journal``: the file every order is appended to before it is sent (see the module
        docstring); None keeps no journal (a restart then cannot find orders sent after the
        last snapshot)."""
        if not hasattr(ccxt, exchange_id) or not isinstance(getattr(ccxt, exchange_id), type):
            raise LiveBrokerError(f"unknown ccxt exchange {exchange_id!r}")
        if not api_key or not api_secret:
            raise LiveBrokerError(
                f"live trading on {exchange_id} needs an API key and secret: set "
                "TRADELOOP_EXCHANGE_API_KEY and TRADELOOP_EXCHANGE_API_SECRET (or a Prefect "
                "Secret block)"
            )
        require_client_id_lookup(exchange_id)
        user = dict(config or {})
        options = dict(BINANCE_SPOT_OPTIONS) if exchange_id in ("binance", "binanceus") else {}
        options.update(user.pop("options", {}) or {})
        options["recvWindow"] = recv_window_ms  # binance: a signed request older is rejected
        self.exchange: ccxt.Exchange = getattr(ccxt, exchange_id)(
            {
                "enableRateLimit": True,
                "timeout": timeout_ms,
                **user,
                "options": options,
                "apiKey": api_key,
                "secret": api_secret,
            }
        )
        self._secrets = tuple(s for s in (api_key, api_secret) if s)
        register_secrets(*self._secrets)  # ccxt logs request headers at DEBUG
        if sandbox:
            try:
                self.exchange.set_sandbox_mode(True)
            except ccxt.NotSupported as exc:
                raise LiveBrokerError(
                    f"{exchange_id} has no sandbox/testnet in ccxt; set "
                    "TRADELOOP_EXCHANGE_SANDBOX=false to trade on the real exchange"
                ) from exc
        if api_base:
            self.exchange.urls["api"] = rewrite_api_urls(self.exchange.urls["api"], api_base)
        self.exchange_id = exchange_id
        self.sandbox = sandbox
        self.reconcile_attempts = reconcile_attempts
        self.reconcile_wait_s = reconcile_wait_s
        self.max_sends = max_sends
        self.recv_window_ms = recv_window_ms
        self.resend_grace_s = resend_grace_s
        self.clock = clock
        self.sleep = sleep
        self._orders: dict[str, _Tracked] = {}
        self._ready: dict[str, list[Fill]] = {}  # symbol -> fills not yet handed out
        self._brackets: dict[str, _LiveBracket] = {}
        self._net_units: dict[str, float] = {}
        self._markets_loaded = False
        self.resends = 0
        self.reconciliations = 0
        self.journal = journal
        self._journal_cids = {str(e["cid"]) for e in read_journal(journal)} if journal else set()
        self.journal_entries = len(self._journal_cids)  # orders ever sent (all processes)
        self._snapshot_entries = 0  # journal entries the restored snapshot accounts for
        self.recovered: list[Order] = []  # orders found in the journal only (reconcile_on_start)
        # called once per order left ``unknown`` after its first reconciliation (an alert)
        self.on_unknown: Callable[[Order, str], object] | None = None
        self._unknown_told: set[str] = set()

    # ------------------------------------------------------------------ safety
    def _scrub(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text

    def _fail(self, what: str, exc: Exception) -> LiveBrokerError:
        if isinstance(exc, ccxt.AuthenticationError | ccxt.PermissionDenied):
            return LiveBrokerError(
                f"{self.exchange_id} {what}: authentication failed ({type(exc).__name__}); "
                "check TRADELOOP_EXCHANGE_API_KEY / TRADELOOP_EXCHANGE_API_SECRET and the key's "
                "permissions"
            )
        return LiveBrokerError(
            self._scrub(f"{self.exchange_id} {what}: {type(exc).__name__}: {exc}")
        )

    def _load_markets(self) -> None:
        if not self._markets_loaded:
            try:
                self.exchange.load_markets()
            except ccxt.BaseError as exc:
                raise self._fail("load_markets", exc) from exc
            self._markets_loaded = True

    # ------------------------------------------------------------------ protocol
    def submit(self, order: Order) -> None:
        if order.client_order_id in self._journal_cids:
            # sent before (maybe by an earlier process): a lookup by this id would find THAT one
            raise LiveBrokerError(
                f"client order id {order.client_order_id!r} was already sent (order journal "
                f"{self.journal}); refusing to reuse it"
            )
        if order.client_order_id in self._orders:
            raise ValueError(f"duplicate client_order_id {order.client_order_id!r}")
        self._load_markets()
        tracked = _Tracked(order, exchange_client_order_id(order.client_order_id), "unknown")
        self._orders[order.client_order_id] = tracked
        self._write_journal(tracked)
        self._send(tracked)

    def _write_journal(self, t: _Tracked) -> None:
        """Append the order to the journal and fsync it, before it is sent."""
        self._journal_cids.add(t.order.client_order_id)
        self.journal_entries += 1
        if self.journal is None:
            return
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(
            {"cid": t.order.client_order_id, "xcid": t.exchange_client_id, "sent_at": self.clock()}
            | {"order": asdict(t.order)}
        )
        with self.journal.open("a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def cancel(self, client_order_id: str) -> bool:
        t = self._orders.get(client_order_id)
        if t is None or t.status not in ("open", "unknown"):
            return False
        try:
            self.exchange.cancel_order(
                t.exchange_order_id or "",
                t.order.symbol,
                {"origClientOrderId": t.exchange_client_id},
            )
        except ccxt.OrderNotFound:
            return False
        except (ccxt.AuthenticationError, ccxt.PermissionDenied) as exc:
            raise self._fail(f"cancel {client_order_id}", exc) from exc
        except Exception as exc:  # outcome unknown: the next poll reads the order's status
            log.warning(
                "%s", self._fail(f"cancel {client_order_id} (outcome unknown, polled again)", exc)
            )
            return False
        t.status = "cancelled"
        return True

    def open_orders(self) -> list[Order]:
        return [t.order for t in self._orders.values() if t.status in ("open", "unknown")]

    def order_status(self, client_order_id: str) -> str:
        t = self._orders.get(client_order_id)
        return "unknown" if t is None else t.status

    def net_units(self, symbol: str) -> float:
        return self._net_units.get(symbol, 0.0)

    def exchange_order_id(self, client_order_id: str) -> str | None:
        t = self._orders.get(client_order_id)
        return None if t is None else t.exchange_order_id

    def process_bar(self, bar: Bar, available_cash: float) -> list[Fill]:
        waiting = {f.client_order_id for f in self._ready.get(bar.symbol, [])}
        for cid, t in list(self._orders.items()):
            if t.order.symbol != bar.symbol:
                continue
            if t.status in ("filled", "cancelled", "rejected") and cid not in waiting:
                # final and its fills handed out (rows written) at an earlier bar: forget it, so
                # a long-running loop's book stays small (the journal still refuses its id)
                del self._orders[cid]
            elif t.status == "unknown":
                self._reconcile_or_resend(t)
            elif t.status == "open":
                self._poll(t)
        fills = self._ready.pop(bar.symbol, [])
        exit_fill = self._check_bracket(bar)
        if exit_fill:
            fills.extend(exit_fill)
        return fills

    # ------------------------------------------------------------------ sending
    def _params(self, t: _Tracked) -> dict[str, Any]:
        key = "newClientOrderId" if self.exchange_id.startswith("binance") else "clientOrderId"
        return {key: t.exchange_client_id}

    def _send(self, t: _Tracked) -> None:
        o = t.order
        order_type = "market" if o.order_type == "stop" else o.order_type
        price = o.price if order_type == "limit" else None
        t.sends += 1
        t.last_send_s = self.clock()
        try:
            resp = self.exchange.create_order(
                o.symbol, order_type, o.side, o.amount, price, self._params(t)
            )
        except (ccxt.AuthenticationError, ccxt.PermissionDenied) as exc:
            t.status = "rejected"  # the exchange refused the request itself
            raise self._fail(f"create_order {o.client_order_id}", exc) from exc
        except ccxt.DuplicateOrderId:  # this client id is on the exchange already: look it up
            self._unknown(t, "the exchange already has this client order id")
            return
        except _REFUSALS as exc:  # the exchange said no: the order will not execute
            t.status = "rejected"
            log.error("%s", self._fail(f"order {o.client_order_id} rejected", exc))
            return
        except Exception as exc:  # noqa: BLE001 - anything else proves nothing: outcome unknown
            # timeout, connection, 5xx, 429, Binance -1000/-1001/-1006 (ccxt OperationFailed),
            # an unmapped exchange error, an unreadable answer
            self._unknown(t, self._scrub(f"{type(exc).__name__}: {exc}"))
            return
        self._apply(t, resp)

    def _unknown(self, t: _Tracked, why: str) -> None:
        t.status = "unknown"
        log.warning(
            "%s order %s: outcome unknown (%s); reconciling by client order id before any re-send",
            self.exchange_id,
            t.order.client_order_id,
            why,
        )
        self._reconcile_or_resend(t)
        cid = t.order.client_order_id
        if t.status == "unknown" and self.on_unknown is not None and cid not in self._unknown_told:
            self._unknown_told.add(cid)
            try:
                self.on_unknown(t.order, why)
            except Exception:  # noqa: BLE001 - telling someone never stops the broker
                log.exception("order %s: the unknown-state callback failed", cid)

    def _reconcile_or_resend(self, t: _Tracked) -> None:
        """Look the order up by client id; re-send only when the exchange says it never got it."""
        for attempt in range(1, self.reconcile_attempts + 1):
            self.reconciliations += 1
            try:
                found = self.exchange.fetch_order(
                    "", t.order.symbol, {"origClientOrderId": t.exchange_client_id}
                )
            except ccxt.OrderNotFound:
                safe_at = t.last_send_s + self.recv_window_ms / 1000.0 + self.resend_grace_s
                if self.clock() < safe_at:
                    t.status = "unknown"
                    log.warning(
                        "%s order %s: not on the exchange yet, but the request may still arrive "
                        "(recvWindow); checking again at the next candle, not re-sending",
                        self.exchange_id,
                        t.order.client_order_id,
                    )
                    return
                if not t.resend_ok:
                    t.status = "rejected"
                    log.warning(
                        "%s order %s (sent before the restart): not on the exchange; it never "
                        "took effect and is not sent again (the loop decides afresh)",
                        self.exchange_id,
                        t.order.client_order_id,
                    )
                    return
                if t.sends >= self.max_sends:
                    t.status = "rejected"
                    log.error(
                        "%s order %s: not on the exchange after %d sends; given up",
                        self.exchange_id,
                        t.order.client_order_id,
                        t.sends,
                    )
                    return
                self.resends += 1
                log.warning(
                    "%s order %s: the exchange confirms it does not exist; sending it again "
                    "with the same client order id",
                    self.exchange_id,
                    t.order.client_order_id,
                )
                self._send(t)
                return
            except (ccxt.AuthenticationError, ccxt.PermissionDenied) as exc:
                raise self._fail(f"reconcile {t.order.client_order_id}", exc) from exc
            except Exception as exc:  # noqa: BLE001 - the lookup failed: still unknown
                log.warning(
                    "%s order %s: reconciliation attempt %d failed (%s)",
                    self.exchange_id,
                    t.order.client_order_id,
                    attempt,
                    type(exc).__name__,
                )
                if attempt < self.reconcile_attempts:
                    self.sleep(self.reconcile_wait_s * attempt)
                continue
            log.warning(
                "%s order %s: found on the exchange by client order id (status %s); not re-sent",
                self.exchange_id,
                t.order.client_order_id,
                found.get("status"),
            )
            self._apply(t, found)
            return
        t.status = "unknown"  # still unknown: try again at the next bar, never re-send blindly

    def _poll(self, t: _Tracked) -> None:
        try:
            found = self.exchange.fetch_order(
                t.exchange_order_id or "",
                t.order.symbol,
                {"origClientOrderId": t.exchange_client_id},
            )
        except (ccxt.AuthenticationError, ccxt.PermissionDenied) as exc:
            raise self._fail(f"fetch_order {t.order.client_order_id}", exc) from exc
        except Exception as exc:  # noqa: BLE001 - polled again at the next bar
            log.warning(
                "%s poll %s failed: %s",
                self.exchange_id,
                t.order.client_order_id,
                self._scrub(f"{type(exc).__name__}: {exc}"),
            )
            return
        self._apply(t, found)

    # ------------------------------------------------------------------ fills
    def _apply(self, t: _Tracked, resp: dict[str, Any]) -> None:
        o = t.order
        t.exchange_order_id = str(resp.get("id") or t.exchange_order_id or "") or None
        filled = float(resp.get("filled") or 0.0)
        t.status = _STATUS.get(str(resp.get("status")), "open")
        if t.status == "open" and filled >= o.amount * (1 - 1e-12):
            t.status = "filled"
        new = filled - t.reported_amount
        if new <= 1e-15:
            return
        cost = float(resp.get("cost") or 0.0)
        average = (
            resp.get("average") or (cost / filled if filled > 0 else None) or resp.get("price")
        )
        if average is None:
            raise LiveBrokerError(
                f"{self.exchange_id} order {o.client_order_id}: filled {filled} but no price "
                "in the exchange's response"
            )
        price = float(average)
        fee = self._fee_quote(resp, price) * (new / filled)
        t.reported_amount = filled
        ts_ms = int(resp.get("lastTradeTimestamp") or resp.get("timestamp") or o.created_ts_ms)
        fill = Fill(
            fill_id=f"{o.client_order_id}-f{round(filled / o.amount * 1e6)}",
            client_order_id=o.client_order_id,
            symbol=o.symbol,
            ts_ms=ts_ms,
            side=o.side,
            price=price,
            amount=new,
            fee=fee,
            reason=o.reason,
            reference_price=price,
        )
        self._ready.setdefault(o.symbol, []).append(fill)
        before = self._net_units.get(o.symbol, 0.0)
        after = before + new if o.side == "buy" else before - new
        self._net_units[o.symbol] = after
        self._update_bracket(o, price, before, after)

    def _fee_quote(self, resp: dict[str, Any], price: float) -> float:
        """The order's fees in quote currency (a fee in base units is valued at the fill
        price; fees in a third currency are not convertible here and are logged)."""
        market = self.exchange.market(resp.get("symbol") or "") if resp.get("symbol") else None
        quote = market["quote"] if market else None
        base = market["base"] if market else None
        fees = resp.get("fees") or ([resp["fee"]] if resp.get("fee") else [])
        total = 0.0
        for f in fees:
            if not f or f.get("cost") is None:
                continue
            cost, cur = float(f["cost"]), f.get("currency")
            if cur is None or cur == quote:
                total += cost
            elif cur == base:
                total += cost * price
            elif cost:
                log.warning("fee of %s %s not in the quote currency: not booked", cost, cur)
        return total

    # ------------------------------------------------------------------ brackets
    def _update_bracket(self, order: Order, price: float, before: float, after: float) -> None:
        symbol = order.symbol
        if abs(after) < 1e-15:
            self._brackets.pop(symbol, None)
            return
        if abs(before) < 1e-15 or (before > 0) != (after > 0):
            self._brackets.pop(symbol, None)
            direction = 1 if after > 0 else -1
            sl, tp = bracket_prices(
                price, direction, order.stop_loss_fraction, order.take_profit_fraction
            )
            if sl is not None or tp is not None:
                self._brackets[symbol] = _LiveBracket(after, sl, tp, order.client_order_id)
        elif symbol in self._brackets:
            self._brackets[symbol].units = after

    def _check_bracket(self, bar: Bar) -> list[Fill]:
        b = self._brackets.get(bar.symbol)
        if b is None:
            return []
        direction = 1 if b.units > 0 else -1
        hit = stop_trigger(
            direction, bar.open, bar.high, bar.low, b.stop_loss_price, b.take_profit_price
        )
        if hit is None:
            return []
        reason: OrderReason = hit[0]
        cid = f"{b.client_order_id}-{'sl' if reason == 'stop_loss' else 'tp'}"
        if cid in self._orders:
            return []
        self._brackets.pop(bar.symbol, None)
        self.submit(
            Order(
                client_order_id=cid,
                symbol=bar.symbol,
                side="sell" if direction > 0 else "buy",
                amount=abs(b.units),
                order_type="market",
                created_ts_ms=bar.ts_ms,
                reason=reason,
            )
        )
        return self._ready.pop(bar.symbol, [])

    # ------------------------------------------------------------------ restarts
    def to_dict(self) -> dict[str, Any]:
        """The broker's book for the loop's snapshot: orders not final (or whose fills are not
        handed out yet), those fills, brackets, net units, and how many journal entries this
        book accounts for (the orders sent after it are looked up on the next start)."""
        waiting = {f.client_order_id for fills in self._ready.values() for f in fills}
        orders = [
            {
                "order": asdict(t.order),
                "xcid": t.exchange_client_id,
                "status": t.status,
                "reported_amount": t.reported_amount,
                "exchange_order_id": t.exchange_order_id,
                "sends": t.sends,
                "last_send_s": t.last_send_s,
            }
            for cid, t in self._orders.items()
            if t.status in ("open", "unknown") or cid in waiting
        ]
        return {
            "kind": "ccxt",
            "journal_entries": self.journal_entries,
            "orders": orders,
            "ready": {s: [asdict(f) for f in fs] for s, fs in self._ready.items() if fs},
            "brackets": {s: asdict(b) for s, b in self._brackets.items()},
            "net_units": dict(self._net_units),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Put back a snapshot's book (``to_dict``); orders in it are never re-sent."""
        if data.get("kind") != "ccxt":
            return
        self._snapshot_entries = int(data["journal_entries"])
        for d in data["orders"]:
            order = Order(**d["order"])
            self._orders[order.client_order_id] = _Tracked(
                order,
                str(d["xcid"]),
                str(d["status"]),
                float(d["reported_amount"]),
                d["exchange_order_id"],
                int(d["sends"]),
                float(d["last_send_s"]),
                resend_ok=False,
            )
        self._ready = {s: [Fill(**f) for f in fs] for s, fs in data["ready"].items()}
        self._brackets = {s: _LiveBracket(**b) for s, b in data["brackets"].items()}
        self._net_units = {s: float(u) for s, u in data["net_units"].items()}

    def reconcile_on_start(self, symbols: Iterable[str]) -> list[str]:
        """Bring the book in line with the exchange before the first candle; returns what was
        found, one message per finding (the loop records them as events).

        1. orders in the journal that the restored snapshot does not account for (sent after
           its flush, e.g. just before a SIGKILL) are looked up by client order id, as are the
           snapshot's open and unknown orders: fills are booked (handed to the portfolio at the
           symbol's next candle) with their bracket; one not on the exchange is not re-sent;
        2. the exchange's open orders: ours are tracked, others are reported and left alone;
        3. balances: a base-currency balance below the loop's position is reported (the
           position is cut to what the exchange holds, so an exit never sells more)."""
        self._load_markets()
        notes: list[str] = []
        entries = read_journal(self.journal) if self.journal else []
        for e in entries[self._snapshot_entries :]:
            cid = str(e["cid"])
            if cid in self._orders:
                continue
            order = Order(**e["order"])
            self._orders[cid] = _Tracked(
                order,
                str(e["xcid"]),
                "unknown",
                last_send_s=float(e["sent_at"]),
                sends=1,
                resend_ok=False,
            )
            self.recovered.append(order)
            notes.append(f"order {cid} was sent after the last snapshot: looked up on the exchange")
        for cid, t in list(self._orders.items()):
            if t.status == "unknown":
                t.resend_ok = False
                self._reconcile_or_resend(t)
            elif t.status == "open":
                self._poll(t)
            if t.status in ("filled", "open", "cancelled") and t.reported_amount > 0:
                notes.append(
                    f"order {cid}: {t.status} on the exchange, {t.reported_amount:g} "
                    f"{t.order.symbol} filled"
                )
        symbols = list(symbols)
        ours = {t.exchange_client_id: cid for cid, t in self._orders.items()}
        for symbol in symbols:
            try:
                open_orders = self.exchange.fetch_open_orders(symbol)
            except (ccxt.AuthenticationError, ccxt.PermissionDenied) as exc:
                raise self._fail("fetch_open_orders", exc) from exc
            except Exception as exc:  # noqa: BLE001 - reported; the orders are polled later
                notes.append(f"{symbol}: open orders not read ({type(exc).__name__})")
                continue
            for o in open_orders:
                mine = ours.get(str(o.get("clientOrderId")))
                if mine is None:
                    notes.append(
                        f"{symbol}: open order {o.get('id')} ({o.get('clientOrderId')}) was not "
                        "placed by this loop; left alone"
                    )
                elif self._orders[mine].status != "open":
                    self._apply(self._orders[mine], o)
        try:
            balance = self.exchange.fetch_balance()
        except (ccxt.AuthenticationError, ccxt.PermissionDenied) as exc:
            raise self._fail("fetch_balance", exc) from exc
        except Exception as exc:  # noqa: BLE001 - reported, trading goes on
            notes.append(f"balances not read ({type(exc).__name__})")
            return notes
        totals: dict[str, Any] = balance.get("total") or {}
        for symbol in symbols:
            base = self.exchange.market(symbol)["base"]
            held = float(totals.get(base) or 0.0)
            units = self._net_units.get(symbol, 0.0)
            if units > held * (1 + 1e-9) + 1e-12:
                notes.append(
                    f"{symbol}: the loop holds {units:g} {base} but the exchange only {held:g}; "
                    f"position cut to {held:g}"
                )
                self._net_units[symbol] = held
                if symbol in self._brackets:
                    self._brackets[symbol].units = held
        return notes

    def bracket(self, symbol: str) -> tuple[float | None, float | None] | None:
        """(stop-loss, take-profit) prices watched for ``symbol``'s position (None: none)."""
        b = self._brackets.get(symbol)
        return None if b is None else (b.stop_loss_price, b.take_profit_price)
