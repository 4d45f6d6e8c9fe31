"""Protections of the serving loop on real 1m candles with real ONNX models (issue 9, items 9-10):
stale data, stop-loss guard, max-drawdown lock, per-symbol cooldown, manual kill (`tradeloop
kill`), and the kill switch reset (new champion or by hand, nothing else)."""

from __future__ import annotations

import dataclasses
from collections import deque
from pathlib import Path

import pytest

from flows.commands.serve import kill
from models.registry import get_model
from tests.trading.serve_harness import (
    INDEX,
    TICKS,
    MemoryRegistry,
    build_loop,
    events,
    rows,
    run_ticks,
    signals_by_ts,
)
from tests.trading.serve_support import (
    SYMBOL,
    constant_model,
    momentum_model,
    register_champion,
)
from trading.confidence import ConfidencePolicy
from trading.decision import Thresholds
from trading.domain import Decision, Fill
from trading.loop import LoopConfig, ServingLoop, default_limits
from trading.market import Tick
from trading.protections import ProtectionConfig, Protections
from trading.thresholds import ThresholdPolicy

NONE = ProtectionConfig(
    kill_accuracy_below=None,
    stoploss_guard_count=None,
    drawdown_lock_fraction=None,
    cooldown_candles=0,
)
# The model's own probabilities decide (no accuracy weighting, base thresholds throughout, no
# confidence gate: a kept target re-enters as soon as a lock ends), so a model that keeps
# wanting in shows every lock; each test switches on the protection it checks.
TRUSTING = LoopConfig(
    confidence=ConfidencePolicy(prior_weight=1e12),
    thresholds=ThresholdPolicy(base=Thresholds(0.45, 0.45, 0.0), min_resolved=10**9),
    protections=NONE,
)


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TRADELOOP_HOME for `tradeloop kill` called in-process (its settings are cached)."""
    home = tmp_path / "home"
    monkeypatch.setenv("TRADELOOP_HOME", str(home))  # clears the settings cache
    return home


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "buy": constant_model(d / "buy.onnx", (0.9, 0.05, 0.05), 0.95),
        # buys after a down bar, exits after an up bar: trades often, wants back in quickly
        "reversal": momentum_model(d / "reversal.onnx", -20000.0),
    }


def _entries(loop: ServingLoop) -> set[int]:
    """Candles whose decision sent an entry (no shorts here: a market buy is an entry)."""
    return {
        INDEX[r["ts"]]
        for r in rows(loop, "orders")
        if r["side"] == "buy" and r["order_type"] != "stop"
    }


def _exits(loop: ServingLoop) -> list[tuple[int, str]]:
    """(candle of the exit fill, reason) of every closed trade."""
    return [(INDEX[t.exit_ts_ms], t.exit_reason) for t in loop.state.portfolio.trades]


def _event_candles(loop: ServingLoop, kind: str, text: str) -> list[int]:
    return [INDEX[e[0]] for e in events(loop, kind, text)]


def _stops(config: LoopConfig, mult: float) -> LoopConfig:
    return dataclasses.replace(
        config, limits=dataclasses.replace(default_limits(), stop_loss_vol_mult=mult)
    )


# ---------------------------------------------------------------- stale data


def test_stale_data_gives_an_alert_and_no_new_signal(models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ticks = TICKS[:120]
    fresh = run_ticks(TRUSTING, models["buy"], tmp_path / "a", ticks)
    k = min(_entries(fresh))  # the first candle the model enters on when data is on time
    assert not events(fresh, "alert")

    # The feed stalls after candle k-1: two polls find nothing, then candles k, k+1, k+2 arrive
    # together, 3.5 timeframes after candle k closed (k is stale, k+1 and k+2 are not).
    close = ticks[k - 1].now_ms  # candle k-1 closed here
    late = close + 210_000
    stalled = (
        ticks[:k]
        + (Tick(close + 150_000, ()), Tick(close + 170_000, ()))
        + tuple(Tick(late, t.bars) for t in ticks[k : k + 3])
        + ticks[k + 3 :]
    )
    loop = run_ticks(TRUSTING, models["buy"], tmp_path / "b", stalled)
    alerts = events(loop, "alert", "stale data")
    assert len(alerts) == 1, loop.events  # one visible alert, not one per poll
    assert alerts[0][2] == SYMBOL and "no new signals" in alerts[0][3]
    assert len(events(loop, "alert", "data fresh again")) == 1
    stored = [r for r in loop.batch.tables["loop_events"].values() if r["kind"] == "alert"]
    assert any("stale data" in r["message"] for r in stored)
    sig = signals_by_ts(loop)
    assert len(sig) == len(ticks)  # the empty polls produced no signal
    stale_row = sig[ticks[k].bars[0].ts_ms]
    assert stale_row["reason"].startswith("stale data: no new signal")
    assert stale_row["signal"] == 0  # kept flat: no entry on a stale candle
    assert k not in _entries(loop) and k in _entries(fresh)
    assert k + 1 in _entries(loop)  # the next (fresh) candle trades again


# ---------------------------------------------------------------- cooldown, guard, drawdown


def test_cooldown_blocks_entries_of_the_symbol_for_its_candles(models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    free = run_ticks(TRUSTING, models["reversal"], tmp_path / "a")
    quick = [x for x, _ in _exits(free) if _entries(free) & set(range(x, x + 5))]
    assert quick  # without a cooldown the model re-enters within 5 candles of an exit

    cfg = dataclasses.replace(TRUSTING, protections=dataclasses.replace(NONE, cooldown_candles=5))
    loop = run_ticks(cfg, models["reversal"], tmp_path / "b")
    exits, entries = _exits(loop), _entries(loop)
    assert len(exits) >= 10
    for x, _ in exits:  # the exit filled at candle x's open: decisions x .. x+4 are locked
        assert not entries & set(range(x, x + 5)), (x, sorted(entries))
    assert any(x + 5 in entries for x, _ in exits)  # and the lock ends on time
    sig = signals_by_ts(loop)
    blocked = [r for r in sig.values() if r["reason"].startswith("protection: cooldown")]
    assert blocked and all(r["signal"] == 0 for r in blocked)


def test_stoploss_guard_locks_entries_for_the_lock_period(models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    guard = dataclasses.replace(
        NONE,
        stoploss_guard_count=3,
        stoploss_guard_lookback_candles=60,
        stoploss_guard_lock_candles=30,
    )
    cfg = _stops(dataclasses.replace(TRUSTING, protections=guard), 0.5)  # tight stops
    loop = run_ticks(cfg, models["reversal"], tmp_path)
    stops = [x for x, why in _exits(loop) if why == "stop_loss"]
    # the rule, independently: 3 stop-losses within 60 candles (outside a lock) start a lock
    expected, window, until = [], deque[int](), -1
    for x in stops:
        window.append(x)
        while window[0] <= x - 60:
            window.popleft()
        if len(window) >= 3 and x >= until:
            expected.append(x)
            until = x + 30
            window.clear()
    triggers = _event_candles(loop, "protection", "stop-loss guard")
    assert len(triggers) >= 3
    assert triggers == expected
    entries = _entries(loop)
    for g in triggers:  # the decisions of candles g .. g+29 open nothing
        assert not entries & set(range(g, g + 30)), (g, sorted(entries))
    assert any(g + 30 in entries for g in triggers)  # exactly 30 candles, then entries again
    reasons = [signals_by_ts(loop)[TICKS[g + 10].bars[0].ts_ms]["reason"] for g in triggers]
    assert any(r.startswith("protection: stop-loss guard") for r in reasons)


def test_max_drawdown_lock_locks_entries_for_the_lock_period(models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lock = dataclasses.replace(
        NONE, drawdown_lock_fraction=0.002, drawdown_lookback_candles=240, drawdown_lock_candles=60
    )
    cfg = _stops(dataclasses.replace(TRUSTING, protections=lock), 1.0)
    loop = run_ticks(cfg, models["reversal"], tmp_path)
    equity = [r["equity"] for r in rows(loop, "equity", None)]  # equity rows carry no symbol
    assert len(equity) == len(TICKS)
    triggers = _event_candles(loop, "protection", "max-drawdown lock")
    assert len(triggers) >= 3
    # the first lock starts at the first candle whose equity is 0.2 % below the 240-candle peak
    below = [
        i for i in range(len(TICKS)) if equity[i] < 0.998 * max(equity[max(0, i - 239) : i + 1])
    ]
    assert triggers[0] == below[0]
    assert set(triggers) <= set(below)
    entries = _entries(loop)
    for d in triggers:  # decided after candle d's close: candles d+1 .. d+60 open nothing
        assert not entries & set(range(d + 1, d + 61)), (d, sorted(entries))
    assert any(d + 61 in entries for d in triggers)  # the lock ends after 60 candles
    blocked = [r for r in signals_by_ts(loop).values() if "max-drawdown lock" in r["reason"]]
    assert blocked and all(r["signal"] == 0 for r in blocked)


def _fill(symbol: str, reason: str) -> Fill:
    side = "buy" if reason == "entry" else "sell"
    return Fill("f", "o", symbol, 0, side, 1.0, 1.0, 0.0, reason, 1.0)  # type: ignore[arg-type]


def test_protections_lock_lengths_on_exact_sequences() -> None:
    p = Protections(ProtectionConfig())  # defaults: 3 in 60 -> 30; 10 % of 240 -> 60; cooldown 3
    buy = Decision(1, 0.9, 1.0, "model")

    def blocked(candle: int, symbol: str = "A", current: int = 0) -> bool:
        return p.apply(buy, symbol, current, candle).signal == 0

    # stop-loss guard: the first stop-loss has left the 60-candle lookback when the third comes
    for c in (10, 40, 75):
        assert p.on_fills(c, (_fill("A", "stop_loss"),)) == []
    assert not blocked(78, "B")
    msgs = p.on_fills(90, (_fill("A", "stop_loss"),))  # 40, 75, 90 within 60 candles
    assert msgs and "stop-loss guard" in msgs[0] and "30 candles" in msgs[0]
    assert [c for c in range(90, 130) if blocked(c, "B")] == list(range(90, 120))
    assert p.apply(Decision(0), "B", 1, 100).signal == 0  # exits still go through
    assert p.apply(buy, "B", 1, 100).signal == 1  # an open position is kept
    # cooldown: only the exited symbol, for 3 candles from the exit's candle
    p.on_fills(130, (_fill("C", "exit"),))
    assert [c for c in range(130, 140) if blocked(c, "C")] == [130, 131, 132]
    assert not blocked(130, "D")
    assert p.apply(Decision(-1), "C", 1, 131).signal == 0  # a flip is an entry too
    # max-drawdown lock: 10 % below the 240-candle peak, 60 candles from the next candle
    for c in range(200, 300):
        assert p.on_equity(c, 100.0) is None
    assert p.on_equity(300, 90.5) is None  # 9.5 %
    msg = p.on_equity(301, 89.9)
    assert msg and "max-drawdown lock" in msg and "60 candles" in msg
    assert [c for c in range(302, 370) if blocked(c, "E")] == list(range(302, 362))
    # restored mid-lock, the lock and the cooldowns are the same
    q = Protections(ProtectionConfig())
    q.load(p.to_dict())
    assert q.to_dict() == p.to_dict()
    assert q.entry_block("E", 361) and not q.entry_block("E", 362)
    # the peak ages out of the lookback: no lock for an old peak
    r = Protections(ProtectionConfig(drawdown_lookback_candles=10))
    r.on_equity(0, 100.0)
    assert all(r.on_equity(c, 85.0) is None for c in range(10, 20))


# ---------------------------------------------------------------- manual kill and kill switch


def test_manual_kill_stops_new_orders_within_one_step(models, cli_home) -> None:  # type: ignore[no-untyped-def]
    home = cli_home
    ticks = TICKS[:300]
    free = run_ticks(TRUSTING, models["reversal"], home, ticks)
    window = range(100, 160)
    assert _entries(free) & set(window)  # without the kill the loop trades in the window

    registry = MemoryRegistry()
    registry.promote(models["reversal"], "reversal")
    loop = build_loop(TRUSTING, home, registry)
    units = []
    for i, t in enumerate(ticks):
        if i == window.start:
            kill(account="paper", reset=False)  # what `tradeloop kill` does
        if i == window.stop:
            kill(account="paper", reset=True)  # `tradeloop kill --reset`
        loop.on_tick(t)
        units.append(loop.state.portfolio.units(SYMBOL))
        if i == window.start:
            assert loop.broker.open_orders() == []  # resting stops cancelled at once
    ts = {i: ticks[i].bars[0].ts_ms for i in (window.start, window.stop)}
    assert [e[0] for e in events(loop, "kill", "manual kill: no new orders")] == [ts[100]]
    assert [e[0] for e in events(loop, "kill", "manual kill lifted")] == [ts[160]]
    orders = {INDEX[r["ts"]] for r in rows(loop, "orders")}
    fills = {INDEX[r["ts"]] for r in rows(loop, "fills")}
    assert not orders & set(window) and not fills & set(window)
    assert len(set(units[window.start - 1 : window.stop])) == 1  # the position stays as it was
    assert all(
        signals_by_ts(loop)[ticks[i].bars[0].ts_ms]["reason"].startswith("kill switch: manual kill")
        for i in window
    )
    assert _entries(loop) & set(range(window.stop, 300))  # trading resumes after the reset
    assert not loop.protections.manual_kill


def test_kill_switch_reset_by_hand(models, cli_home) -> None:  # type: ignore[no-untyped-def]
    home = cli_home
    cfg = dataclasses.replace(
        TRUSTING, protections=dataclasses.replace(NONE, kill_accuracy_below=0.4)
    )
    # the reversal model's rolling accuracy (~0.2) fires the switch
    loop = run_ticks(cfg, models["reversal"], home, TICKS[:200])
    fired = [INDEX[e[0]] for e in events(loop, "kill", "kill switch fired")]
    assert len(fired) == 1 and loop.state.risk.killed
    assert not _entries(loop) & set(range(fired[0], 200))
    kill(account="paper", reset=True)  # `tradeloop kill --reset`
    for t in TICKS[200:300]:
        loop.on_tick(t)
    assert [INDEX[e[0]] for e in events(loop, "kill", "reset by hand")] == [200]
    assert _entries(loop) & set(range(200, 230))  # new positions again at once
    # the accuracy leg re-arms on fresh resolutions: not in the same step, but it does fire again
    refired = [INDEX[e[0]] for e in events(loop, "kill", "kill switch fired")][1:]
    assert len(refired) == 1 and refired[0] >= 200 + cfg.protections.kill_min_resolved
    assert loop.state.risk.killed


def test_kill_switch_resets_on_a_new_champion_and_nothing_else(settings, lake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from models.registry import champion

    cfg = dataclasses.replace(
        TRUSTING,
        protections=dataclasses.replace(NONE, kill_accuracy_below=0.4),
        model_check_every_steps=1,
    )
    bad = register_champion(
        lake, settings, constant_model(tmp_path / "bad.onnx", (0.9, 0.05, 0.05), 0.95)
    )
    loop = build_loop(cfg, settings.home, lookup=lambda: champion(lake, "signal"))
    it = iter(TICKS)

    def advance(n: int, *, stays_killed: bool = True) -> None:
        for _ in range(n):
            loop.on_tick(next(it))
            if stays_killed and events(loop, "kill", "fired"):
                assert loop.state.risk.killed  # once fired, it stays on

    advance(150)
    assert loop.state.risk.killed and bad in events(loop, "kill", "fired")[0][3]
    killed_at = INDEX[events(loop, "kill", "fired")[0][0]]
    advance(20)  # the same champion, looked up every step
    other = constant_model(tmp_path / "o.onnx", (0.3, 0.4, 0.3), 0.8, feature_set_version="f-x")
    refused = register_champion(lake, settings, other, fsv="f-x")
    advance(10)
    corrupt = register_champion(
        lake, settings, constant_model(tmp_path / "c.onnx", (0.3, 0.4, 0.3), 0.8)
    )
    get_model(lake, corrupt).onnx_path.write_bytes(b"not an onnx file")
    advance(10)
    assert all(
        len(events(loop, "model", f"refused new champion {m}")) == 1 for m in (refused, corrupt)
    )
    assert len(events(loop, "model", "refused new champion")) == 2
    assert loop.state.risk.killed and not events(loop, "kill", "kill switch reset")
    assert loop.manager.model_id == bad
    assert not _entries(loop) & set(range(killed_at, 190))  # no new positions all along

    good = register_champion(lake, settings, momentum_model(tmp_path / "g.onnx", -20000.0))
    advance(1, stays_killed=False)
    assert not loop.state.risk.killed
    resets = events(loop, "kill", "kill switch reset")
    assert len(resets) == 1 and f"new champion {good}" in resets[0][3]
    assert INDEX[resets[0][0]] == 190
    assert loop.feedback.resolved == 0  # the new model's rolling metrics start empty
    advance(30, stays_killed=False)
    assert _entries(loop) & set(range(190, 220))  # and it opens positions
