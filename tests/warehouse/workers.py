"""Processes the tests start against one warehouse: `python -m tests.warehouse.workers ROLE HOME`.

The catalog comes from the environment (TRADELOOP_CATALOG_URL; unset = SQLite under HOME).

Roles:
  write HOME SEED BATCHES   upsert BATCHES overlapping candle batches (keys in 0..2999 minutes)
                            at the price writer_price(SEED), so writers of one key differ
  read HOME SECONDS         SELECT count(*) in a loop; print the number of reads; fail on error
  big HOME ROWS [PAUSE]     print "begin", then upsert ROWS candles for exchange 'killme';
                            PAUSE (a kill point for tests):
                              before-commit: inside upsert's transaction, after its INSERT and
                                just before COMMIT, print "inserted N" (the batch's rows as that
                                transaction sees them) and sleep
                              after-commit: print "committed" after upsert returns and sleep
  migrate HOME              migrate; print the versions this process applied (JSON)
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, cast

import duckdb
import pyarrow as pa

from warehouse import Settings, connect, migrate, upsert

EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
KEY_SPACE = 3000


def candle_batch(minutes: list[int], *, exchange: str = "test", price: float = 100.0) -> pa.Table:
    n = len(minutes)
    ts = [EPOCH + dt.timedelta(minutes=m) for m in minutes]
    return pa.table(
        {
            "exchange": [exchange] * n,
            "symbol": ["BTC/USDT"] * n,
            "timeframe": ["1m"] * n,
            "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "open": [price] * n,
            "high": [price + 1] * n,
            "low": [price - 1] * n,
            "close": [price + 0.5] * n,
            "volume": [1.0 + m for m in minutes],
        }
    )


BATCH_ROWS = 400


def batch_starts(seed: int, batches: int) -> list[int]:
    """The first minute of each batch a writer with this seed writes (tests recompute the keys)."""
    rng = random.Random(seed)
    return [rng.randrange(0, KEY_SPACE - BATCH_ROWS) for _ in range(batches)]


def writer_price(seed: int) -> float:
    """The open price of every candle the writer with this seed writes."""
    return 100.0 + seed


def write(home: Path, seed: int, batches: int) -> None:
    con = connect(Settings(home=home))
    price = writer_price(seed)
    for start in batch_starts(seed, batches):
        upsert(con, "candles", candle_batch(list(range(start, start + BATCH_ROWS)), price=price))


def read(home: Path, seconds: float) -> None:
    con = connect(Settings(home=home), read_only=True)
    reads = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        con.execute("SELECT count(*) FROM candles").fetchone()
        reads += 1
    print(reads)


PAUSE_S = 120.0  # longer than any test waits: the test kills the worker during the pause


class PauseBeforeCommit:
    """A real connection whose COMMIT, after an INSERT, first reports and sleeps (a kill point).

    ``upsert`` runs unchanged on the real connection it wraps; only the COMMIT of a transaction
    that has inserted is held back, so a kill there lands after the whole batch was written
    (Parquet files included) and before anything was committed.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, exchange: str) -> None:
        self._con = con
        self._exchange = exchange
        self._inserted = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)

    def execute(self, query: str, parameters: object = None) -> duckdb.DuckDBPyConnection:
        statement = query.strip().upper()
        if statement == "COMMIT" and self._inserted:
            seen = self._con.execute(
                "SELECT count(*) FROM candles WHERE exchange = ?", [self._exchange]
            ).fetchone()
            print(f"inserted {seen[0] if seen else 0}", flush=True)
            time.sleep(PAUSE_S)
        result = self._con.execute(query, parameters)
        if statement.startswith("INSERT INTO"):
            self._inserted = True
        elif statement == "BEGIN TRANSACTION":
            self._inserted = False
        return result


def big(home: Path, rows: int, pause: str | None = None) -> None:
    con = connect(Settings(home=home))
    batch = candle_batch(list(range(rows)), exchange="killme")
    print("begin", flush=True)
    if pause == "before-commit":
        con = cast(duckdb.DuckDBPyConnection, PauseBeforeCommit(con, "killme"))
    elif pause not in (None, "after-commit"):
        raise SystemExit(f"unknown pause {pause!r}")
    upsert(con, "candles", batch)
    print("committed", flush=True)
    if pause == "after-commit":
        time.sleep(PAUSE_S)


if __name__ == "__main__":
    role, home = sys.argv[1], Path(sys.argv[2])
    if role == "write":
        write(home, int(sys.argv[3]), int(sys.argv[4]))
    elif role == "read":
        read(home, float(sys.argv[3]))
    elif role == "big":
        big(home, int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    elif role == "migrate":
        print(json.dumps(migrate(connect(Settings(home=home)))))
    else:
        raise SystemExit(f"unknown role {role!r}")
