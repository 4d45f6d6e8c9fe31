"""`tradeloop import` as a person types it (each command a new process): --strict, the real
futures directory into its own tables, re-imports that write nothing new, true duplicate
counts in ingestion_runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from warehouse import Settings, connect

FUTURES = Path(__file__).resolve().parents[3] / "shared" / "data" / "futures"
CANDLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "candles"
TRADELOOP = str(Path(sys.executable).with_name("tradeloop"))
XRP = "XRP/USDT:USDT"

pytestmark = pytest.mark.slow  # each import is a new process with the quality gate (~15 s)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADELOOP_", "PREFECT_"))}
    env.update(
        TRADELOOP_HOME=str(home / "tl"),
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    return env


def _import(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRADELOOP, "import", *args], env=env, capture_output=True, text=True, timeout=300
    )


def _query(home: Path, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    con = connect(Settings(home=home / "tl"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_strict_refuses_a_failing_batch_instead_of_merging_its_passing_rows(
    tmp_path: Path,
) -> None:
    frame = pl.read_ipc(CANDLES / "ETH_BTC-5m.feather").head(50)
    bad = frame.with_columns(  # one candle of 50 with high below low: 2 % > the 1 % policy
        pl.when(pl.int_range(pl.len()) == 20)
        .then(pl.col("low") / 2)
        .otherwise(pl.col("high"))
        .alias("high")
    )
    path = tmp_path / "ETH_BTC-5m.feather"
    bad.write_ipc(path)
    env = _env(tmp_path)
    strict = _import(env, str(path), "--strict")
    assert strict.returncode == 1, strict.stdout
    last = strict.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "ETH/BTC 5m" in last and "ohlc_consistent" in last
    assert "Traceback" not in strict.stderr
    assert _query(tmp_path, "SELECT count(*) FROM candles") == [(0,)]  # nothing merged
    held = _query(tmp_path, "SELECT count(*) FROM quarantine WHERE table_name = 'candles'")
    assert held == [(50,)]  # the bad row and the 49 held back with it, for inspection
    lenient = _import(env, str(path))  # without --strict: the passing rows are merged
    assert lenient.returncode == 1
    assert _query(tmp_path, "SELECT count(*) FROM candles") == [(49,)]


def test_the_futures_directory_into_its_own_tables_twice(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for p in FUTURES.glob("*.feather"):
        (data / p.name).write_bytes(p.read_bytes())
    eth = pl.read_ipc(CANDLES / "ETH_BTC-5m.feather").head(300)
    pl.concat([eth, eth.slice(100, 12)]).write_ipc(data / "ETH_BTC-5m.feather")  # 12 repeats
    env = _env(tmp_path)
    counts = (
        "SELECT (SELECT count(*) FROM candles WHERE symbol = 'XRP/USDT:USDT'), "
        "(SELECT count(*) FROM candles WHERE symbol = 'ETH/BTC'), "
        "(SELECT count(*) FROM mark_candles), (SELECT count(*) FROM funding_rates)"
    )
    for run in (1, 2):
        done = _import(env, str(data), "--exchange", "binance")
        assert done.returncode == 0, done.stderr[-2000:]
        assert _query(tmp_path, counts) == [(100, 300, 191, 91)], run
    futures = pl.read_ipc(FUTURES / "XRP_USDT_USDT-1h-futures.feather")
    stored = _query(
        tmp_path,
        f"SELECT open, high, low, close, volume FROM candles WHERE symbol = '{XRP}' ORDER BY ts",
    )
    assert stored == list(futures.select("open", "high", "low", "close", "volume").iter_rows())
    runs = _query(
        tmp_path,
        "SELECT symbol, timeframe, count(DISTINCT run_id), min(duplicates_dropped), "
        "max(duplicates_dropped), max(rows_fetched) FROM ingestion_runs GROUP BY ALL ORDER BY ALL",
    )
    assert runs == [
        ("ETH/BTC", "5m", 2, 12, 12, 300),
        (XRP, "1h", 2, 0, 0, 100),
        (XRP, "1h mark_candles", 2, 0, 0, 100),
        (XRP, "8h funding_rates", 2, 0, 0, 91),
        (XRP, "8h mark_candles", 2, 0, 0, 91),
    ]
    second = _query(
        tmp_path,
        "SELECT message FROM ingestion_runs WHERE timeframe LIKE '% %' AND run_id = "
        "(SELECT run_id FROM ingestion_runs ORDER BY started_at DESC LIMIT 1)",
    )
    assert second and all("0 written" in m for (m,) in second)  # a re-import writes nothing
