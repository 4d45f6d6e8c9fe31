"""Kill switch, fallback, hot swap, restart and outage tests of the serving loop."""

from __future__ import annotations

import dataclasses

import polars as pl

from models.registry import get_model
from tests.trading.serve_support import (
    SYMBOL,
    candle_table,
    constant_model,
    make_loop,
    momentum_model,
    real_frame,
    register_champion,
    replay_market,
    table_rows,
)
from trading.loop import LoopConfig, run
from trading.market import PollingMarket
from trading.protections import ProtectionConfig
from trading.state import risk_to_dict
from warehouse import Settings, connect, migrate

CONFIG = LoopConfig(model_check_every_steps=5, flush_every_steps=50)


def _model_ids(lake) -> list[str]:  # type: ignore[no-untyped-def]
    return [r[0] for r in lake.execute("SELECT model_id FROM predictions ORDER BY ts").fetchall()]


def test_kill_switch_fires_under_a_bad_model(settings, lake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = constant_model(tmp_path / "bad.onnx", (0.96, 0.02, 0.02), 0.99)  # always "buy"
    bad_id = register_champion(lake, settings, bad)
    cfg = dataclasses.replace(
        CONFIG,
        protections=ProtectionConfig(kill_accuracy_below=0.4, kill_min_resolved=40),
    )
    loop, _ = make_loop(settings, cfg, lookup_con=lake)
    run(loop, replay_market(500))
    loop.writer.close()
    kills = [e for e in loop.events if e[1] == "kill" and "fired" in e[3]]
    assert kills, loop.events
    assert "rolling accuracy" in kills[0][3] and bad_id in kills[0][3]
    assert loop.state.risk.killed
    kill_at = pl.from_epoch(pl.Series([kills[0][0]]), time_unit="ms").dt.replace_time_zone("UTC")
    entries = (
        "SELECT count(*) FROM orders o JOIN signals s USING (account, symbol, ts) "
        "WHERE o.ts {} ? AND o.status <> 'cancelled' AND s.reason LIKE '%entry%'"
    )
    # the query finds entries (the model bought before the kill), and none after it
    assert lake.execute(entries.format("<="), [kill_at[0]]).fetchone()[0] >= 1
    assert lake.execute(entries.format(">"), [kill_at[0]]).fetchone()[0] == 0
    stored = lake.execute("SELECT count(*) FROM loop_events WHERE kind = 'kill'").fetchone()[0]
    assert stored >= 1


def test_fallback_on_corrupt_file_then_recovers_on_promotion(settings, lake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = register_champion(
        lake, settings, constant_model(tmp_path / "a.onnx", (0.2, 0.6, 0.2), 0.9)
    )
    get_model(lake, first).onnx_path.write_bytes(b"this is not an onnx file")
    loop, _ = make_loop(settings, CONFIG, lookup_con=lake)
    market = replay_market(400)
    ticks = list(market.ticks())
    for t in ticks[:150]:
        loop.on_tick(t)  # never raises
    assert loop.manager.predictor is None
    fallback = [e for e in loop.events if e[1] == "fallback" and "engaged" in e[3]]
    assert fallback and "unusable" in fallback[0][3] and "sha256" in fallback[0][3]
    good = register_champion(
        lake, settings, constant_model(tmp_path / "b.onnx", (0.3, 0.4, 0.3), 0.8)
    )
    for t in ticks[150:]:
        loop.on_tick(t)
    loop.flush(wait=True)
    loop.writer.close()
    assert loop.manager.model_id == good
    assert any(e[1] == "fallback" and "released" in e[3] for e in loop.events)
    ids = _model_ids(lake)
    assert ids[0] == "rsi_fallback" and ids[-1] == good
    assert (
        lake.execute("SELECT count(*) FROM loop_events WHERE kind = 'fallback'").fetchone()[0] >= 2
    )


def test_hot_swap_mid_run_refuses_other_feature_set(settings, lake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = register_champion(lake, settings, constant_model(tmp_path / "a.onnx", (0.3, 0.4, 0.3), 0.8))
    loop, _ = make_loop(settings, CONFIG, lookup_con=lake)
    ticks = list(replay_market(300).ticks())
    for t in ticks[:100]:
        loop.on_tick(t)
    other = constant_model(tmp_path / "x.onnx", (0.3, 0.4, 0.3), 0.7, feature_set_version="f-other")
    x = register_champion(lake, settings, other, fsv="f-other")
    for t in ticks[100:150]:
        loop.on_tick(t)
    refused = [e for e in loop.events if "refused" in e[3]]
    assert refused and x in refused[0][3] and "feature set" in refused[0][3]
    assert f"keeping {a}" in refused[0][3]
    assert loop.manager.model_id == a
    b = register_champion(
        lake, settings, constant_model(tmp_path / "b.onnx", (0.25, 0.5, 0.25), 0.8)
    )
    for t in ticks[150:]:
        loop.on_tick(t)
    loop.flush(wait=True)
    loop.writer.close()
    assert loop.manager.model_id == b
    ids = [i for i in _model_ids(lake) if i != "rsi_fallback"]
    assert x not in ids and ids[0] == a and ids[-1] == b
    swap_at = ids.index(b)
    assert all(i == b for i in ids[swap_at:]) and all(i == a for i in ids[:swap_at])


def test_restart_mid_run_resumes_with_identical_positions(settings, lake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The RSI fallback trades (stops and protections on) until a real, input-dependent ONNX model
    # is promoted at tick 150; the "crash" comes at tick 333 while that model decides, so the
    # snapshot carries its feedback, adaptive thresholds and protections.
    cfg = dataclasses.replace(
        CONFIG,
        flush_every_steps=160,  # snapshots at 160 and 320: the restart is off a model check
        model_check_every_steps=50,
        protections=ProtectionConfig(kill_accuracy_below=0.3),
    )
    model = momentum_model(tmp_path / "reversal.onnx", -4000.0, 2.0)
    ticks = list(replay_market(500).ticks())

    def drive(loop, con, s: Settings, upto: int) -> None:  # type: ignore[no-untyped-def]
        for i, t in enumerate(ticks[:upto]):
            if i == 150:
                register_champion(con, s, model)
            loop.on_tick(t)

    full, _ = make_loop(settings, cfg, lookup_con=lake)
    drive(full, lake, settings, 500)
    full.flush(wait=True)
    full.writer.close()

    s2 = Settings(home=tmp_path / "h2")
    lake2 = connect(s2)
    migrate(lake2)
    crashed, _ = make_loop(s2, cfg, lookup_con=lake2)
    drive(crashed, lake2, s2, 333)  # the last snapshot is from tick 320
    crashed.writer.close()
    resumed, _ = make_loop(s2, cfg, lookup_con=lake2)
    summary = run(resumed, replay_market(500), con=lake2)
    resumed.writer.close()
    assert summary.resumed_from_ts_ms == ticks[319].bars[0].ts_ms
    assert summary.candles == 500 - 320
    assert resumed.state.portfolio.positions == full.state.portfolio.positions
    assert resumed.state.portfolio.cash == full.state.portfolio.cash
    assert resumed.state.portfolio.trades == full.state.portfolio.trades
    assert len(full.state.portfolio.trades) >= 3
    # the model's rolling state and the protections come back exactly
    assert resumed.manager.model_id == full.manager.model_id is not None
    assert full.feedback.resolved >= 100
    assert resumed.feedback.to_dict() == full.feedback.to_dict()
    assert resumed.thresholds.to_dict() == full.thresholds.to_dict()
    assert any(e[1] == "threshold" for e in full.events)  # the mode moved during the run
    assert resumed.protections.to_dict() == full.protections.to_dict()
    assert full.protections.symbol_lock_until  # a cooldown was set
    assert risk_to_dict(resumed.state.risk) == risk_to_dict(full.state.risk)
    for t, order in (
        ("fills", "fill_id"),
        ("orders", "client_order_id"),
        ("equity", "ts"),
        ("signals", "ts"),
        ("predictions", "ts"),
    ):
        assert table_rows(lake, t, order) == table_rows(lake2, t, order), t
    ids = {r[0] for r in lake2.execute("SELECT DISTINCT model_id FROM predictions").fetchall()}
    assert ids == {"rsi_fallback", full.manager.model_id}


def test_loopback_outage_and_warehouse_failures_lose_nothing(settings, lake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipelines.loopback.server import Fault, FaultPlan, LoopbackExchange, LoopbackServer
    from pipelines.sources.ccxt_source import CcxtSource, RetryPolicy
    from trading.writer import BufferedWriter

    frame = real_frame(150)
    table = candle_table(frame)
    start = int(frame["ts"].dt.epoch("ms")[0])
    now = {"ms": start + 60_000 * 30}
    exchange = LoopbackExchange(
        symbols=[SYMBOL],
        tables={SYMBOL: table},
        clock=lambda: now["ms"],
        faults=FaultPlan(
            pattern=(Fault.SERVER_ERROR, Fault.UNAVAILABLE, None, Fault.SERVER_ERROR, None)
        ),
    )

    def advance(_: float) -> None:
        now["ms"] += 60_000

    fails = {"n": 0}

    def flaky_connect():  # type: ignore[no-untyped-def]
        fails["n"] += 1
        if fails["n"] <= 3:
            raise OSError("warehouse unreachable (injected)")
        return connect(settings)

    with LoopbackServer(exchange) as server:
        source = CcxtSource(
            "binance",
            api_base=server.url,
            config={"timeout": 5000, "rateLimit": 1},
            retry=RetryPolicy(max_attempts=1),
            seed=1,
        )
        market = PollingMarket(
            source, [SYMBOL], "1m", start, clock=lambda: now["ms"], sleep=advance, max_polls=150
        )
        loop, _ = make_loop(settings, CONFIG, lookup_con=lake)
        loop.writer = BufferedWriter(
            settings, flaky_connect, background=True, initial_backoff_s=0.01
        )
        run(loop, market)
        loop.writer.close()
    assert market.outages > 5
    assert any("exchange outage" in e[3] for e in loop.events)
    assert loop.writer.failures >= 3
    got = [r[0] for r in lake.execute("SELECT epoch_ms(ts) FROM signals ORDER BY ts").fetchall()]
    expected = [int(x) for x in frame["ts"].dt.epoch("ms").to_list()]
    closed = [t for t in expected if t + 60_000 <= now["ms"]]
    assert got == closed  # every closed candle got its step, none twice, none lost
    # one prediction per processed candle (none lost, none twice); no champion, so the RSI rule
    # predicts, from its first warm value on (the first ``period`` candles have no RSI yet)
    preds = lake.execute(
        "SELECT epoch_ms(ts), model_id FROM predictions ORDER BY ts, model_id"
    ).fetchall()
    assert [p[0] for p in preds] == closed[CONFIG.rsi.period :]
    assert {p[1] for p in preds} == {"rsi_fallback"}
    n_fills = lake.execute("SELECT count(*) FROM fills").fetchone()[0]
    assert n_fills == loop.state.portfolio.fills
    eq = lake.execute("SELECT count(*) FROM equity").fetchone()[0]
    assert eq == len(closed)


def test_champion_lookup_reconnects_after_a_dropped_session(settings, lake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from trading.service import ChampionLookup

    model_id = register_champion(
        lake, settings, constant_model(tmp_path / "a.onnx", (0.2, 0.6, 0.2), 0.9)
    )
    lookup = ChampionLookup(settings, "signal")
    try:
        first = lookup()
        assert first is not None and first.model_id == model_id
        assert lookup.con is not None
        lookup.con.close()  # the catalog session is gone (a database restart, an idle timeout)
        again = lookup()
        assert again is not None and again.model_id == model_id
        assert lookup.reconnects == 1
    finally:
        lookup.close()
