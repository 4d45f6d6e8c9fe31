"""Candle ingest into the DuckLake warehouse vs a plain DuckDB-file insert of the same table."""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from benchmarks.results import record
from warehouse import Settings, connect, migrate, upsert

SIZES = (1_000, 100_000, 1_000_000)
REPEATS = 3


def candle_table(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    start_ms = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, rows)))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0, 5e-4, rows)) * close
    return pa.table(
        {
            "exchange": pa.array(["bench"] * rows),
            "symbol": pa.array(["BTC/USDT"] * rows),
            "timeframe": pa.array(["1m"] * rows),
            "ts": pa.array(start_ms + 60_000 * np.arange(rows), pa.timestamp("ms", tz="UTC")),
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.gamma(2.0, 10.0, rows),
        }
    )


def _time_lake(table: pa.Table, workdir: Path) -> tuple[float, float]:
    """Seconds for a first upsert into an empty lake, and for re-upserting the same batch."""
    con = connect(Settings(home=workdir))
    migrate(con)
    started = time.perf_counter()
    result = upsert(con, "candles", table)
    first = time.perf_counter() - started
    assert result.inserted == table.num_rows
    started = time.perf_counter()
    again = upsert(con, "candles", table)
    repeat = time.perf_counter() - started
    assert again.unchanged == table.num_rows
    con.close()
    return first, repeat


def _time_plain_duckdb(table: pa.Table, workdir: Path) -> float:
    workdir.mkdir(parents=True)
    con = duckdb.connect(str(workdir / "plain.duckdb"))
    con.execute(
        "CREATE TABLE candles (exchange VARCHAR, symbol VARCHAR, timeframe VARCHAR, "
        "ts TIMESTAMPTZ, open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE)"
    )
    started = time.perf_counter()
    con.register("batch", table)
    con.execute("INSERT INTO candles SELECT * FROM batch")
    con.execute("CHECKPOINT")
    elapsed = time.perf_counter() - started
    con.close()
    return elapsed


def main() -> None:
    rows_out = [
        "| rows | DuckLake upsert (rows/s) | plain DuckDB file insert (rows/s) | ratio lake/plain "
        "| re-upsert of the same batch (rows/s) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in SIZES:
        table = candle_table(size)
        lake_s, repeat_s, plain_s = [], [], []
        for attempt in range(REPEATS):
            with tempfile.TemporaryDirectory() as tmp:
                first, repeat = _time_lake(table, Path(tmp) / "lake")
                lake_s.append(first)
                repeat_s.append(repeat)
                plain_s.append(_time_plain_duckdb(table, Path(tmp) / f"plain{attempt}"))
        lake, plain, again = (statistics.median(x) for x in (lake_s, plain_s, repeat_s))
        rows_out.append(
            f"| {size:,} | {size / lake:,.0f} | {size / plain:,.0f} | {plain / lake:.2f} "
            f"| {size / again:,.0f} |"
        )
        print(rows_out[-1], flush=True)
    record(
        "Warehouse: candle ingest",
        "Median of 3 runs. Each run upserts an Arrow table of 1m candles into an empty "
        "migrated DuckLake (SQLite catalog), through `warehouse.upsert`: validation, the "
        "changed-rows anti-join, the write token, DELETE of changed keys and INSERT, in one "
        "transaction. In the same process it inserts the same table into a plain DuckDB "
        "file (INSERT + CHECKPOINT, no validation, no key handling). The last column re-writes "
        "the same batch: nothing is written and no snapshot is made. "
        "Goal: at least 1M rows/s for the 1M batch.\n\n" + "\n".join(rows_out),
    )


if __name__ == "__main__":
    main()
