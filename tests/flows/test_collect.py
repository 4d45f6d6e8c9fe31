"""The `collect` flow on a real Prefect server: ccxt via the loopback exchange, files, simulated."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.feather as feather
import pytest

from flows.collect import collect
from pipelines.loopback import Fault, FaultPlan, LoopbackExchange, LoopbackServer
from pipelines.resample import resample_arrow
from pipelines.sources import wall_clock_ms
from warehouse import Settings, connect

MINUTE = 60_000


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


def _count(settings: Settings, sql: str) -> int:
    con = connect(settings, read_only=True)
    try:
        return int(con.execute(sql).fetchone()[0])  # type: ignore[index]
    finally:
        con.close()


def test_rerun_over_an_overlapping_window_fetches_only_new_candles(
    prefect_server, settings
) -> None:
    exchange = LoopbackExchange(symbols=["BTC/USDT", "ETH/USDT"])  # wall clock, simulated data
    now = wall_clock_ms()
    t0 = now - now % MINUTE - 600 * MINUTE
    common = dict(
        source="ccxt",
        exchange="binance",
        symbols=["BTC/USDT", "ETH/USDT"],
        timeframes=["1m"],
        ccxt_config={"timeout": 5000, "rateLimit": 1},
        settings=settings,
    )
    with LoopbackServer(exchange) as server:
        first = collect(
            since=_iso(t0), until=_iso(t0 + 300 * MINUTE), api_base=server.url, **common
        )
        assert first["rows_merged"] == 600
        assert exchange.candles_served == 600
        exchange.reset_counters()
        # overlaps the first window by 200 minutes and extends it by 200
        second = collect(
            since=_iso(t0 + 100 * MINUTE),
            until=_iso(t0 + 500 * MINUTE),
            api_base=server.url,
            **common,
        )
    assert exchange.candles_served == 400  # only the 200 new minutes per symbol went over the wire
    assert exchange.requests["klines"] == 2  # one page per symbol
    assert second["rows_merged"] == 400
    assert _count(settings, "SELECT count(*) FROM candles") == 1000
    assert _count(settings, "SELECT count(DISTINCT (symbol, ts)) FROM candles") == 1000
    assert _count(settings, "SELECT count(*) FROM ingestion_runs") == 4
    assert _count(settings, "SELECT sum(rows_merged) FROM ingestion_runs") == 1000


def test_auth_failure_stops_the_flow_with_a_clear_message(prefect_server, settings) -> None:
    exchange = LoopbackExchange(
        symbols=["BTC/USDT"], faults=FaultPlan(pattern=(Fault.AUTH,), endpoints=("exchangeInfo",))
    )
    with (
        LoopbackServer(exchange) as server,
        pytest.raises(RuntimeError, match="authentication failed"),
    ):
        collect(
            source="ccxt",
            exchange="binance",
            symbols=["BTC/USDT"],
            api_base=server.url,
            ccxt_config={"rateLimit": 1},
            lookback_days=0.01,
            settings=settings,
        )
    assert exchange.requests["exchangeInfo"] == 1


def test_import_every_file_through_the_gate(prefect_server, settings, candles_dir: Path) -> None:
    report = collect(source="file", exchange="binance", path=str(candles_dir), settings=settings)
    expected = sum(
        feather.read_table(p).num_rows
        for p in candles_dir.glob("*.feather")
        if "trades" not in p.name
    )
    assert _count(settings, "SELECT count(*) FROM candles") == expected
    assert _count(settings, "SELECT count(*) FROM trades") == 12_477
    assert report["rows_quarantined"] == 0
    gaps = _count(
        settings,
        "SELECT gaps FROM ingestion_runs WHERE symbol = 'UNITTEST/BTC' AND timeframe = '1m'",
    )
    assert gaps == 538  # real holes reported, not filled


def test_simulated_collect_with_resampling(prefect_server, settings) -> None:
    now = wall_clock_ms()
    until = now - now % 3_600_000 - 3_600_000
    report = collect(
        source="simulated",
        symbols=["BTC/USDT", "SOL/USDT"],
        timeframes=["1m", "1h"],
        since=_iso(until - 6 * 3_600_000),
        until=_iso(until),
        resample_from_1m=True,
        settings=settings,
    )
    assert report["rows_quarantined"] == 0
    con = connect(settings, read_only=True)
    try:
        one = con.execute(
            "SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume FROM candles "
            "WHERE timeframe = '1m' AND symbol = 'SOL/USDT' ORDER BY ts"
        ).fetch_arrow_table()
        hourly = con.execute(
            "SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume FROM candles "
            "WHERE timeframe = '1h' AND symbol = 'SOL/USDT' ORDER BY ts"
        ).fetch_arrow_table()
    finally:
        con.close()
    assert one.num_rows == 360 and hourly.num_rows == 6
    expected = resample_arrow(one, "1h", closed_until_ms=until)
    assert hourly.to_pylist() == expected.cast(hourly.schema).to_pylist()


def test_cli_import_and_option_errors(prefect_server, tmp_path, monkeypatch, candles_dir) -> None:
    from typer.testing import CliRunner

    from flows.cli import app
    from warehouse.settings import get_settings

    monkeypatch.setenv("TRADELOOP_HOME", str(tmp_path / "cli-home"))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        result = runner.invoke(
            app, ["import", str(candles_dir / "XRP_ETH-5m.feather"), "--exchange", "binance"]
        )
        assert result.exit_code == 0, result.output
        assert "binance XRP/ETH 5m: fetched 706, merged 706" in result.output
        assert "6 gaps" in result.output
        bad = runner.invoke(app, ["collect", "--source", "ccxt", "--ccxt-config", "{not json"])
        assert bad.exit_code == 2 and "--ccxt-config is not valid JSON" in bad.output
        missing = runner.invoke(app, ["import", str(tmp_path / "nowhere")])
        assert missing.exit_code == 2 and "no such file or directory" in missing.output
    finally:
        get_settings.cache_clear()


def test_cli_loopback_exchange_serves_and_stops() -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(
        app, ["loopback-exchange", "--port", "0", "--seconds", "0.3", "--fault", "429"]
    )
    assert result.exit_code == 0, result.output
    assert "loopback exchange on http://127.0.0.1:" in result.output
    bad = CliRunner().invoke(app, ["loopback-exchange", "--fault", "boom", "--seconds", "0.1"])
    assert bad.exit_code == 2 and "unknown fault" in bad.output
