"""Live trading across restarts: the loop's position and stop come back from the warehouse
snapshot, the order journal and the exchange (looked up by client order id); client order ids
stay unique; SIGTERM flushes; an exchange without a tested client-id lookup is refused.

The real ccxt.binance client against the loopback exchange (a server in this test process);
the killed loops are real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from pipelines.features import FEATURE_SET_VERSION
from pipelines.loopback.server import Fault, FaultPlan, LoopbackExchange, LoopbackServer
from pipelines.simulated_exchange import SimulatedExchange
from trading.domain import Order
from trading.fallback import ModelManager
from trading.live_broker import CcxtBroker, LiveBrokerError
from trading.live_service import journal_file, restore_live
from trading.loop import LoopConfig, ServingLoop
from trading.writer import BufferedWriter
from warehouse import Settings, connect, migrate

KEY = "loopback-key-7f3a9c"
SECRET = "loopback-secret-51d0e2b8"
REPO = Path(__file__).resolve().parents[2]
SYMBOL = "BTC/USDT"

# A live loop as serve_live assembles it (CcxtBroker with its journal, restore_live, a flush
# every step), fed a falling series whose RSI makes the fallback buy at candle BUY_AT.
CHILD = r"""
import json, sys
from pathlib import Path
from pipelines.features import FEATURE_SET_VERSION
from trading.domain import Bar
from trading.fallback import ModelManager
from trading.live_broker import CcxtBroker
from trading.live_service import journal_file, restore_live
from trading.loop import LoopConfig, ServingLoop
from trading.market import Tick
from trading.writer import BufferedWriter
from warehouse import Settings, connect, migrate

a = json.loads(sys.argv[1])
settings = Settings(home=Path(a["home"]))
config = LoopConfig.from_settings(
    settings, account="live", exchange="binance", mode="sandbox", flush_every_steps=1
)
broker = CcxtBroker(
    "binance", api_key=a["key"], api_secret=a["secret"], api_base=a["url"],
    timeout_ms=120_000, journal=journal_file(settings.home, "live"),
)
con = connect(settings)
migrate(con)
writer = BufferedWriter(settings, lambda: connect(settings))
loop = ServingLoop(
    config, manager=ModelManager(lambda: None, FEATURE_SET_VERSION), writer=writer,
    home=settings.home, broker=broker,
)
resumed = restore_live(loop, broker, con, ["BTC/USDT"])

def state(**kw):
    print(json.dumps({
        "units": loop.state.portfolio.units("BTC/USDT"),
        "broker_units": broker.net_units("BTC/USDT"),
        "bracket": broker.bracket("BTC/USDT"),
        "order_seq": loop.state.risk.order_seq,
        "open_orders": [o.client_order_id for o in broker.open_orders()],
        "last_ts": loop.last_ts_ms,
        "events": [e[3] for e in loop.events if e[1] == "reconcile"],
        **kw,
    }), flush=True)

state(phase="restored", resumed=resumed)
price, t0 = a["p0"], a["t0"]
for i in range(a["bars"]):
    r = -0.003 if i % 3 else 0.001
    o, price = price, price * (1 + r)
    ts = t0 + i * 60_000
    if i < a.get("start", 0) or (resumed is not None and ts <= resumed):
        continue  # like serve_live: from the latest closed candle on, never an old one
    bar = Bar("BTC/USDT", ts, o, max(o, price) * 1.0005, min(o, price) * 0.9995, price, 1.0)
    loop.on_tick(Tick(ts + 60_000, (bar,), ()))
    state(phase="step", i=i)
loop.flush(wait=True)
writer.close()
state(phase="done")
if a.get("hang"):  # wait to be killed, idle between two candles
    import time
    Path(a["home"], "idle").write_text("1")
    time.sleep(600)
"""

BUY_AT = 20  # the candle whose close makes the RSI fallback buy (see CHILD's series)


def _series_start(last_price: float) -> float:
    """The first close of CHILD's series so that candle BUY_AT closes at ``last_price``."""
    p = 1.0
    for i in range(BUY_AT + 1):
        p *= 1 + (-0.003 if i % 3 else 0.001)
    return last_price / p


@pytest.fixture(scope="module")
def simulated() -> SimulatedExchange:
    return SimulatedExchange()


@pytest.fixture
def exchange(simulated: SimulatedExchange) -> LoopbackExchange:
    ex = LoopbackExchange(symbols=[SYMBOL], simulated=simulated, api_key=KEY)
    ex.last_price(SYMBOL)  # builds the simulated prices before any timed request
    return ex


@pytest.fixture
def server(exchange: LoopbackExchange) -> Iterator[LoopbackServer]:
    with LoopbackServer(exchange) as srv:
        yield srv


def _child(home: Path, url: str, p0: float, bars: int, **kw: Any) -> subprocess.Popen[str]:
    args = {"home": str(home), "url": url, "key": KEY, "secret": SECRET, "p0": p0, "bars": bars}
    args["t0"] = 1_700_000_000_000 - 1_700_000_000_000 % 60_000
    args.update(kw)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADELOOP_", "PREFECT_"))}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in out.splitlines() if x.startswith("{")]


def _wait(cond: Any, proc: subprocess.Popen[str], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"child exited ({proc.returncode}) before {what}:\n{out}\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("when", ["mid-order", "idle"])
def test_sigkilled_live_loop_restarts_with_position_and_stop(
    tmp_path: Path, server: LoopbackServer, exchange: LoopbackExchange, when: str
) -> None:
    """mid-order: killed after the exchange filled the buy but before the loop saw the answer
    (nothing of that step was flushed: the journal has the order). idle: killed after the
    step's flush, before the next candle (the snapshot has the fill, not yet booked)."""
    p0 = _series_start(exchange.last_price(SYMBOL))
    home = tmp_path / "home"
    if when == "mid-order":  # the buy is placed, its answer comes far too late
        exchange.faults = FaultPlan((Fault.APPLIED_SLOW,), ("order",), slow_s=60, repeat=False)
        proc = _child(home, server.url, p0, BUY_AT + 1)
        _wait(lambda: len(exchange.orders()) == 1, proc, 90, "the buy on the exchange")
    else:
        proc = _child(home, server.url, p0, BUY_AT + 1, hang=True)
        _wait((home / "idle").exists, proc, 90, "the step after the buy, flushed")
        assert len(exchange.orders()) == 1
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    exchange.faults = FaultPlan()
    (buy,) = exchange.orders()
    assert buy["side"] == "BUY" and buy["status"] == "FILLED"
    filled, fill_price = float(buy["executedQty"]), float(buy["fills"][0]["price"])

    # the next candle is built around the actual fill price, away from the stop
    again = _child(home, server.url, _series_start(fill_price), BUY_AT + 2, start=BUY_AT + 1)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err[-3000:]
    lines = _lines(out)
    restored, done = lines[0], lines[-1]
    assert restored["phase"] == "restored" and done["phase"] == "done"
    # the exchange's fill is the loop's position again, with its stop
    assert restored["broker_units"] == pytest.approx(filled)
    assert restored["bracket"] is not None
    stop, take = restored["bracket"]
    assert stop is not None and 0.98 * fill_price < stop < fill_price
    assert take is not None and take > fill_price
    # booked into the portfolio at the next candle, and no second buy
    assert done["units"] == pytest.approx(filled), exchange.orders()
    assert done["bracket"] is not None and done["bracket"][0] == pytest.approx(stop)
    assert [o["side"] for o in exchange.orders()] == ["BUY"], out
    assert done["open_orders"] == []
    # client order ids keep going up: the journal's order counts
    assert done["order_seq"] >= 1
    if when == "mid-order":
        assert any("sent after the last snapshot" in e for e in restored["events"])
    con = connect(Settings(home=home), read_only=True)
    try:
        fills = con.execute("SELECT count(*), sum(amount) FROM fills").fetchone()
        orders = con.execute(
            "SELECT client_order_id, status, exchange_order_id, order_type, epoch_ms(ts) "
            "FROM orders"
        ).fetchall()
    finally:
        con.close()
    assert fills is not None and fills[0] == 1 and fills[1] == pytest.approx(filled)
    candle = 1_700_000_000_000 - 1_700_000_000_000 % 60_000 + BUY_AT * 60_000
    assert orders == [(buy["clientOrderId"], "filled", str(buy["orderId"]), "market", candle)]


def _loop(settings: Settings, broker: CcxtBroker) -> tuple[ServingLoop, Any]:
    con = connect(settings)
    migrate(con)
    config = LoopConfig.from_settings(
        settings, account="live", exchange="binance", mode="sandbox", flush_every_steps=1
    )
    writer = BufferedWriter(settings, lambda: connect(settings))
    loop = ServingLoop(
        config,
        manager=ModelManager(lambda: None, FEATURE_SET_VERSION),
        writer=writer,
        home=settings.home,
        broker=broker,
    )
    return loop, con


def _broker(server: LoopbackServer, home: Path, **kw: Any) -> CcxtBroker:
    return CcxtBroker(
        "binance",
        api_key=KEY,
        api_secret=SECRET,
        api_base=server.url,
        timeout_ms=5_000,
        reconcile_wait_s=0.01,
        journal=journal_file(home, "live"),
        **kw,
    )


def test_order_from_before_a_restart_not_on_the_exchange_is_not_resent(
    settings: Settings, server: LoopbackServer, exchange: LoopbackExchange
) -> None:
    # -1001 and nothing placed, then the process dies. The next one finds the order in the
    # journal, the exchange says "does not exist" (past its recvWindow): never sent again
    exchange.faults = FaultPlan((Fault.UNAPPLIED_ERROR,), ("order",), repeat=False)
    first = _broker(server, settings.home)
    first.submit(Order("live-BTCUSDT-1-1", SYMBOL, "buy", 0.01, created_ts_ms=1))
    assert first.order_status("live-BTCUSDT-1-1") == "unknown" and exchange.orders() == []
    later = time.time() + 60
    second = _broker(server, settings.home, clock=lambda: later)
    loop, con = _loop(settings, second)
    try:
        restore_live(loop, second, con, [SYMBOL])
    finally:
        con.close()
        assert loop.writer is not None
        loop.writer.close()
    assert second.order_status("live-BTCUSDT-1-1") == "rejected"
    assert second.resends == 0 and exchange.orders() == []
    # its id is never built again: the sequence is floored by the journal, reuse is refused
    assert loop.state.risk.order_seq >= 1
    with pytest.raises(LiveBrokerError, match="already sent"):
        second.submit(Order("live-BTCUSDT-1-1", SYMBOL, "buy", 0.01, created_ts_ms=1))
    assert exchange.orders() == []


def test_start_reports_foreign_open_orders_and_a_short_balance(
    settings: Settings, server: LoopbackServer, exchange: LoopbackExchange
) -> None:
    b = _broker(server, settings.home)
    b.exchange.load_markets()
    b.exchange.create_order(SYMBOL, "limit", "buy", 0.01, 1.0, {"newClientOrderId": "by-hand"})
    # a snapshot that believes in 1 BTC the exchange does not hold
    b.restore(
        {
            "kind": "ccxt",
            "journal_entries": 0,
            "orders": [],
            "ready": {},
            "brackets": {
                SYMBOL: {
                    "units": 1.0,
                    "stop_loss_price": 1.0,
                    "take_profit_price": None,
                    "client_order_id": "x",
                }
            },
            "net_units": {SYMBOL: 1.0},
        }
    )
    notes = b.reconcile_on_start([SYMBOL])
    assert any("by-hand" in n and "not placed by this loop" in n for n in notes), notes
    assert any("exchange only 0" in n for n in notes), notes
    assert b.net_units(SYMBOL) == 0.0
    assert [o["clientOrderId"] for o in exchange.orders()] == ["by-hand"]  # left alone


def test_serve_live_restarts_from_its_snapshot(
    settings: Settings, server: LoopbackServer, exchange: LoopbackExchange
) -> None:
    from trading.service import serve_live

    live = settings.model_copy(
        update={
            "live_trading": True,
            "exchange": "binance",
            "exchange_api_base": server.url,
            "exchange_api_key": SecretStr(KEY),
            "exchange_api_secret": SecretStr(SECRET),
        }
    )
    first = serve_live(live, [SYMBOL], max_polls=1, poll_interval_s=0.0)
    assert first.resumed_from_ts_ms is None and first.candles >= 1
    con = connect(live, read_only=True)
    try:
        row = con.execute("SELECT state_json FROM loop_state").fetchone()
    finally:
        con.close()
    assert row is not None and json.loads(row[0])["broker"]["kind"] == "ccxt"
    exchange.reset_counters()
    serve_live(live, [SYMBOL], max_polls=1, poll_interval_s=0.0)
    # the restart read balances and open orders from the exchange before any candle
    assert exchange.requests["account"] >= 1 and exchange.requests["openOrders"] >= 1
    con = connect(live, read_only=True)
    try:
        state = con.execute("SELECT steps FROM loop_state").fetchone()
    finally:
        con.close()
    assert state is not None and state[0] >= first.ticks  # continued, not restarted at 0


def test_cli_refuses_live_trading_on_another_exchange(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from flows.cli import app
    from warehouse.settings import get_settings

    monkeypatch.setenv("TRADELOOP_HOME", str(tmp_path))
    monkeypatch.setenv("TRADELOOP_LIVE_TRADING", "true")
    monkeypatch.setenv("TRADELOOP_EXCHANGE", "kraken")
    monkeypatch.setenv("TRADELOOP_EXCHANGE_API_KEY", KEY)
    monkeypatch.setenv("TRADELOOP_EXCHANGE_API_SECRET", SECRET)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["serve", "--live", "-s", "BTC/USD"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert "refused on 'kraken'" in result.output and "binance" in result.output
    assert not (tmp_path / "serve").exists()  # nothing started


@pytest.mark.slow
def test_sigterm_flushes_the_live_loops_rows(
    tmp_path: Path, server: LoopbackServer, exchange: LoopbackExchange
) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADELOOP_", "PREFECT_"))}
    env.update(
        TRADELOOP_HOME=str(home),
        TRADELOOP_LIVE_TRADING="true",
        TRADELOOP_EXCHANGE="binance",
        TRADELOOP_EXCHANGE_API_BASE=server.url,
        TRADELOOP_EXCHANGE_API_KEY=KEY,
        TRADELOOP_EXCHANGE_API_SECRET=SECRET,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--live", "-s", SYMBOL, "--account", "t"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    beat = home / "serve" / "t.heartbeat"
    _wait(beat.exists, proc, 120, "the first served candle")
    served = json.loads(beat.read_text())["steps"]
    assert served >= 1
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert "served" in out
    con = connect(Settings(home=home), read_only=True)
    try:
        signals = con.execute("SELECT count(*) FROM signals WHERE account = 't'").fetchone()
        state = con.execute("SELECT steps FROM loop_state WHERE account = 't'").fetchone()
    finally:
        con.close()
    assert state is not None and state[0] >= served
    assert signals is not None and signals[0] == state[0]
