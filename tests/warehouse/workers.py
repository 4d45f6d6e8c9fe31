"""Processes the tests start against one warehouse: `python -m tests.warehouse.workers ROLE HOME`.

The catalog comes from the environment (TRADELOOP_CATALOG_URL; unset = SQLite under HOME).

Roles:
  write HOME SEED BATCHES   upsert BATCHES overlapping candle batches (keys in 0..2999 minutes)
                            at the price writer_price(SEED), so writers of one key differ
  read HOME STOPFILE        print "reading" after its first SELECT count(*), then read in a loop
                            until STOPFILE exists; then one last read; print the number of
                            reads and the last count; fail on error (the test, not a clock,
                            says when to stop: the reads span the writes whatever the load)
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


def candle_values(minute: int, price: float) -> tuple[float, float, float, float, float]:
    """(open, high, low, close, volume) of the candle at ``minute`` written at ``price``: every
    value follows from the two, so a row mixing two writers' values is detectable."""
    return price, price + 1, price - 1, price + 0.5, 1.0 + minute


def candle_batch(
    minutes: list[int],
    *,
    exchange: str = "test",
    symbol: str = "BTC/USDT",
    timeframe: str = "1m",
    price: float = 100.0,
) -> pa.Table:
    n = len(minutes)
    ts = [EPOCH + dt.timedelta(minutes=m) for m in minutes]
    values = list(zip(*(candle_values(m, price) for m in minutes), strict=True)) or [()] * 5
    return pa.table(
        {
            "exchange": [exchange] * n,
            "symbol": [symbol] * n,
            "timeframe": [timeframe] * n,
            "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            **{
                c: pa.array(list(v), pa.float64())
                for c, v in zip(("open", "high", "low", "close", "volume"), values, strict=True)
            },
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


def assert_one_writer_per_key(
    settings: Settings, seeds: list[int], batches: int, *, exchange: str = "test"
) -> None:
    """Every key some writer wrote is there once, whole, with one of its writers' values."""
    writers_of: dict[int, set[float]] = {}
    for seed in seeds:
        for start in batch_starts(seed, batches):
            for minute in range(start, start + BATCH_ROWS):
                writers_of.setdefault(minute, set()).add(writer_price(seed))
    con = connect(settings, read_only=True)
    stored = con.execute(
        "SELECT ts, open, high, low, close, volume FROM candles WHERE exchange = ?", [exchange]
    ).fetchall()
    con.close()
    rows = [((ts - EPOCH) // dt.timedelta(minutes=1), *values) for ts, *values in stored]
    minutes = [row[0] for row in rows]
    assert len(minutes) == len(set(minutes)), "a key is there twice"
    assert set(minutes) == set(writers_of), "keys are missing or unexpected"
    for minute, open_, high, low, close, volume in rows:
        # one writer's complete row: candle_values derives every value from the writer's price
        assert open_ in writers_of[minute], f"minute {minute}: price {open_} from no writer"
        assert (open_, high, low, close, volume) == candle_values(minute, open_), (
            f"minute {minute}: values of different writers mixed in one row"
        )
    overlapping = sum(1 for prices in writers_of.values() if len(prices) > 1)
    assert overlapping > 0, "the test needs keys that several writers write"


def write(home: Path, seed: int, batches: int) -> None:
    con = connect(Settings(home=home))
    price = writer_price(seed)
    for start in batch_starts(seed, batches):
        upsert(con, "candles", candle_batch(list(range(start, start + BATCH_ROWS)), price=price))


def read(home: Path, stop_file: Path) -> None:
    con = connect(Settings(home=home), read_only=True)
    con.execute("SELECT count(*) FROM candles").fetchone()
    reads = 1
    print("reading", flush=True)
    while not stop_file.exists():
        con.execute("SELECT count(*) FROM candles").fetchone()
        reads += 1
    row = con.execute("SELECT count(*) FROM candles").fetchone()
    print(reads + 1, row[0] if row else None)


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
        read(home, Path(sys.argv[3]))
    elif role == "big":
        big(home, int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    elif role == "migrate":
        print(json.dumps(migrate(connect(Settings(home=home)))))
    else:
        raise SystemExit(f"unknown role {role!r}")
