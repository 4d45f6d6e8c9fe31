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
    from warehouse import get_settings

    monkeypatch.setenv("TRADELOOP_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


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
    assert bad.exit_code == 1 and "no such file" in bad.output
