"""The `collect` flow on a real Prefect server: ccxt via the loopback exchange, files, simulated."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pytest

from expectations.gate import GatePolicy
from flows.collect import ARTIFACT_KEY, collect
from pipelines.loopback import Fault, FaultPlan, LoopbackExchange, LoopbackServer
from pipelines.resample import resample_arrow
from pipelines.sources import wall_clock_ms
from tests.support.artifacts import artifact_texts
from tests.support.batches import candle_rows
from warehouse import Settings, connect

MINUTE = 60_000


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


def _rows(settings: Settings, sql: str) -> list[tuple]:
    con = connect(settings, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _count(settings: Settings, sql: str) -> int:
    return int(_rows(settings, sql)[0][0])


def _artifact_for(run_id: str) -> str:
    """The markdown of this run's ``collect-quality`` artifact, read back from the server."""
    matching = [text for text in artifact_texts(ARTIFACT_KEY) if run_id in text]
    assert len(matching) == 1, f"{len(matching)} {ARTIFACT_KEY} artifacts name run {run_id}"
    return matching[0]


BAD_ROW = 20  # its high is below its low


def _csv_with_one_bad_row(folder: Path, n: int = 50) -> Path:
    """``n`` consistent 1m candles of BTC/USDT as a CSV file; row BAD_ROW has high < low."""
    rows = candle_rows(n)
    rows["high"][BAD_ROW] = rows["low"][BAD_ROW] - 5.0
    lines = ["date,open,high,low,close,volume"]
    for i in range(n):
        ts = rows["ts"][i].strftime("%Y-%m-%dT%H:%M:%S")
        values = (rows[c][i] for c in ("open", "high", "low", "close", "volume"))
        lines.append(",".join([ts, *map(str, values)]))
    path = folder / "BTC_USDT-1m.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_file_import_failing_the_policy_names_symbol_rule_and_count(
    prefect_server, settings, tmp_path: Path
) -> None:
    path = _csv_with_one_bad_row(tmp_path)
    strict = GatePolicy(max_bad_fraction=0.01)  # 1 bad row of 50 is 2 %: the batch fails
    with pytest.raises(RuntimeError) as failure:
        collect(source="file", exchange="binance", path=str(path), policy=strict)
    message = str(failure.value)
    assert message.startswith("collect failed for: BTC/USDT 1m: FAILED candles BTC/USDT 1m:")
    assert "(ohlc_consistent: 1)" in message and "1 bad row(s) exceed the policy limit" in message
    # the series is recorded as failed with the same message, and the artifact still went out
    [(run_id, status, recorded)] = _rows(
        settings, "SELECT run_id, status, message FROM ingestion_runs"
    )
    assert status == "failed" and "ohlc_consistent: 1" in recorded
    markdown = _artifact_for(run_id)
    assert "**FAILED**" in markdown and "ohlc_consistent: 1" in markdown


def test_file_import_within_the_policy_quarantines_the_bad_row(
    prefect_server, settings, tmp_path: Path
) -> None:
    path = _csv_with_one_bad_row(tmp_path)
    tolerant = GatePolicy(max_bad_fraction=0.05)
    report = collect(source="file", exchange="binance", path=str(path), policy=tolerant)
    assert (report["rows_fetched"], report["rows_merged"], report["rows_quarantined"]) == (
        50,
        49,
        1,
    )
    bad_ts = dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=BAD_ROW)
    quarantined = _rows(settings, "SELECT symbol, ts, expectation, column_name FROM quarantine")
    assert [(s, t.astimezone(dt.UTC), e) for s, t, e, _ in quarantined] == [
        ("BTC/USDT", bad_ts, "ohlc_consistent")
    ]
    assert "high" in quarantined[0][3] and "low" in quarantined[0][3]
    assert _count(settings, f"SELECT count(*) FROM candles WHERE ts = '{bad_ts.isoformat()}'") == 0
    assert _count(settings, "SELECT count(*) FROM candles") == 49
    [(fetched, merged, held, status)] = _rows(
        settings,
        "SELECT rows_fetched, rows_merged, rows_quarantined, status FROM ingestion_runs",
    )
    assert fetched == merged + held and (fetched, held, status) == (50, 1, "ok")
    # the run's artifact: the series table and the gate's row for the batch
    markdown = _artifact_for(report["run_id"])
    assert markdown == report["summary"]
    assert "| binance | BTC/USDT | 1m | ok | 50 | 49 | 1 |" in markdown
    assert "## Quality gate" in markdown and "(ohlc_consistent: 1)" in markdown


def test_failed_resampled_batch_names_symbol_rule_and_count(prefect_server, settings) -> None:
    from warehouse import migrate, upsert

    since = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    bad_minute = since + dt.timedelta(minutes=30)  # the first minute of a 5m bucket
    con = connect(settings)
    try:
        migrate(con)
        # a 1m candle stored around the gate; resume leaves it, so the 5m bucket it opens
        # has open 1.5 below its low 2.0
        bad = {
            "exchange": ["simulated"],
            "symbol": ["BTC/USDT"],
            "timeframe": ["1m"],
            "ts": pa.array([bad_minute], pa.timestamp("ms", tz="UTC")),
            "open": [1.5],
            "high": [1.0],
            "low": [2.0],
            "close": [1.5],
            "volume": [1.0],
        }
        upsert(con, "candles", pa.table(bad))
    finally:
        con.close()
    with pytest.raises(RuntimeError) as failure:
        collect(
            source="simulated",
            symbols=["BTC/USDT"],
            timeframes=["1m", "5m"],
            since=since.isoformat(),
            until=(since + dt.timedelta(hours=1)).isoformat(),
            resample_from_1m=True,
        )
    message = str(failure.value)
    assert "BTC/USDT 5m: FAILED candles BTC/USDT 5m: 12 rows in, 11 merged" in message
    assert "(ohlc_consistent: 1)" in message
    recorded = _rows(settings, "SELECT status, message FROM ingestion_runs WHERE timeframe = '5m'")
    assert recorded[0][0] == "failed" and "ohlc_consistent: 1" in recorded[0][1]


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
        # generous: a retried request (a timeout on a loaded CI machine) would be counted twice
        ccxt_config={"timeout": 30000, "rateLimit": 1},
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
        )
    assert exchange.requests["exchangeInfo"] == 1


def test_import_every_file_through_the_gate(prefect_server, settings, candles_dir: Path) -> None:
    report = collect(source="file", exchange="binance", path=str(candles_dir))
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

    monkeypatch.setenv("TRADELOOP_HOME", str(tmp_path / "cli-home"))
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


@pytest.mark.slow  # a fresh GX project and two cycles: about a minute on 2 busy cores
def test_cli_follow_runs_cycles_in_one_process_and_checks_its_options(
    tmp_path, monkeypatch
) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.setenv("TRADELOOP_HOME", str(tmp_path / "cli-home"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    runner = CliRunner()
    args = ["collect", "-s", "FOL/USDT", "-t", "1m", "--lookback-days", "0.02"]
    result = runner.invoke(app, [*args, "--follow-every", "0.2", "--max-cycles", "2"])
    assert result.exit_code == 0, result.output
    assert ": 2 cycles, " in result.output and "0 cycles failed" in result.output
    settings = Settings(home=tmp_path / "cli-home")
    con = connect(settings)
    try:
        cycles = con.execute(
            "SELECT cycle, series, status FROM ingestion_runs WHERE symbol = '*' ORDER BY cycle"
        ).fetchall()
        stored = con.execute("SELECT count(*), count(DISTINCT ts) FROM candles").fetchone()
        featured = con.execute("SELECT count(*) FROM features").fetchone()
    finally:
        con.close()
    assert [(c, n) for c, n, _ in cycles] == [(1, 1), (2, 1)]
    # 0.02 days = 28.8 minutes back from now: 27 or 28 closed 1m candles by the second of the
    # minute it starts at (28 was wrong late in a minute), each stored once
    assert stored is not None and stored[0] == stored[1] >= 27
    assert featured == (stored[0],)
    for bad, says in (
        ([*args, "--follow-every", "0"], "--follow-every must be > 0"),
        ([*args, "--max-cycles", "2"], "--max-cycles N needs --follow-every"),
        ([*args, "--follow-every", "5", "--resample"], "not with --source file, --resample"),
    ):
        refused = runner.invoke(app, bad)
        assert refused.exit_code == 2 and says in refused.output, refused.output
