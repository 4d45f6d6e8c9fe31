"""One gate call over many series gives what one call per series gave (issue 16 item 3), and an
all-bad batch costs at most twice a clean one (issue 18 item 11).

Real candle files with faults injected (a different mix per series, one series over the
policy's limit), the series' rows interleaved into one batch: the batched call must quarantine
exactly the rows, write exactly the candles and the ``quality_results`` rows, and return the
same per-series ``GateResult`` as separate calls on two fresh warehouses.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from expectations.gate import GatePolicy, GateResult, gate_and_merge, gate_series
from tests.support.batches import grid_batch, real_candle_batch
from warehouse import Settings, connect, migrate

ROWS = 1_500  # per series: enough for gaps and rolling sigmas, small enough to stay fast


def _with(batch: pa.Table, column: str, index: int, value: Any) -> pa.Table:
    values = batch[column].to_pylist()
    values[index] = value
    position = batch.schema.get_field_index(column)
    return batch.set_column(position, column, pa.array(values, batch.schema.field(column).type))


def _faulty(path: Path, kind: int) -> pa.Table:
    """The first ``ROWS`` rows of a real file with faults of mix ``kind`` injected."""
    batch = real_candle_batch(path).slice(0, ROWS)
    if kind == 0:  # few faults: passes the policy
        batch = _with(batch, "low", 10, -1.0)
        batch = _with(batch, "close", 20, float("nan"))
        batch = _with(batch, "close", 21, 1e9)  # several rules on one row: ohlc and extreme
    elif kind == 1:  # duplicates (identical and conflicting), order and alignment
        batch = pa.concat_tables([batch, batch.slice(100, 1), batch.slice(200, 1)])
        batch = _with(batch, "close", ROWS + 1, batch["close"][200].as_py() * 1.001)
        ts = batch["ts"].to_pylist()
        ts[300], ts[301] = ts[301], ts[300]
        ts[400] = ts[400] + dt.timedelta(seconds=7)
        batch = batch.set_column(3, "ts", pa.array(ts, batch.schema.field("ts").type))
    elif kind == 2:  # many bad rows: fails the policy, its passing rows are held back
        for i in range(50, 90):
            batch = _with(batch, "volume", i, float("inf") if i % 2 else -3.0)
    else:  # a gap, and a candle in the future of the validation clock
        batch = pa.concat_tables([batch.slice(0, 500), batch.slice(530)])
        batch = _with(batch, "ts", batch.num_rows - 1, dt.datetime(2031, 1, 1, tzinfo=dt.UTC))
    return batch


def _interleave(batches: list[pa.Table], seed: int) -> pa.Table:
    """The rows of every batch in one table, series mixed, each series' own order kept."""
    owner = np.concatenate([np.full(b.num_rows, i) for i, b in enumerate(batches)])
    np.random.default_rng(seed).shuffle(owner)
    whole = pa.concat_tables(batches)
    offsets = np.concatenate([[0], np.cumsum([b.num_rows for b in batches])])
    seen = np.zeros(len(batches), dtype=np.int64)
    order = np.empty(len(owner), dtype=np.int64)
    for position, i in enumerate(owner):
        order[position] = offsets[i] + seen[i]
        seen[i] += 1
    return whole.take(pa.array(order))


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    return sorted(con.execute(sql).fetchall(), key=repr)


def _results(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    """quality_results without the clock and the write counts (one write per call)."""
    out = []
    for row in con.execute(
        "SELECT validation_id, run_id, table_name, suite, exchange, symbol, timeframe, success, "
        "rows_in, rows_merged, rows_quarantined, warnings_json, details_json "
        "FROM quality_results"
    ).fetchall():
        details = json.loads(row[-1])
        for key in ("elapsed_s", "write", "series_in_call"):
            details.pop(key, None)
        out.append((*row[:-1], json.dumps(details, sort_keys=True)))
    return sorted(out, key=repr)


@pytest.mark.slow  # two fresh GX projects: 20-40 s on 2 busy cores
@pytest.mark.parametrize("quarantine_batch_on_failure", [False, True])
def test_batched_gate_equals_one_call_per_series_on_real_files(
    candles_dir: Path, tmp_path: Path, quarantine_batch_on_failure: bool
) -> None:
    files = sorted(candles_dir.glob("*-[0-9]*[mhd].feather"))
    assert len(files) == 5
    batches = [_faulty(path, i % 4) for i, path in enumerate(files)]
    policy = GatePolicy(
        max_bad_fraction=0.01, quarantine_batch_on_failure=quarantine_batch_on_failure
    )
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    apart, together = Settings(home=tmp_path / "apart"), Settings(home=tmp_path / "together")
    con_a, con_b = connect(apart), connect(together)
    migrate(con_a)
    migrate(con_b)
    try:
        separate: list[GateResult] = [
            gate_and_merge(con_a, "candles", b, settings=apart, run_id="r", policy=policy, now=now)
            for b in batches
        ]
        batch = _interleave(batches, seed=3)
        batched = gate_series(
            con_b, "candles", batch, settings=together, run_id="r", policy=policy, now=now
        )

        # the faults did what they were meant to: every series quarantined rows, one failed
        assert all(r.rows_quarantined for r in separate)
        assert [r.success for r in separate] == [True, True, False, True, True]  # kind 2
        assert any(r.warnings for r in separate)
        # the same per-series results (ids hash each series' rows), series in first-seen order
        assert sorted(batched, key=repr) == sorted(separate, key=repr)
        first_seen = list(
            dict.fromkeys(
                zip(batch["symbol"].to_pylist(), batch["timeframe"].to_pylist(), strict=True)
            )
        )
        assert [r.message.removeprefix("FAILED ").split(":")[0] for r in batched] == [
            f"candles {symbol} {timeframe}" for symbol, timeframe in first_seen
        ]
        for sql in (
            "SELECT quarantine_id, run_id, table_name, exchange, symbol, timeframe, ts, "
            "expectation, column_name, reason, row_json FROM quarantine",
            "SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume FROM candles",
        ):
            assert _rows(con_a, sql) == _rows(con_b, sql)
        assert _results(con_a) == _results(con_b)
        assert len(_results(con_b)) == len(batches)
        # validating the same batch again adds nothing (same ids)
        gate_series(con_b, "candles", batch, settings=together, run_id="r", policy=policy, now=now)
        assert _results(con_a) == _results(con_b)
        assert (
            con_b.execute("SELECT count(*) FROM quarantine").fetchone()
            == con_a.execute("SELECT count(*) FROM quarantine").fetchone()
        )
    finally:
        con_a.close()
        con_b.close()


def test_an_all_bad_batch_quarantines_every_row_with_its_reason_and_merges_none(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    """Every row off the minute grid: each is quarantined with its reason, nothing merged.
    What it costs beside a clean batch (goal at most 2x) is a benchmark:
    ``python -m benchmarks.bench_gate_all_bad``."""
    n = 20_000
    policy = GatePolicy(max_bad_fraction=1.0)
    result = gate_and_merge(
        lake, "candles", grid_batch(n, "BAD/USDT", off_grid=True), settings=settings, policy=policy
    )
    assert (result.rows_quarantined, result.rows_merged) == (n, 0), result.message
    reasons = lake.execute(
        "SELECT count(*), count(DISTINCT row_json), min(reason) FROM quarantine "
        "WHERE expectation = 'ts_aligned'"
    ).fetchone()
    assert reasons is not None and reasons[:2] == (n, n)
    assert reasons[2].startswith("ts is not aligned to the timeframe (ts=2024-01-01T")
    assert lake.execute("SELECT count(*) FROM candles WHERE symbol = 'BAD/USDT'").fetchone() == (0,)


def test_row_text_a_column_at_a_time_equals_row_by_row() -> None:
    """The quarantine's row JSON and shown values, rendered per column, are byte for byte
    what ``json.dumps``/``show_value`` give row by row (the quarantine id hashes the JSON)."""
    import decimal

    import polars as pl

    from expectations.rowjson import row_json, show_value, shown

    rng = np.random.default_rng(0)
    n = 2_000
    floats = rng.normal(0, 1, n) * 10.0 ** rng.integers(-30, 30, n)
    floats[:9] = [0.0, -0.0, 1e-4, 9.99e15, 1e16, np.nan, np.inf, -np.inf, 5e-324]
    table = pa.table(
        {
            "symbol": pa.array(
                [None if i % 7 == 0 else ["BTC/USDT", 'é"x\\'][i % 2] for i in range(n)]
            ),
            "close": pa.array([None if i % 11 == 0 else v for i, v in enumerate(floats)]),
            "f32": pa.array(floats.astype(np.float32)),
            "ts": pa.array(rng.integers(-(10**12), 4 * 10**12, n), pa.timestamp("ms", tz="UTC")),
            "naive": pa.array(rng.integers(0, 10**15, n), pa.timestamp("us")),
            "ns": pa.array(rng.integers(0, 10**18, n), pa.timestamp("ns", tz="UTC")),
            "i": pa.array([None if i % 5 == 0 else i * 2**33 for i in range(n)]),
            "b": pa.array([None if i % 3 == 0 else bool(i % 2) for i in range(n)]),
            "lst": pa.array([None if i % 4 == 0 else [float(i), np.nan] for i in range(n)]),
            "dec": pa.array([decimal.Decimal(i) / 8 for i in range(n)]),
            "nothing": pa.array([None] * n, pa.null()),
        }
    )
    assert row_json(table) == [
        json.dumps(r, default=str, sort_keys=True) for r in table.to_pylist()
    ]
    frame = pl.from_arrow(table.select(["symbol", "close", "ts", "i", "b", "lst"]))
    assert isinstance(frame, pl.DataFrame)
    for column in frame.columns:
        assert shown(frame[column]).to_list() == [show_value(v) for v in frame[column].to_list()]
