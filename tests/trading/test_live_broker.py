"""CcxtBroker: the real ccxt.binance client (sandbox mode) against the loopback exchange."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import ccxt
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from pipelines.loopback.server import Fault, FaultPlan, LoopbackExchange, LoopbackServer
from trading.domain import Bar, Order
from trading.live_broker import CcxtBroker, LiveBrokerError, exchange_client_order_id
from trading.service import LiveTradingRefused, require_live_opt_in
from warehouse import Settings

KEY = "loopback-key-7f3a9c"
SECRET = "loopback-secret-51d0e2b8"


@pytest.fixture
def exchange() -> LoopbackExchange:
    ex = LoopbackExchange(symbols=["BTC/USDT"], api_key=KEY)
    # the simulated prices take seconds to build on a loaded machine: before any request with
    # a 2 s client timeout, or a plain placement times out and turns into a reconciliation
    ex.last_price("BTC/USDT")
    return ex


@pytest.fixture
def server(exchange: LoopbackExchange) -> Iterator[LoopbackServer]:
    with LoopbackServer(exchange) as srv:
        yield srv


def _broker(server: LoopbackServer, **kw: object) -> CcxtBroker:
    args: dict[str, object] = {
        "api_key": KEY,
        "api_secret": SECRET,
        "sandbox": True,
        "api_base": server.url,
        "timeout_ms": 2_000,
        "reconcile_wait_s": 0.05,
        # generous: a signed request that waits longer (a stalled, loaded CI machine) would be
        # refused by the loopback exchange and turn a plain placement into a reconciliation
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


def test_sandbox_mode_then_loopback_urls(server: LoopbackServer) -> None:
    b = _broker(server)
    assert b.exchange.isSandboxModeEnabled
    assert all(
        str(u).startswith(server.url) for u in b.exchange.urls["api"].values() if "://" in str(u)
    )


def test_market_order_placed_and_filled(server: LoopbackServer, exchange: LoopbackExchange) -> None:
    b = _broker(server)
    b.submit(_order("paper-BTCUSDT-1-1"))
    placed = exchange.orders()
    assert len(placed) == 1
    assert placed[0]["clientOrderId"] == "paper-BTCUSDT-1-1"
    assert placed[0]["type"] == "MARKET" and placed[0]["side"] == "BUY"
    fills = b.process_bar(_bar(exchange), 0.0)
    assert len(fills) == 1
    f = fills[0]
    assert f.client_order_id == "paper-BTCUSDT-1-1"
    assert f.amount == pytest.approx(0.01)
    # the price is the exchange's (its response), not one computed here
    assert f.price == pytest.approx(float(placed[0]["fills"][0]["price"]))
    assert b.order_status("paper-BTCUSDT-1-1") == "filled"
    assert b.exchange_order_id("paper-BTCUSDT-1-1") == str(placed[0]["orderId"])
    assert b.net_units("BTC/USDT") == pytest.approx(0.01)
    assert b.process_bar(_bar(exchange), 0.0) == []  # a fill is handed out once


def test_timed_out_order_is_reconciled_not_duplicated(
    server: LoopbackServer, exchange: LoopbackExchange, caplog: pytest.LogCaptureFixture
) -> None:
    # the exchange places the order but answers after the client's timeout
    exchange.faults = FaultPlan(
        pattern=(Fault.APPLIED_SLOW,), endpoints=("order",), slow_s=2.5, repeat=False
    )
    b = _broker(server)
    with caplog.at_level(logging.WARNING, logger="tradeloop.live"):
        b.submit(_order("paper-BTCUSDT-2-1"))
    placed = exchange.orders()
    assert len(placed) == 1, "the timed-out order was sent twice"
    assert b.resends == 0 and b.reconciliations >= 1
    assert any("reconciling by client order id" in r.getMessage() for r in caplog.records)
    assert any("found on the exchange" in r.getMessage() for r in caplog.records)
    # the reconciliation asked by client order id
    lookups = [p for ep, p in exchange.log if ep == "order" and "origClientOrderId" in p]
    assert lookups and lookups[0]["origClientOrderId"] == "paper-BTCUSDT-2-1"
    fills = b.process_bar(_bar(exchange), 0.0)
    assert [f.amount for f in fills] == [pytest.approx(0.01)]
    assert len(exchange.orders()) == 1


def test_order_lost_before_the_exchange_is_resent_once(
    server: LoopbackServer, exchange: LoopbackExchange
) -> None:
    # 503: the request never took effect. "Not found" right away only means "not yet" (the
    # request could still arrive); once its recvWindow has passed, the exchange's "does not
    # exist" is final and the order is sent again, once, with the same client order id.
    exchange.faults = FaultPlan(pattern=(Fault.UNAVAILABLE,), endpoints=("order",), repeat=False)
    broker_clock_s = [time.time()]  # the broker's view of time; the exchange keeps the real one
    b = _broker(server, clock=lambda: broker_clock_s[0])
    b.submit(_order("paper-BTCUSDT-3-1"))
    assert b.order_status("paper-BTCUSDT-3-1") == "unknown"
    assert b.process_bar(_bar(exchange), 0.0) == []  # within its recvWindow: not yet re-sent
    assert b.resends == 0 and exchange.orders() == []
    broker_clock_s[0] += 5.0 + 0.1 + 0.01  # past recvWindow (5 s) + grace (0.1 s)
    fills = b.process_bar(_bar(exchange), 0.0)
    assert b.resends == 1
    assert [o["clientOrderId"] for o in exchange.orders()] == ["paper-BTCUSDT-3-1"]
    assert b.order_status("paper-BTCUSDT-3-1") == "filled" and len(fills) == 1
    assert b.process_bar(_bar(exchange), 0.0) == [] and len(exchange.orders()) == 1


def test_loopback_rejects_a_request_past_its_recv_window(
    server: LoopbackServer, exchange: LoopbackExchange
) -> None:
    # why the re-send is safe: a delayed original arriving after its recvWindow is refused
    exchange.faults = FaultPlan(pattern=(Fault.SLOW,), endpoints=("order",), slow_s=0.6)
    b = _broker(server, timeout_ms=2_000, recv_window_ms=300)
    b.exchange.load_markets()
    with pytest.raises(ccxt.InvalidNonce):
        b.exchange.create_order("BTC/USDT", "market", "buy", 0.01)
    assert exchange.orders() == []


def test_unreachable_exchange_keeps_order_unknown_and_never_resends(
    server: LoopbackServer, exchange: LoopbackExchange
) -> None:
    # the order is placed but the answer is late, then every lookup fails (503): the outcome is
    # unknown, so nothing is re-sent
    exchange.faults = FaultPlan(
        pattern=(Fault.APPLIED_SLOW, Fault.UNAVAILABLE, Fault.UNAVAILABLE),
        endpoints=("order",),
        slow_s=2.5,
        repeat=False,
    )
    b = _broker(server, reconcile_attempts=2)
    b.submit(_order("paper-BTCUSDT-4-1"))
    assert b.order_status("paper-BTCUSDT-4-1") == "unknown"
    assert b.resends == 0
    assert len(exchange.orders()) == 1
    # the next bar reconciles again (the exchange answers now) and books the fill once
    fills = b.process_bar(_bar(exchange), 0.0)
    assert len(fills) == 1 and b.order_status("paper-BTCUSDT-4-1") == "filled"
    assert len(exchange.orders()) == 1


def test_auth_error_is_clear_and_does_not_leak_the_key(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong_key = "wrong-key-9d8c7b6a"
    b = _broker(server, api_key=wrong_key)
    with caplog.at_level(logging.DEBUG), pytest.raises(LiveBrokerError) as err:
        b.submit(_order("paper-BTCUSDT-5-1"))
    message = str(err.value)
    assert "authentication failed" in message
    assert "TRADELOOP_EXCHANGE_API_KEY" in message
    for secret in (wrong_key, SECRET):
        assert secret not in message
        assert secret not in caplog.text
        assert secret not in repr(err.value.__cause__ or "")


def test_missing_keys_refused() -> None:
    with pytest.raises(LiveBrokerError, match="TRADELOOP_EXCHANGE_API_KEY"):
        CcxtBroker("binance", api_key=None, api_secret=None)


def test_exchange_client_order_id_deterministic() -> None:
    assert exchange_client_order_id("paper-BTCUSDT-1-1") == "paper-BTCUSDT-1-1"
    long = "account-with-a-long-name-BTCUSDT-1700000000000-12"
    a, b = exchange_client_order_id(long), exchange_client_order_id(long)
    assert a == b and len(a) <= 36 and a != exchange_client_order_id(long + "3")


def test_live_refused_without_opt_in(tmp_path: object) -> None:
    with pytest.raises(LiveTradingRefused, match="TRADELOOP_LIVE_TRADING=true"):
        require_live_opt_in(Settings(live_trading=False), live=True)
    require_live_opt_in(Settings(live_trading=False), live=False)  # paper: fine
    require_live_opt_in(Settings(live_trading=True), live=False)  # paper: fine
    s = Settings(live_trading=True, exchange="binance")
    with pytest.raises(LiveTradingRefused, match="API key"):
        require_live_opt_in(s, live=True)


def test_cli_live_refused_without_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from flows.cli import app

    monkeypatch.setenv("TRADELOOP_HOME", str(tmp_path))
    monkeypatch.delenv("TRADELOOP_LIVE_TRADING", raising=False)
    result = CliRunner().invoke(app, ["serve", "--live", "--symbols", "BTC/USDT"])
    assert result.exit_code == 2, result.output
    assert "TRADELOOP_LIVE_TRADING=true" in result.output
    assert "paper" in result.output


def test_ccxt_maps_loopback_missing_order_to_order_not_found(server: LoopbackServer) -> None:
    b = _broker(server)
    b.exchange.load_markets()
    with pytest.raises(ccxt.OrderNotFound):
        b.exchange.fetch_order("", "BTC/USDT", {"origClientOrderId": "nope"})


def test_serve_live_runs_the_loop_against_the_loopback(
    server: LoopbackServer, exchange: LoopbackExchange, settings: Settings
) -> None:
    from trading.service import serve_live
    from warehouse import connect

    live = settings.model_copy(
        update={
            "live_trading": True,
            "exchange": "binance",
            "exchange_api_base": server.url,
            "exchange_api_key": SecretStr(KEY),
            "exchange_api_secret": SecretStr(SECRET),
        }
    )
    summary = serve_live(live, ["BTC/USDT"], max_polls=1, poll_interval_s=0.0)
    assert summary.candles >= 1
    assert exchange.requests["klines"] >= 1
    con = connect(live, read_only=True)
    try:
        signals = con.execute("SELECT count(*), min(exchange) FROM signals").fetchone()
        state = con.execute("SELECT count(*) FROM loop_state").fetchone()
    finally:
        con.close()
    assert signals is not None and signals[0] == summary.candles and signals[1] == "binance"
    assert state is not None and state[0] == 1
    # nothing in the warehouse holds the keys
    con = connect(live, read_only=True)
    try:
        dump = str(con.execute("SELECT state_json FROM loop_state").fetchall())
    finally:
        con.close()
    assert KEY not in dump and SECRET not in dump
