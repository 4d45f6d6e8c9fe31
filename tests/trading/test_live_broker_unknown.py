"""CcxtBroker: an error that does not prove a refusal leaves the order ``unknown``, and the
order is reconciled by client order id. The real ccxt.binance client against the loopback
exchange, whose faults answer Binance's "execution status unknown" errors (-1000/-1001/-1006,
which ccxt maps to OperationFailed, not to a NetworkError)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import ccxt
import pytest

from pipelines.loopback.server import Fault, FaultPlan, LoopbackExchange, LoopbackServer
from pipelines.simulated_exchange import SimulatedExchange
from trading.domain import Bar, Order
from trading.live_broker import CcxtBroker, LiveBrokerError, require_client_id_lookup

KEY = "loopback-key-7f3a9c"
SECRET = "loopback-secret-51d0e2b8"


@pytest.fixture(scope="module")
def simulated() -> SimulatedExchange:
    return SimulatedExchange()


@pytest.fixture
def exchange(simulated: SimulatedExchange) -> LoopbackExchange:
    ex = LoopbackExchange(symbols=["BTC/USDT"], simulated=simulated, api_key=KEY)
    ex.last_price("BTC/USDT")  # builds the simulated prices (seconds) before any timed request
    return ex


@pytest.fixture
def server(exchange: LoopbackExchange) -> Iterator[LoopbackServer]:
    with LoopbackServer(exchange) as srv:
        yield srv


def _broker(server: LoopbackServer, **kw: object) -> CcxtBroker:
    args: dict[str, object] = {
        "api_key": KEY,
        "api_secret": SECRET,
        "api_base": server.url,
        "timeout_ms": 2_000,
        "reconcile_wait_s": 0.05,
        "recv_window_ms": 5_000,
        "resend_grace_s": 0.1,
    }
    args.update(kw)
    return CcxtBroker("binance", **args)  # type: ignore[arg-type]


def _order(cid: str, side: str = "buy", amount: float = 0.01) -> Order:
    return Order(cid, "BTC/USDT", side, amount, created_ts_ms=1)  # type: ignore[arg-type]


def _bar(exchange: LoopbackExchange) -> Bar:
    p = exchange.last_price("BTC/USDT")
    return Bar("BTC/USDT", 0, p, p, p, p, 1.0)


@pytest.mark.parametrize("code", [-1000, -1001, -1006])
def test_fault_really_raises_operation_failed(
    server: LoopbackServer, exchange: LoopbackExchange, code: int
) -> None:
    # the premise: ccxt's answer to these codes is not a NetworkError
    exchange.faults = FaultPlan((Fault.APPLIED_ERROR,), ("order",), repeat=False, error_code=code)
    b = _broker(server)
    b.exchange.load_markets()
    with pytest.raises(ccxt.OperationFailed) as err:
        b.exchange.create_order("BTC/USDT", "market", "buy", 0.01)
    assert not isinstance(err.value, ccxt.NetworkError)
    assert [o["status"] for o in exchange.orders()] == ["FILLED"]  # yet the order filled


@pytest.mark.parametrize("code", [-1000, -1001, -1006])
def test_filled_order_answered_with_an_error_is_reconciled_to_filled(
    server: LoopbackServer, exchange: LoopbackExchange, code: int
) -> None:
    exchange.faults = FaultPlan((Fault.APPLIED_ERROR,), ("order",), repeat=False, error_code=code)
    b = _broker(server)
    b.submit(_order("live-BTCUSDT-1-1"))  # no exception
    assert b.order_status("live-BTCUSDT-1-1") == "filled"
    assert b.open_orders() == []
    assert b.resends == 0 and len(exchange.orders()) == 1
    lookups = [p for ep, p in exchange.log if ep == "order" and "origClientOrderId" in p]
    assert lookups and lookups[0]["origClientOrderId"] == "live-BTCUSDT-1-1"
    fills = b.process_bar(_bar(exchange), 0.0)
    assert [f.amount for f in fills] == [pytest.approx(0.01)]
    assert b.net_units("BTC/USDT") == pytest.approx(0.01)
    assert b.process_bar(_bar(exchange), 0.0) == [] and len(exchange.orders()) == 1


def test_error_without_effect_stays_unknown_then_is_resent_once(
    server: LoopbackServer, exchange: LoopbackExchange
) -> None:
    # -1001 and nothing placed: "not found" inside the recvWindow means "not yet"; after it
    # the exchange's "does not exist" is final and the order goes again, same client id
    exchange.faults = FaultPlan((Fault.UNAPPLIED_ERROR,), ("order",), repeat=False)
    now = [time.time()]
    b = _broker(server, clock=lambda: now[0])
    b.submit(_order("live-BTCUSDT-2-1"))
    assert b.order_status("live-BTCUSDT-2-1") == "unknown"
    assert [o.client_order_id for o in b.open_orders()] == ["live-BTCUSDT-2-1"]
    assert b.process_bar(_bar(exchange), 0.0) == [] and exchange.orders() == []
    now[0] += 5.0 + 0.1 + 0.01
    fills = b.process_bar(_bar(exchange), 0.0)
    assert b.resends == 1 and len(fills) == 1
    assert [o["clientOrderId"] for o in exchange.orders()] == ["live-BTCUSDT-2-1"]
    assert b.order_status("live-BTCUSDT-2-1") == "filled" and b.open_orders() == []


def test_a_refusal_is_rejected_and_never_looked_up(
    server: LoopbackServer, exchange: LoopbackExchange
) -> None:
    # selling BTC the account does not hold: -2010, ccxt InsufficientFunds: the exchange said no
    b = _broker(server)
    b.submit(_order("live-BTCUSDT-3-1", side="sell", amount=5.0))
    assert b.order_status("live-BTCUSDT-3-1") == "rejected"
    assert b.open_orders() == [] and exchange.orders() == []
    assert b.reconciliations == 0


def test_lookup_failing_with_operation_failed_keeps_the_order_unknown(
    server: LoopbackServer, exchange: LoopbackExchange
) -> None:
    # the order fills but is answered -1001, and so are the lookups: still unknown, no raise,
    # no re-send; the next candle's lookup finds the fill
    exchange.faults = FaultPlan(
        (Fault.APPLIED_ERROR, Fault.UNAPPLIED_ERROR, Fault.UNAPPLIED_ERROR),
        ("order",),
        repeat=False,
    )
    b = _broker(server, reconcile_attempts=2)
    b.submit(_order("live-BTCUSDT-4-1"))
    assert b.order_status("live-BTCUSDT-4-1") == "unknown" and b.resends == 0
    fills = b.process_bar(_bar(exchange), 0.0)
    assert len(fills) == 1 and b.order_status("live-BTCUSDT-4-1") == "filled"
    assert len(exchange.orders()) == 1


def test_only_binance_is_allowed() -> None:
    require_client_id_lookup("binance")
    for other in ("kraken", "binanceus", "coinbase"):
        with pytest.raises(LiveBrokerError, match="tested only for binance"):
            require_client_id_lookup(other)
    with pytest.raises(LiveBrokerError, match="refused on 'kraken'"):
        CcxtBroker("kraken", api_key=KEY, api_secret=SECRET, sandbox=False)
