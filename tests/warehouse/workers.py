"""Processes the tests start against one warehouse: `python -m tests.warehouse.workers ROLE HOME`.

The catalog comes from the environment (TRADELOOP_CATALOG_URL; unset = SQLite under HOME).

Roles:
  write HOME SEED BATCHES   upsert BATCHES overlapping candle batches (keys in 0..2999 minutes)
  read HOME SECONDS         SELECT count(*) in a loop; print the number of reads; fail on error
  big HOME ROWS             print "begin", then upsert ROWS candles for exchange 'killme'
"""

from __future__ import annotations

import datetime as dt
import random
import sys
import time
from pathlib import Path

import pyarrow as pa

from warehouse import Settings, connect, upsert

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


def write(home: Path, seed: int, batches: int) -> None:
    con = connect(Settings(home=home))
    for start in batch_starts(seed, batches):
        upsert(con, "candles", candle_batch(list(range(start, start + BATCH_ROWS))))


def read(home: Path, seconds: float) -> None:
    con = connect(Settings(home=home), read_only=True)
    reads = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        con.execute("SELECT count(*) FROM candles").fetchone()
        reads += 1
    print(reads)


def big(home: Path, rows: int) -> None:
    con = connect(Settings(home=home))
    batch = candle_batch(list(range(rows)), exchange="killme")
    print("begin", flush=True)
    upsert(con, "candles", batch)
    print("committed", flush=True)


if __name__ == "__main__":
    role, home = sys.argv[1], Path(sys.argv[2])
    if role == "write":
        write(home, int(sys.argv[3]), int(sys.argv[4]))
    elif role == "read":
        read(home, float(sys.argv[3]))
    elif role == "big":
        big(home, int(sys.argv[3]))
    else:
        raise SystemExit(f"unknown role {role!r}")
