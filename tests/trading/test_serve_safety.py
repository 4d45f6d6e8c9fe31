"""Serving safety (issue 18): a snapshot resumes only the series it was taken on (item 7), a new
champion lifts only the accuracy kill (item 8), and stale data is judged on the wall clock with
a heartbeat that is not refreshed while no candle arrives (item 10). Real candles, real ONNX
models, the real warehouse."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.commands.serve import kill
from tests.support.cli import run_tradeloop
from tests.support.data import SHARED_CANDLES
from tests.trading.serve_harness import TICKS, MemoryRegistry, build_loop, events
from tests.trading.serve_support import SYMBOL, candle_table, constant_model, real_frame
from trading.loop import LoopConfig, default_limits
from trading.protections import ProtectionConfig
from trading.service import heartbeat_file, serve_replay
from trading.state import SeriesMismatch
from warehouse import Settings, Warehouse, get_settings, upsert

NO_PROTECTIONS = ProtectionConfig(
    kill_accuracy_below=None,
    stoploss_guard_count=None,
    drawdown_lock_fraction=None,
    cooldown_candles=0,
)


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """TRADELOOP_HOME for commands called in-process (their settings are cached)."""
    home = tmp_path / "home"
    monkeypatch.setenv("TRADELOOP_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


# ---------------------------------------------------------------- item 7: the snapshot's series


def test_a_resume_on_another_series_is_refused_in_one_line(cli_home: Path) -> None:
    xrp = SHARED_CANDLES / "XRP_ETH-5m.feather"
    eth = SHARED_CANDLES / "ETH_BTC-5m.feather"
    first = run_tradeloop(["serve", "--replay", str(xrp), "--max-candles", "40"])
    assert first.exit_code == 0 and "served 40 candles" in first.output, first.output
    # the same account, another series: it printed "served 0 candles", exit 0
    other = run_tradeloop(["serve", "--replay", str(eth), "--max-candles", "40"])
    assert other.exit_code == 1, other.output
    errors = [x for x in other.output.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in other.output, other.output  # one line
    assert errors[0].startswith("error: account 'paper' holds the state of")
    assert "XRP/ETH 5m" in errors[0] and "ETH/BTC 5m" in errors[0] and "--account" in errors[0]
    # under its own account it serves; the first series resumes where it stopped
    own = run_tradeloop(["serve", "--replay", str(eth), "--max-candles", "40", "--account", "e"])
    assert own.exit_code == 0 and "served 40 candles" in own.output, own.output
    again = run_tradeloop(["serve", "--replay", str(xrp), "--max-candles", "10"])
    assert again.exit_code == 0 and "served 10 candles" in again.output, again.output


def test_the_snapshot_records_source_symbols_and_timeframe(settings: Settings, lake) -> None:  # type: ignore[no-untyped-def]
    with Warehouse(settings).session() as con:
        upsert(con, "candles", candle_table(real_frame(120)), settings=settings)
        upsert(con, "candles", candle_table(real_frame(120), "kraken"), settings=settings)
    config = LoopConfig(account="a", exchange="binance")
    serve_replay(settings, SYMBOL, config=config, max_candles=60)
    state = json.loads(
        lake.execute("SELECT state_json FROM loop_state WHERE account = 'a'").fetchone()[0]
    )
    assert state["series"] == {
        "source": "warehouse",
        "exchange": "binance",
        "symbols": [SYMBOL],
        "timeframe": "1m",
    }
    kraken = dataclasses.replace(config, exchange="kraken")
    with pytest.raises(SeriesMismatch, match="1m on binance.*1m on kraken"):
        serve_replay(settings, SYMBOL, config=kraken)


# ---------------------------------------------------------------- item 8: kills


def _drawdown_loop(home: Path, models: Path):  # type: ignore[no-untyped-def]
    """A loop whose constant buy model holds a position until a 0.1 % drawdown kills it."""
    registry = MemoryRegistry()
    registry.promote(constant_model(models / "buy.onnx", (0.9, 0.05, 0.05), 0.95), "buy")
    limits = dataclasses.replace(default_limits(), max_drawdown_fraction=0.001)
    cfg = LoopConfig(limits=limits, protections=NO_PROTECTIONS, model_check_every_steps=1)
    return build_loop(cfg, home, registry), registry


def test_a_new_champion_leaves_a_drawdown_kill_and_its_peak(cli_home: Path, tmp_path: Path) -> None:
    loop, registry = _drawdown_loop(cli_home, tmp_path)
    it = iter(TICKS)
    while not loop.state.risk.killed:
        loop.on_tick(next(it))
    risk = loop.state.risk
    assert risk.kill_reason.startswith("drawdown")
    peak = risk.peak_equity
    registry.promote(constant_model(tmp_path / "new.onnx", (0.8, 0.1, 0.1), 0.9), "new")
    for _ in range(5):
        loop.on_tick(next(it))
    assert loop.manager.model_id == "new"
    assert risk.killed and risk.peak_equity == peak  # before: lifted, peak set to -inf
    assert not events(loop, "kill", "kill switch reset")
    assert events(loop, "kill", "drawdown kill stays on until `tradeloop kill --reset`")
    kill(account="paper", reset=True)  # `tradeloop kill --reset`
    loop.on_tick(next(it))
    assert events(loop, "kill", "reset by hand")
    assert not loop.state.risk.killed


def test_a_new_champion_lifts_an_accuracy_kill_and_keeps_the_peak(
    cli_home: Path, tmp_path: Path
) -> None:
    registry = MemoryRegistry()
    # always "buy" on candles that mostly do not rise: the rolling accuracy kill fires
    registry.promote(constant_model(tmp_path / "buy.onnx", (0.9, 0.05, 0.05), 0.95), "buy")
    cfg = LoopConfig(
        protections=dataclasses.replace(NO_PROTECTIONS, kill_accuracy_below=0.4),
        model_check_every_steps=1,
    )
    loop = build_loop(cfg, cli_home, registry)
    it = iter(TICKS)
    while not loop.state.risk.killed:
        loop.on_tick(next(it))
    assert loop.state.risk.kill_reason.startswith("rolling accuracy")
    peak = loop.state.risk.peak_equity
    assert math.isfinite(peak)
    registry.promote(constant_model(tmp_path / "new.onnx", (0.8, 0.1, 0.1), 0.9), "new")
    loop.on_tick(next(it))
    assert not loop.state.risk.killed
    assert events(loop, "kill", "kill switch reset: new champion new")
    assert loop.state.risk.peak_equity >= peak  # the drawdown is still measured from it


# ---------------------------------------------------------------- item 10: stale data


def test_follow_alerts_stale_data_on_the_wall_clock_and_the_heartbeat_keeps_its_time(
    settings: Settings,
    lake,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    history = real_frame(150)  # candles of years ago: the collector is "dead"
    with Warehouse(settings).session() as con:
        upsert(con, "candles", candle_table(history), settings=settings)
    beat = heartbeat_file(settings.home, "follow")
    seen: list[str] = []

    def wait(seconds: float) -> None:  # each idle wait: no candle arrives
        seen.append(beat.read_text())

    summary = serve_replay(
        settings,
        SYMBOL,
        config=LoopConfig(account="follow", exchange="binance"),
        follow_every_s=30.0,
        sleep=wait,
        max_candles=10**6,
        resume=False,
        max_polls=4,
    )
    assert summary.candles == 150
    last_ms = int(history["ts"].dt.epoch("ms")[-1])
    alerts = [
        r[0]
        for r in lake.execute(
            "SELECT message FROM loop_events WHERE account = 'follow' AND kind = 'alert'"
        ).fetchall()
    ]
    assert any(a.startswith(f"stale data: no closed candle since {last_ms}") for a in alerts)
    # the heartbeat says which candle it last saw, and an idle loop does not rewrite it
    data = json.loads(seen[-1])
    assert data["last_candle_ts_ms"] == last_ms and data["steps"] == 150
    assert data["last_candle_at"].startswith(str(history["ts"][-1].date()))
    assert data["stale_symbols"] == [SYMBOL]
    assert len(set(seen[1:])) == 1  # the same file at every idle wait after the alert
    monkeypatch.setenv("TRADELOOP_HOME", str(settings.home))
    shown = run_tradeloop(["dashboard", "--account", "follow"])
    assert shown.exit_code == 0, shown.output
    assert f"last candle {data['last_candle_at']}; stale data: {SYMBOL}" in shown.output
