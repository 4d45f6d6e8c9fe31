"""The `serve` flow on a real (temporary) Prefect server, and the `tradeloop serve` CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

SLICE = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "candles" / "UNITTEST_BTC-1m.feather"
)


@pytest.fixture
def home(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TRADELOOP_HOME", str(tmp_path / "home"))  # clears the settings cache
    return tmp_path / "home"


def test_serve_flow_replays_under_the_account_limit(prefect_server, home) -> None:  # type: ignore[no-untyped-def]
    from prefect.client.orchestration import get_client

    from flows.serve import serve
    from warehouse import connect, get_settings

    result = serve(replay=str(SLICE), max_candles=150, account="acct1", heartbeat_every=50)
    assert result["candles"] == 150
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name("serve-acct1")
    assert limit.limit == 1 and limit.active_slots == 0  # released at the end
    assert (home / "serve" / "acct1.heartbeat").exists()
    con = connect(get_settings(), read_only=True)
    n = con.execute("SELECT count(*) FROM equity WHERE account = 'acct1'").fetchone()[0]
    con.close()
    assert n == 150
    # a second run resumes from the snapshot: no candle is processed twice
    again = serve(replay=str(SLICE), max_candles=50, account="acct1")
    assert again["resumed_from_ts_ms"] is not None and again["candles"] == 50


def test_cli_serve_exits_zero_and_kill_and_dashboard(home) -> None:  # type: ignore[no-untyped-def]
    from flows.cli import app

    runner = CliRunner()
    out = runner.invoke(
        app,
        ["serve", "--replay", str(SLICE), "--speed", "max", "--max-candles", "120", "--no-prefect"],
    )
    assert out.exit_code == 0, out.output
    assert "served 120 candles" in out.output
    out = runner.invoke(app, ["kill"])
    assert out.exit_code == 0 and (home / "serve" / "paper.kill").exists()
    out = runner.invoke(app, ["dashboard"])
    assert out.exit_code == 0, out.output
    assert "inference: n=120" in out.output and "p99=" in out.output
    bad = runner.invoke(app, ["serve", "--replay", "NO/SUCH", "--no-prefect"])
    # a usage error: the symbol is not stored (here the warehouse holds no candles at all)
    assert bad.exit_code == 2 and "holds no candles" in bad.output, bad.output


def test_follow_serves_candles_that_arrive_later(
    prefect_server, home, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The long-running mode: after the stored candles it waits, then serves only the new
    ones (resuming from the last served candle), until ``max_candles``."""
    from types import SimpleNamespace

    import polars as pl

    import flows.serve as serve_module
    from warehouse import connect, get_settings

    candles = pl.read_ipc(SLICE)
    source = tmp_path / SLICE.name
    candles.head(100).write_ipc(source)
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the next candles land while the loop waits
        waits.append(seconds)
        candles.head(100 + 100 * len(waits)).write_ipc(source)

    monkeypatch.setattr(serve_module, "time", SimpleNamespace(sleep=sleep))
    result = serve_module.serve(
        replay=str(source), account="follow", follow_every_s=30.0, max_candles=180
    )
    assert result["candles"] == 180 and waits == [30.0]
    con = connect(get_settings(), read_only=True)
    n, distinct = con.execute(
        "SELECT count(*), count(DISTINCT ts) FROM equity WHERE account = 'follow'"
    ).fetchone()
    con.close()
    assert n == distinct == 180  # no candle served twice


def test_degradation_emits_the_event_the_retrain_trigger_waits_for(  # type: ignore[no-untyped-def]
    prefect_server, home, monkeypatch
) -> None:
    """Degradation is reported once, as the Prefect event `tradeloop.model.degraded` on
    `tradeloop.model.signal` (what deployments/prefect.yaml's `retrain/daily` trigger matches);
    the flow starts no deployment itself."""
    import time

    import yaml
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    import flows.serve as serve_module
    from trading.loop import RunSummary

    def fake_replay(settings, source, *, on_retrain, **kwargs):  # type: ignore[no-untyped-def]
        on_retrain("rolling accuracy 0.31 < 0.45 for 20 resolved predictions")
        return RunSummary(1, 1, None, 10_000.0, {}, None, 0)

    monkeypatch.setattr(serve_module, "serve_replay", fake_replay)
    serve_module.serve(replay=str(SLICE), account="acct-degraded")

    trigger = next(
        d["triggers"][0]
        for d in yaml.safe_load(
            (Path(__file__).resolve().parents[2] / "deployments" / "prefect.yaml").read_text()
        )["deployments"]
        if d["entrypoint"] == "flows/retrain.py:retrain"
    )
    assert trigger["expect"] == [serve_module.DEGRADED_EVENT]
    assert trigger["match"]["prefect.resource.id"] == "tradeloop.model.*"

    flt = EventFilter(
        event=EventNameFilter(name=[serve_module.DEGRADED_EVENT]),
        resource=EventResourceFilter(id=["tradeloop.model.signal"]),
    )
    events: list = []  # type: ignore[type-arg]
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            events = [
                e
                for e in client.read_events(filter=flt, limit=50).events
                if e.resource.get("tradeloop.account") == "acct-degraded"
            ]
            if events:
                break
            time.sleep(0.5)
    assert len(events) == 1, "no tradeloop.model.degraded event reached the server"
    event = events[0]
    assert event.payload["reason"].startswith("rolling accuracy 0.31")
    assert any(r.id == "tradeloop.account.acct-degraded" for r in event.related)
