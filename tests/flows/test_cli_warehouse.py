"""The real `tradeloop` CLI on a warehouse in a temporary TRADELOOP_HOME: init, sql, the shell.

Every command runs as a subprocess of the installed entry point (``.venv/bin/tradeloop``), and
the attach statements are run by the real ``duckdb`` CLI (the duckdb-cli package).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from warehouse import Settings, connect, migrate, upsert
from warehouse.migrate import available_migrations

BIN = Path(sys.executable).parent
TRADELOOP = BIN / "tradeloop"
DUCKDB = BIN / "duckdb"
T0 = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
# what the filled warehouse holds: symbol -> (ts of the last candle, its close, its volume)
LAST = {
    "BTC/USDT": (T0 + dt.timedelta(minutes=2), 64_002.5, 12.25),
    "ETH/USDT": (T0 + dt.timedelta(minutes=1), 3_101.5, 40.0),
}
QUERY = (
    "SELECT symbol, ts, close, volume, NULL AS nothing, 'a,\"b\"' AS tricky "
    "FROM latest_candles ORDER BY symbol"
)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELOOP_")}
    return {**env, "TRADELOOP_HOME": str(home)}


def tradeloop(
    home: Path, *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TRADELOOP), *args],
        env=_env(home),
        cwd=cwd or home.parent,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _candles(symbol: str, rows: list[tuple[int, float, float]]) -> pa.Table:
    n = len(rows)
    return pa.table(
        {
            "exchange": ["binance"] * n,
            "symbol": [symbol] * n,
            "timeframe": ["1m"] * n,
            "ts": pa.array(
                [T0 + dt.timedelta(minutes=m) for m, _, _ in rows], pa.timestamp("ms", tz="UTC")
            ),
            "open": [c - 1 for _, c, _ in rows],
            "high": [c + 1 for _, c, _ in rows],
            "low": [c - 2 for _, c, _ in rows],
            "close": [c for _, c, _ in rows],
            "volume": [v for _, _, v in rows],
        }
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A warehouse with a few candles, written in-process through warehouse.upsert."""
    home = tmp_path_factory.mktemp("cli") / "home"
    con = connect(Settings(home=home))
    migrate(con)
    upsert(con, "candles", _candles("BTC/USDT", [(0, 64_000.5, 10.0), (2, 64_002.5, 12.25)]))
    upsert(con, "candles", _candles("BTC/USDT", [(1, 64_001.5, 11.0)]))
    upsert(con, "candles", _candles("ETH/USDT", [(0, 3_100.5, 30.0), (1, 3_101.5, 40.0)]))
    con.close()
    yield home


def test_init_creates_the_data_dir_and_migrates(tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    done = tradeloop(home, "init", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    versions = [m.version for m in available_migrations()]
    assert f"schema version {versions[-1]}; applied now: {versions}" in done.stdout
    assert str(home.resolve()) in done.stdout and "catalog: sqlite" in done.stdout
    assert (home / "lake" / "catalog.sqlite").is_file()
    assert (home / "lake" / "data").is_dir()
    con = connect(Settings(home=home), read_only=True)
    recorded = con.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert [v for (v,) in recorded] == versions
    con.close()

    again = tradeloop(home, "init", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "applied now: nothing" in again.stdout


def _csv(text: str) -> list[dict[str, Any]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:  # CSV has no types: numbers as floats, NULL as the empty field
        row["close"], row["volume"] = float(row["close"]), float(row["volume"])
        row["nothing"] = None if row["nothing"] == "" else row["nothing"]
    return rows


@pytest.mark.parametrize("fmt, parse", [("csv", _csv), ("json", json.loads)])
def test_sql_machine_readable(
    home: Path, fmt: str, parse: Callable[[str], list[dict[str, Any]]]
) -> None:
    done = tradeloop(home, "sql", QUERY, "--format", fmt)
    assert done.returncode == 0, done.stderr
    rows = parse(done.stdout)
    assert [r["symbol"] for r in rows] == sorted(LAST)
    for row in rows:
        ts, close, volume = LAST[row["symbol"]]
        assert dt.datetime.fromisoformat(row["ts"]) == ts
        assert (row["close"], row["volume"], row["nothing"]) == (close, volume, None)
        assert row["tricky"] == 'a,"b"'


def test_sql_table_and_read_only(home: Path) -> None:
    done = tradeloop(home, "sql", "SELECT count(*) AS candle_count FROM candles")
    assert done.returncode == 0, done.stderr
    assert "candle_count" in done.stdout
    assert re.search(r"(?<![\d.])5(?![\d.])", done.stdout), done.stdout  # the count, not "15"

    refused = tradeloop(home, "sql", "DELETE FROM candles")
    assert refused.returncode == 2
    assert refused.stderr.startswith("error:") and "DELETE statement" in refused.stderr
    assert "Traceback" not in refused.stderr
    con = connect(Settings(home=home), read_only=True)
    assert con.execute("SELECT count(*) FROM candles").fetchone() == (5,)
    con.close()


def _escapes(home: Path, outside: Path) -> list[tuple[str, str]]:
    """Each way out of a read-only SQL session that was reproduced on the first release."""
    lake = home / "lake"
    return [
        (
            f"ATTACH 'ducklake:sqlite:{lake}/catalog.sqlite' AS rw (DATA_PATH '{lake}/data/')",
            "ATTACH statement",
        ),
        (f"ATTACH '{lake}/catalog.sqlite' AS cat (TYPE sqlite)", "ATTACH statement"),
        (f"COPY (SELECT * FROM candles) TO '{outside}'", "COPY statement"),
        ("SELECT * FROM read_csv('/etc/passwd')", "Permission Error"),
        (f"SELECT * FROM read_parquet('{home}/../*.parquet')", "Permission Error"),
        ("SET threads = 1", "SET statement"),
        ("LOAD json", "LOAD statement"),
        ("INSTALL spatial", "LOAD statement"),
        ("SELECT 1; DELETE FROM candles", "one statement at a time"),
        ("CALL ducklake_expire_snapshots('lake', older_than => now())", "CALL statement"),
        ("CREATE TABLE x AS SELECT 1", "CREATE statement"),
    ]


def test_sql_refuses_every_escape_and_the_lake_is_unchanged(home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "copied.csv"
    con = connect(Settings(home=home), read_only=True)
    before = con.execute("SELECT count(*), max(close) FROM candles").fetchone()
    files_before = sorted(p.name for p in (home / "lake").rglob("*"))
    con.close()
    for query, expected in _escapes(home, outside):
        done = tradeloop(home, "sql", query)
        assert done.returncode != 0, (query, done.stdout)
        assert expected in done.stderr, (query, done.stderr)
        assert "Traceback" not in done.stderr
    assert not outside.exists()
    con = connect(Settings(home=home), read_only=True)
    assert con.execute("SELECT count(*), max(close) FROM candles").fetchone() == before
    con.close()
    assert sorted(p.name for p in (home / "lake").rglob("*")) == files_before
    # the same connection still reads: the lock-down confines, it does not break queries
    described = tradeloop(home, "sql", "DESCRIBE candles", "-f", "csv")
    assert described.returncode == 0 and "close,DOUBLE" in described.stdout, described.stderr


def test_print_attach_runs_in_the_real_duckdb_cli(home: Path, tmp_path: Path) -> None:
    printed = tradeloop(home, "sql", "--print-attach")
    assert printed.returncode == 0, printed.stderr
    assert "READ_ONLY" in printed.stdout and "INSTALL" not in printed.stdout
    query = "SELECT symbol, close FROM latest_candles ORDER BY symbol;"
    # another directory and no TRADELOOP_* variables: the statements stand on their own
    done = subprocess.run(
        [str(DUCKDB), "-csv"],
        input=printed.stdout + "\n" + query + "\nINSERT INTO write_tokens VALUES ('x', 0);\n",
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRADELOOP_")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert rows == [["symbol", "close"]] + [[s, str(LAST[s][1])] for s in sorted(LAST)], done.stderr
    assert "read-only mode" in done.stderr, "the printed attach is read-only"


def test_sql_without_a_query_opens_the_duckdb_shell_on_the_lake(home: Path) -> None:
    script = (
        ".mode csv\n"
        "SELECT count(*) AS n, max(close) AS top FROM candles WHERE symbol = 'BTC/USDT';\n"
        "DELETE FROM candles;\n"
    )
    done = tradeloop(home, "sql", stdin=script)
    assert done.stdout.splitlines() == ["n,top", "3,64002.5"], done.stderr
    assert "read-only mode" in done.stderr
    con = connect(Settings(home=home), read_only=True)
    assert con.execute("SELECT count(*) FROM candles").fetchone() == (5,)
    con.close()
