"""``trading.alerts``: the webhook sink against a loopback receiver (real HTTP), one alert per
key, no secrets in what is sent, and a receiver that is down never stops the caller."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from pipelines.redaction import register_secrets
from tests.support.webhook import WebhookReceiver
from trading.alerts import ALERT_KINDS, TITLES, Alerter, WebhookSink


def _no_sleep(seconds: float) -> None:
    pass


def test_an_alert_is_posted_once_as_json_with_its_fields() -> None:
    with WebhookReceiver() as hook:
        sink = WebhookSink(hook.url)
        alerts = Alerter(sink, run_url="http://ui/runs/flow-run/1")
        first = alerts.alert(
            "kill_fired",
            "kill switch fired: drawdown 21% > 20%",
            key="paper:1700000000000-3",
            account="paper",
            symbol="BTC/USDT",
            model="signal-v3",
            ts_ms=1_700_000_000_000,
        )
        again = alerts.alert("kill_fired", "the same event again", key="paper:1700000000000-3")
        alerts.close()
        [received] = hook.received
    assert first is not None and again is None  # one alert per key
    assert received.path == "/hook/secret-token-3f9a"
    assert received.headers["Content-Type"] == "application/json"
    assert received.json() == {
        "kind": "kill_fired",
        "message": "kill switch fired: drawdown 21% > 20%",
        "id": "paper:1700000000000-3",
        "ts": "2023-11-14T22:13:20+00:00",
        "account": "paper",
        "symbol": "BTC/USDT",
        "model": "signal-v3",
        "run_url": "http://ui/runs/flow-run/1",
        "source": "tradeloop",
        "title": "[tradeloop] kill switch fired (paper BTC/USDT)",
    }
    assert sink.delivered == 1 and sink.failed == 0


def test_a_busy_receiver_is_retried_and_gets_the_alert_once() -> None:
    with WebhookReceiver(fail_first=2, fail_status=503) as hook:
        sink = WebhookSink(hook.url, attempts=3, sleep=_no_sleep)
        Alerter(sink).alert("stale", "stale data", key="k1", account="paper")
        sink.close()
        assert hook.refused == 2 and len(hook.received) == 1
    assert sink.delivered == 1


def test_a_refusing_receiver_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    with WebhookReceiver(fail_first=5, fail_status=400) as hook:
        sink = WebhookSink(hook.url, attempts=3, sleep=_no_sleep)
        with caplog.at_level(logging.ERROR, "tradeloop.alerts"):
            Alerter(sink).alert("degraded", "model degraded", key="k2")
            sink.close()
        assert hook.refused == 1 and hook.received == []
    assert sink.failed == 1
    assert "HTTP 400" in caplog.text and "secret-token" not in caplog.text


def test_a_receiver_that_is_down_is_logged_and_the_caller_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = WebhookSink(
        f"http://127.0.0.1:{port}/hook/token-9", attempts=2, timeout_s=1.0, sleep=_no_sleep
    )
    with caplog.at_level(logging.ERROR, "tradeloop.alerts"):
        sent = Alerter(sink).alert("order_unknown", "order x: outcome unknown", key="k3")
        sink.close()
    assert sent is not None and sink.failed == 1 and sink.delivered == 0
    assert "not delivered" in caplog.text and "token-9" not in caplog.text
    assert "token-9" not in repr(sink)


def test_registered_secrets_never_reach_the_payload() -> None:
    register_secrets("sk-live-4242abcd")
    with WebhookReceiver() as hook:
        alerts = Alerter(WebhookSink(hook.url))
        alerts.alert(
            "order_unknown",
            "binance order a-1: outcome unknown (AuthError sk-live-4242abcd)",
            key="k4",
        )
        alerts.close()
        [received] = hook.received
    assert b"sk-live-4242abcd" not in received.body
    assert "***" in received.json()["message"]


def test_every_kind_has_a_title_and_unknown_kinds_are_refused() -> None:
    assert set(TITLES) == set(ALERT_KINDS)
    with pytest.raises(ValueError, match="unknown alert kind"):
        Alerter(WebhookSink("http://127.0.0.1:9/x")).alert("nope", "x", key="k")  # type: ignore[arg-type]


def test_a_live_order_left_unknown_gives_one_alert() -> None:
    """The real ccxt.binance client against the loopback exchange: the order request fails
    without effect (-1001), the lookup by client id says "not yet" (recvWindow): the order is
    ``unknown``; ``serve_live`` wires ``on_unknown`` to a loop event with an alert, here to an
    ``Alerter`` directly. Reconciled again at the next candles, it is not told twice."""
    import time as _time

    from pipelines.loopback.server import Fault, FaultPlan, LoopbackExchange, LoopbackServer
    from pipelines.simulated_exchange import SimulatedExchange
    from trading.domain import Bar, Order
    from trading.live_broker import CcxtBroker

    exchange = LoopbackExchange(
        symbols=["BTC/USDT"], simulated=SimulatedExchange(), api_key="loopback-key-1"
    )
    price = exchange.last_price("BTC/USDT")
    exchange.faults = FaultPlan((Fault.UNAPPLIED_ERROR,), ("order",), repeat=False)
    now = [_time.time()]
    with LoopbackServer(exchange) as server, WebhookReceiver() as hook:
        broker = CcxtBroker(
            "binance",
            api_key="loopback-key-1",
            api_secret="loopback-secret-2",
            api_base=server.url,
            timeout_ms=2_000,
            reconcile_wait_s=0.05,
            clock=lambda: now[0],
        )
        alerts = Alerter(WebhookSink(hook.url))
        broker.on_unknown = lambda order, why: alerts.alert(
            "order_unknown",
            f"order {order.client_order_id}: outcome unknown ({why})",
            key=f"live:{order.client_order_id}",
            account="live",
            symbol=order.symbol,
        )
        broker.submit(Order("live-BTCUSDT-1-1", "BTC/USDT", "buy", 0.01, created_ts_ms=1))
        assert broker.order_status("live-BTCUSDT-1-1") == "unknown"
        bar = Bar("BTC/USDT", 0, price, price, price, price, 1.0)
        broker.process_bar(bar, 0.0)  # still inside the recvWindow: still unknown
        now[0] += 10.0
        broker.process_bar(bar, 0.0)  # the exchange confirms it never got it: sent again
        alerts.close()
        payloads = hook.payloads()
    assert broker.order_status("live-BTCUSDT-1-1") == "filled"
    assert [p["kind"] for p in payloads] == ["order_unknown"]
    assert payloads[0]["symbol"] == "BTC/USDT" and "live-BTCUSDT-1-1" in payloads[0]["message"]
    assert "loopback-secret-2" not in str(payloads) and "loopback-key-1" not in str(payloads)


def test_a_manual_kill_and_its_lifting_each_give_one_alert(tmp_path: Path) -> None:
    """The serving loop on real candles: `tradeloop kill` (its file) fires the kill switch,
    removing it lifts it; one alert each, however many candles pass in between."""
    from tests.trading.serve_harness import TICKS, MemoryRegistry, build_loop
    from tests.trading.serve_support import constant_model
    from trading.loop import LoopConfig
    from trading.protections import kill_file

    registry = MemoryRegistry()
    registry.promote(constant_model(tmp_path / "hold.onnx", (0.2, 0.6, 0.2), 0.8), "hold")
    with WebhookReceiver() as hook:
        alerts = Alerter(WebhookSink(hook.url), run_url="file:///home/serve/paper.heartbeat")
        loop = build_loop(LoopConfig(), tmp_path / "home", registry, alerts=alerts)
        kill = kill_file(loop.home, loop.config.account)
        for i, tick in enumerate(TICKS[:60]):
            if i == 20:
                kill.parent.mkdir(parents=True, exist_ok=True)
                kill.touch()
            if i == 40:
                kill.unlink()
            loop.on_tick(tick)  # type: ignore[arg-type]  # Tick is frozen; TickLike not
        alerts.close()
        got = hook.payloads()
    assert [(p["kind"], p["message"]) for p in got] == [
        ("kill_fired", "manual kill: no new orders"),
        ("kill_reset", "manual kill lifted"),
    ]
    assert all(p["account"] == "paper" and p["model"] == "hold" for p in got)
    assert [p["ts"] for p in got] == [
        _iso_ms(TICKS[20].bars[0].ts_ms),
        _iso_ms(TICKS[40].bars[0].ts_ms),
    ]


def _iso_ms(ts_ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).isoformat()
