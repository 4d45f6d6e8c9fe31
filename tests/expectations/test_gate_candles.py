"""The quality gate on candles: each class of bad input is quarantined, the rest merged."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from expectations.gate import GatePolicy, QualityGateError, gate_and_merge
from tests.support.batches import START, candle_rows, to_arrow
from warehouse import Settings

N = 10
Rows = dict[str, list[Any]]


def _nan_price(r: Rows) -> Rows:
    r["open"][3] = float("nan")
    return r


def _negative_price(r: Rows) -> Rows:
    r["low"][4] = -1.0
    return r


def _high_below_low(r: Rows) -> Rows:
    r["high"][5] = r["low"][5] - 5.0
    return r


def _inf_price(r: Rows) -> Rows:
    # +inf passes "> 0" and keeps high >= close, so only a finiteness rule catches it
    r["high"][4] = float("inf")
    r["close"][4] = float("inf")
    return r


def _inf_volume(r: Rows) -> Rows:
    r["volume"][6] = float("inf")
    return r


def _conflicting_duplicate(r: Rows) -> Rows:
    r["ts"][7] = r["ts"][6]
    return r


def _out_of_order(r: Rows) -> Rows:
    for values in r.values():
        values.append(values.pop(2))  # row 2 moved to the end: t0 t1 t3 .. t9 t2
    return r


def _misaligned(r: Rows) -> Rows:
    r["ts"][3] = r["ts"][3] + dt.timedelta(seconds=30)
    return r


def _future(r: Rows) -> Rows:
    future = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(days=2)
    r["ts"][N - 1] = future
    return r


def _string_in_numeric(r: Rows) -> Rows:
    r["close"] = [str(v) for v in r["close"]]
    r["close"][2] = "abc"
    return r


# case -> (corruption, quarantined input rows, rule expected in quarantine.expectation)
CASES: dict[str, tuple[Callable[[Rows], Rows], set[int], str]] = {
    "nan_price": (_nan_price, {3}, "not_null"),
    "negative_price": (_negative_price, {4}, "price_positive"),
    "inf_price": (_inf_price, {4}, "finite"),
    "inf_volume": (_inf_volume, {6}, "finite"),
    "high_below_low": (_high_below_low, {5}, "ohlc_consistent"),
    "duplicate_key": (_conflicting_duplicate, {6, 7}, "key_unique"),
    "out_of_order": (_out_of_order, {N - 1}, "ts_increasing"),
    "misaligned_ts": (_misaligned, {3}, "ts_aligned"),
    "future_ts": (_future, {N - 1}, "ts_not_future"),
    "string_in_numeric": (_string_in_numeric, {2}, "type_coercion"),
}


def _stored(lake: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    return lake.execute(
        "SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume "
        "FROM candles ORDER BY ts"
    ).fetchall()


def _expected(rows: Rows, keep: list[int]) -> list[tuple[Any, ...]]:
    names = ["exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]
    out = [tuple(float(rows[c][i]) if c in names[4:] else rows[c][i] for c in names) for i in keep]
    return sorted(out, key=lambda r: r[3])


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_rows_are_quarantined_and_the_rest_merged_untouched(
    case: str, lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    corrupt, bad, rule = CASES[case]
    rows = corrupt(candle_rows(N))
    batch = to_arrow(rows)

    result = gate_and_merge(lake, "candles", batch, settings=settings, run_id="r1")

    assert result.rows_in == batch.num_rows
    assert result.rows_quarantined == len(bad)
    assert result.rows_merged == batch.num_rows - len(bad)
    assert result.rows_in == result.rows_merged + result.rows_quarantined
    # the message counts rows per rule (a row breaking several OHLC pairs counts once)
    assert f"{rule}: {len(bad)}" in result.message and "BTC/USDT" in result.message

    quarantined = lake.execute(
        "SELECT expectation, column_name, reason, row_json FROM quarantine "
        "WHERE table_name = 'candles'"
    ).fetchall()
    assert len(quarantined) == len(bad)
    for expectation, _column, reason, row_json in quarantined:
        assert rule in expectation.split(",")
        assert reason
        assert json.loads(row_json)["symbol"] == "BTC/USDT"

    # the passing rows are merged exactly as given (the string column parsed to numbers)
    keep = [i for i in range(batch.num_rows) if i not in bad]
    assert _stored(lake) == _expected(rows if case != "string_in_numeric" else _numeric(rows), keep)

    counts = lake.execute(
        "SELECT rows_in, rows_merged, rows_quarantined FROM quality_results "
        "WHERE validation_id = ?",
        [result.validation_id],
    ).fetchall()
    assert counts == [(result.rows_in, result.rows_merged, result.rows_quarantined)]


def _numeric(rows: Rows) -> Rows:
    out = dict(rows)
    out["close"] = [float(v) if v != "abc" else None for v in rows["close"]]
    return out


def test_string_in_numeric_names_the_column_and_value(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    gate_and_merge(lake, "candles", to_arrow(_string_in_numeric(candle_rows(N))), settings=settings)
    column, reason = lake.execute("SELECT column_name, reason FROM quarantine").fetchone() or (
        "",
        "",
    )
    assert column == "close"
    assert "'abc'" in reason and "not a number" in reason


def test_infinite_values_are_named_by_column_and_fail_the_batch(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    result = gate_and_merge(
        lake, "candles", to_arrow(_inf_price(candle_rows(N))), settings=settings
    )
    assert not result.success  # 1 of 10 rows > the default 1 %
    # one row (high and close both inf) counts once
    assert "BTC/USDT" in result.message and "(finite: 1)" in result.message
    row = lake.execute("SELECT expectation, column_name, reason FROM quarantine").fetchone()
    assert row is not None
    expectation, column, reason = row
    assert (expectation, column) == ("finite", "high,close")
    assert "high=inf" in reason and "close=inf" in reason


def test_identical_duplicate_keeps_the_first_copy(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    rows = candle_rows(N)
    for values in rows.values():
        values.append(values[4])
    result = gate_and_merge(lake, "candles", to_arrow(rows), settings=settings)
    assert (result.rows_merged, result.rows_quarantined) == (N, 1)
    assert _stored(lake) == _expected(candle_rows(N), list(range(N)))


def test_empty_batch_records_a_result_and_merges_nothing(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    empty = to_arrow(candle_rows(0))
    result = gate_and_merge(lake, "candles", empty, settings=settings)
    assert (result.rows_in, result.rows_merged, result.rows_quarantined) == (0, 0, 0)
    assert result.success
    assert any("empty batch" in w for w in result.warnings)
    assert lake.execute("SELECT count(*) FROM candles").fetchone() == (0,)
    assert lake.execute(
        "SELECT rows_in FROM quality_results WHERE validation_id = ?", [result.validation_id]
    ).fetchall() == [(0,)]
    failing = gate_and_merge(
        lake, "candles", empty, settings=settings, policy=GatePolicy(empty_batch_fails=True)
    )
    assert not failing.success


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_missing_or_extra_columns_quarantine_the_batch(
    change: str, lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    batch = to_arrow(candle_rows(N))
    if change == "missing":
        batch = batch.drop_columns(["volume"])
    else:
        batch = batch.append_column("funding_rate", pa.array([0.1] * N))
    result = gate_and_merge(lake, "candles", batch, settings=settings)
    assert not result.success
    assert (result.rows_merged, result.rows_quarantined) == (0, N)
    assert ("volume" if change == "missing" else "funding_rate") in result.message
    reasons = lake.execute("SELECT DISTINCT expectation, reason FROM quarantine").fetchall()
    assert len(reasons) == 1 and reasons[0][0] == "schema"
    assert ("missing" if change == "missing" else "unexpected") in reasons[0][1]
    assert lake.execute("SELECT count(*) FROM candles").fetchone() == (0,)


def test_extra_columns_can_be_dropped_by_policy(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    batch = to_arrow(candle_rows(N)).append_column("funding_rate", pa.array([0.1] * N))
    result = gate_and_merge(
        lake, "candles", batch, settings=settings, policy=GatePolicy(extra_columns="drop")
    )
    assert result.success and result.rows_merged == N
    assert any("funding_rate" in w for w in result.warnings)


def test_policy_fails_the_batch_with_a_message_naming_symbol_rule_and_count(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    batch = to_arrow(_negative_price(candle_rows(N)))
    result = gate_and_merge(lake, "candles", batch, settings=settings)
    assert not result.success  # 1 of 10 bad > 1 %
    assert "BTC/USDT" in result.message and "price_positive: 1" in result.message
    with pytest.raises(QualityGateError, match="price_positive"):
        result.raise_for_failure()
    tolerant = gate_and_merge(
        lake, "candles", batch, settings=settings, policy=GatePolicy(max_bad_fraction=0.2)
    )
    assert tolerant.success


def test_failed_batch_can_be_held_back_whole(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    batch = to_arrow(_negative_price(candle_rows(N)))
    policy = GatePolicy(quarantine_batch_on_failure=True)
    result = gate_and_merge(lake, "candles", batch, settings=settings, policy=policy)
    assert (result.success, result.rows_merged, result.rows_quarantined) == (False, 0, N)
    assert lake.execute("SELECT count(*) FROM candles").fetchone() == (0,)


def test_unclosed_candle_is_held_without_failing(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    # An explicit clock half-way through the last bar: judged against the wall clock, the
    # last bar counted as closed whenever the test ran within the skew of a minute's end.
    this_minute = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    rows = candle_rows(N, start=this_minute - dt.timedelta(minutes=N - 1))
    now = this_minute + dt.timedelta(seconds=30)
    result = gate_and_merge(lake, "candles", to_arrow(rows), settings=settings, now=now)
    assert result.success
    assert (result.rows_merged, result.rows_quarantined) == (N - 1, 1)
    assert lake.execute("SELECT expectation FROM quarantine").fetchall() == [("candle_closed",)]


def test_revalidating_a_batch_adds_no_quarantine_rows(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    batch = to_arrow(_conflicting_duplicate(_nan_price(candle_rows(N))))
    first = gate_and_merge(lake, "candles", batch, settings=settings, run_id="a")
    second = gate_and_merge(lake, "candles", batch, settings=settings, run_id="b")
    assert first.rows_quarantined == second.rows_quarantined == 3
    assert lake.execute("SELECT count(*) FROM quarantine").fetchone() == (3,)
    assert lake.execute("SELECT count(*) FROM candles").fetchone() == (N - 3,)
    assert lake.execute("SELECT count(*) FROM quality_results").fetchone() == (2,)


def test_gaps_are_warnings_not_failures(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    rows = candle_rows(N)
    for values in rows.values():
        del values[4:6]  # two missing minutes
    result = gate_and_merge(lake, "candles", to_arrow(rows), settings=settings)
    assert result.success and result.rows_quarantined == 0
    assert result.warnings == (
        "BTC/USDT 1m: 1 gaps, 2 missing bars (20.0% of expected bars), above the 5% threshold",
    )


def test_extreme_return_is_flagged_and_merged(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    n = 60
    rows = candle_rows(n)
    rows["close"] = [100.0 + (0.1 if i % 2 else -0.1) for i in range(n)]
    rows["open"] = list(rows["close"])
    rows["high"] = [c + 0.2 for c in rows["close"]]
    rows["low"] = [c - 0.2 for c in rows["close"]]
    rows["close"][50] = 150.0
    rows["high"][50] = 150.5
    result = gate_and_merge(lake, "candles", to_arrow(rows), settings=settings)
    assert result.success and result.rows_merged == n
    assert any("extreme return" in w for w in result.warnings)
    strict = GatePolicy(extreme_return_action="quarantine", max_bad_fraction=0.5)
    held = gate_and_merge(lake, "candles", to_arrow(rows), settings=settings, policy=strict)
    assert held.rows_quarantined >= 1
    assert START  # the builders' reference time is timezone-aware


def test_stored_gx_results_are_pruned_by_age(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    import os
    import time

    from expectations.engine import build_data_docs, prune_stored_results, quality_root

    gate_and_merge(lake, "candles", to_arrow(candle_rows(N)), settings=settings)
    index = build_data_docs(settings)
    assert index.is_file() and str(index).startswith(str(settings.home.resolve()))
    stored = [
        p
        for p in (quality_root(settings) / "gx" / "uncommitted").rglob("*")
        if p.is_file() and "validations" in p.parts and not p.name.startswith(".")
    ]
    assert stored  # the result JSON and its Data Docs page
    assert prune_stored_results(settings, keep_days=1) == 0
    old = time.time() - 3 * 86_400
    for path in stored:
        os.utime(path, (old, old))
    assert prune_stored_results(settings, keep_days=1) == len(stored)
    assert not any(p.exists() for p in stored)
    build_data_docs(settings)  # the site still builds
