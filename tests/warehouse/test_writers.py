"""Writes are validated, idempotent and replace revised rows."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from tests.warehouse.workers import EPOCH, candle_batch
from warehouse import SchemaError, upsert


def _count(con: duckdb.DuckDBPyConnection, exchange: str = "test") -> int:
    return con.execute("SELECT count(*) FROM candles WHERE exchange = ?", [exchange]).fetchone()[0]


def _snapshot(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone()[0]


def test_same_batch_twice_leaves_one_copy_and_no_new_snapshot(
    lake: duckdb.DuckDBPyConnection,
) -> None:
    batch = candle_batch(list(range(100)))
    first = upsert(lake, "candles", batch)
    before = _snapshot(lake)
    second = upsert(lake, "candles", batch)
    assert (first.inserted, first.replaced, first.unchanged) == (100, 0, 0)
    assert (second.inserted, second.replaced, second.unchanged) == (0, 0, 100)
    assert _count(lake) == 100
    assert _snapshot(lake) == before


def test_revised_candle_replaces_the_old_one(lake: duckdb.DuckDBPyConnection) -> None:
    upsert(lake, "candles", candle_batch(list(range(10)), price=100.0))
    revised = candle_batch([3], price=200.0)
    result = upsert(lake, "candles", revised)
    assert (result.inserted, result.replaced) == (0, 1)
    assert _count(lake) == 10
    closes = lake.execute(
        "SELECT close FROM candles WHERE ts = ?", [EPOCH + dt.timedelta(minutes=3)]
    ).fetchall()
    assert closes == [(200.5,)]


def test_overlapping_batches_merge_by_key(lake: duckdb.DuckDBPyConnection) -> None:
    upsert(lake, "candles", candle_batch(list(range(0, 60))))
    result = upsert(lake, "candles", candle_batch(list(range(30, 90))))
    assert (result.inserted, result.unchanged) == (30, 30)
    assert _count(lake) == 90


def _with_column(batch: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return batch.set_column(batch.column_names.index(name), name, values)


BAD_INPUTS = {
    "missing column": (lambda b: b.drop_columns(["close"]), ["'close'", "missing"]),
    "extra column": (
        lambda b: b.append_column("colour", pa.array(["red"] * b.num_rows)),
        ["colour", "unexpected"],
    ),
    "wrong type": (
        lambda b: _with_column(b, "open", pa.array(["1.0"] * b.num_rows)),
        ["'open'", "expected a number"],
    ),
    "null in key": (
        lambda b: _with_column(
            b, "symbol", pa.array([None] + ["BTC/USDT"] * (b.num_rows - 1), pa.string())
        ),
        ["'symbol'", "null"],
    ),
    "naive timestamp": (
        lambda b: _with_column(b, "ts", b.column("ts").cast(pa.timestamp("ms"))),
        ["'ts'", "naive"],
    ),
    "null in NOT NULL value": (
        lambda b: _with_column(b, "volume", pa.array([None] * b.num_rows, pa.float64())),
        ["'volume'", "null"],
    ),
    "duplicate key in batch": (
        lambda b: pa.concat_tables([b, b.slice(0, 1)]),
        ["duplicate", "ts"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_column_and_problem_and_writes_nothing(
    lake: duckdb.DuckDBPyConnection, case: str
) -> None:
    corrupt, expected_words = BAD_INPUTS[case]
    with pytest.raises(SchemaError) as error:
        upsert(lake, "candles", corrupt(candle_batch(list(range(5)))))
    message = str(error.value)
    assert "candles" in message
    for word in expected_words:
        assert word in message, f"{word!r} not in {message!r}"
    assert _count(lake) == 0


def test_nan_in_a_float_key_is_rejected(lake: duckdb.DuckDBPyConnection) -> None:
    lake.execute("CREATE TABLE t_float_key (k DOUBLE NOT NULL, v DOUBLE)")
    lake.execute("INSERT INTO table_keys VALUES ('t_float_key', 'k')")
    lake.execute("INSERT INTO write_tokens VALUES ('t_float_key', 0)")
    with pytest.raises(SchemaError, match="'k' has NaN"):
        upsert(lake, "t_float_key", pa.table({"k": [1.0, float("nan")], "v": [1.0, 2.0]}))
    assert lake.execute("SELECT count(*) FROM t_float_key").fetchone()[0] == 0


def test_timestamps_in_other_zones_are_stored_as_the_same_instant(
    lake: duckdb.DuckDBPyConnection,
) -> None:
    batch = candle_batch([0])
    in_tokyo = _with_column(
        batch, "ts", batch.column("ts").cast(pa.timestamp("ms", tz="Asia/Tokyo"))
    )
    upsert(lake, "candles", in_tokyo)
    assert lake.execute("SELECT ts FROM candles").fetchone()[0] == EPOCH
    assert upsert(lake, "candles", batch).unchanged == 1


minute_lists = st.lists(
    st.integers(min_value=0, max_value=50), min_size=1, max_size=20, unique=True
)


_example_ids = itertools.count()


@hyp_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.tuples(minute_lists, st.floats(1, 1000)), min_size=1, max_size=4))
def test_upserts_equal_last_write_wins_and_repeat_is_a_no_op(
    lake: duckdb.DuckDBPyConnection, batches: list[tuple[list[int], float]]
) -> None:
    # hypothesis reuses the fixture's lake across examples: each example gets its own exchange
    exchange = f"prop{next(_example_ids)}"
    expected: dict[int, float] = {}
    for minutes, price in batches:
        upsert(lake, "candles", candle_batch(minutes, exchange=exchange, price=price))
        expected.update({m: price + 0.5 for m in minutes})
    last_minutes, last_price = batches[-1]
    again = upsert(lake, "candles", candle_batch(last_minutes, exchange=exchange, price=last_price))
    assert again.written == 0
    rows = lake.execute(
        "SELECT ts, close FROM candles WHERE exchange = ? ORDER BY ts", [exchange]
    ).fetchall()
    got = {int((ts - EPOCH).total_seconds() // 60): close for ts, close in rows}
    assert got == expected


def test_many_small_revisions_lose_no_rows(lake: duckdb.DuckDBPyConnection) -> None:
    """Regression: with data inlining on, duckdb 1.4.4's ducklake lost rows in this pattern."""
    import random

    rng = random.Random(1)
    for i in range(60):
        exchange = f"rev{i % 7}"
        minutes = rng.sample(range(51), rng.randint(1, 20))
        price = rng.uniform(1, 1000)
        upsert(lake, "candles", candle_batch(minutes, exchange=exchange, price=price))
        stored = lake.execute(
            "SELECT count(*) FROM candles WHERE exchange = ? AND close = ?", [exchange, price + 0.5]
        ).fetchone()[0]
        assert stored == len(minutes), f"step {i}: {stored} of {len(minutes)} rows visible"


_rows = st.lists(
    st.tuples(
        st.sampled_from(["A/USDT", "B/USDT", "C/USDT"]),
        st.integers(min_value=0, max_value=12),  # minute
        st.sampled_from([1.0, 2.0]),  # close
    ),
    min_size=1,
    max_size=15,
    unique_by=lambda r: (r[0], r[1]),
)


@hyp_settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.tuples(_rows, st.randoms()), min_size=1, max_size=3))
def test_counts_follow_what_is_stored_in_any_row_order(
    lake: duckdb.DuckDBPyConnection, batches: list[tuple[list[tuple[str, int, float]], Any]]
) -> None:
    """Inserted, replaced and unchanged rows are counted against what is stored, whatever the
    order of the batch's rows (series one after another or mixed)."""
    exchange = f"count{next(_example_ids)}"
    stored: dict[tuple[str, int], float] = {}
    for rows, rnd in batches:
        rows = list(rows)
        rnd.shuffle(rows)
        n = len(rows)
        batch = pa.table(
            {
                "exchange": [exchange] * n,
                "symbol": [s for s, _, _ in rows],
                "timeframe": ["1m"] * n,
                "ts": pa.array(
                    [EPOCH + dt.timedelta(minutes=m) for _, m, _ in rows],
                    pa.timestamp("ms", tz="UTC"),
                ),
                **{c: pa.array([p for *_, p in rows]) for c in ("open", "high", "low", "close")},
                "volume": pa.array([1.0] * n),
            }
        )
        result = upsert(lake, "candles", batch)
        known = [(s, m) in stored for s, m, _ in rows]
        same = [stored.get((s, m)) == p for s, m, p in rows]
        assert (result.inserted, result.replaced, result.unchanged) == (
            known.count(False),
            sum(k and not s for k, s in zip(known, same, strict=True)),
            same.count(True),
        )
        stored.update({(s, m): p for s, m, p in rows})
    got = lake.execute(
        "SELECT symbol, ts, close FROM candles WHERE exchange = ?", [exchange]
    ).fetchall()
    assert {(s, int((ts - EPOCH).total_seconds() // 60)): c for s, ts, c in got} == stored


@hyp_settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(
        st.lists(
            st.tuples(st.integers(0, 6), st.sampled_from([None, "a", "b"])),
            min_size=1,
            max_size=8,
            unique_by=lambda r: r[0],
        ),
        min_size=1,
        max_size=3,
    )
)
def test_a_null_value_is_a_value_like_any_other(
    lake: duckdb.DuckDBPyConnection, batches: list[list[tuple[int, str | None]]]
) -> None:
    """A row whose nullable column goes from null to text or back is replaced; the same null
    again is unchanged (a table keyed by text alone: no time range to filter on)."""
    prefix = f"null{next(_example_ids)}-"
    stored: dict[str, str | None] = {}
    for rows in batches:
        ids = [f"{prefix}{i}" for i, _ in rows]
        batch = pa.table(
            {
                "quarantine_id": ids,
                "table_name": ["candles"] * len(rows),
                "expectation": ["rule"] * len(rows),
                "reason": ["why"] * len(rows),
                "column_name": pa.array([v for _, v in rows], pa.string()),
            }
        )
        result = upsert(lake, "quarantine", batch)
        known = [i in stored for i in ids]
        same = [i in stored and stored[i] == v for i, (_, v) in zip(ids, rows, strict=True)]
        assert (result.inserted, result.replaced, result.unchanged) == (
            known.count(False),
            sum(k and not s for k, s in zip(known, same, strict=True)),
            same.count(True),
        )
        stored.update({i: v for i, (_, v) in zip(ids, rows, strict=True)})
    got = lake.execute(
        "SELECT quarantine_id, column_name FROM quarantine WHERE quarantine_id LIKE ?",
        [prefix + "%"],
    ).fetchall()
    assert dict(got) == stored


def test_a_duplicate_key_is_refused_wherever_it_stands(lake: duckdb.DuckDBPyConnection) -> None:
    """Next to its twin, in another series' run, or last: the batch is refused, nothing is
    written (a batch in series runs is checked without grouping, any other by grouping)."""
    a = candle_batch(list(range(10)), symbol="A/USDT")
    b = candle_batch(list(range(10)), symbol="B/USDT")
    copy = a.slice(4, 1)
    for parts in (
        [a.slice(0, 5), copy, a.slice(5), b],
        [a, b.slice(0, 5), copy, b.slice(5)],
        [a, b, copy],
        [b.slice(0, 3), a, b.slice(3)],  # no duplicate key, but B's run comes twice
    ):
        batch = pa.concat_tables(parts)
        if copy in parts:
            with pytest.raises(SchemaError, match="duplicate"):
                upsert(lake, "candles", batch)
            assert _count(lake) == 0
        else:
            assert upsert(lake, "candles", batch).inserted == 20
