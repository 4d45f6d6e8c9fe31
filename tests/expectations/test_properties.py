"""Invariants of the gate over random corruptions: rows in = merged + quarantined."""

from __future__ import annotations

import itertools
from typing import Any

import duckdb
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from expectations.gate import GatePolicy, gate_and_merge
from tests.support.batches import candle_rows, to_arrow
from warehouse import Settings

_symbols = itertools.count()

CORRUPTIONS = ["nan", "inf", "negative", "high_low", "duplicate", "string", "null_ts", "swap"]


def _corrupt(rows: dict[str, list[Any]], kind: str, i: int) -> None:
    n = len(rows["ts"])
    if kind == "nan":
        rows["close"][i] = float("nan")
    elif kind == "inf":
        rows["high"][i] = float("inf")
    elif kind == "negative":
        rows["open"][i] = -abs(rows["open"][i])
    elif kind == "high_low":
        rows["high"][i] = rows["low"][i] - 1
    elif kind == "duplicate":
        rows["ts"][i] = rows["ts"][(i + 1) % n]
    elif kind == "string":
        rows["volume"][i] = "n/a"
    elif kind == "null_ts":
        rows["ts"][i] = None
    elif kind == "swap":
        j = (i + 3) % n
        rows["ts"][i], rows["ts"][j] = rows["ts"][j], rows["ts"][i]


@hsettings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(min_value=1, max_value=40),
    corruptions=st.lists(
        st.tuples(st.sampled_from(CORRUPTIONS), st.integers(min_value=0, max_value=1000)),
        max_size=6,
    ),
)
def test_rows_in_equals_merged_plus_quarantined(
    lake: duckdb.DuckDBPyConnection,
    settings: Settings,
    n: int,
    corruptions: list[tuple[str, int]],
) -> None:
    symbol = f"P{next(_symbols)}/USDT"
    rows = candle_rows(n, symbol=symbol)
    if any(kind == "string" for kind, _ in corruptions):
        rows["volume"] = [str(v) for v in rows["volume"]]
    for kind, position in corruptions:
        _corrupt(rows, kind, position % n)
    batch = to_arrow(rows)
    policy = GatePolicy(max_bad_fraction=1.0)
    result = gate_and_merge(lake, "candles", batch, settings=settings, policy=policy)
    again = gate_and_merge(lake, "candles", batch, settings=settings, policy=policy)

    assert result.rows_in == n == result.rows_merged + result.rows_quarantined
    assert (again.rows_merged, again.rows_quarantined) == (
        result.rows_merged,
        result.rows_quarantined,
    )
    stored = lake.execute("SELECT count(*) FROM candles WHERE symbol = ?", [symbol]).fetchone()
    assert stored == (result.rows_merged,)
    in_quarantine = lake.execute(
        "SELECT count(*) FROM quarantine WHERE row_json LIKE ?", [f'%"{symbol}"%']
    ).fetchone()
    assert in_quarantine == (result.rows_quarantined,)
    if not corruptions:
        assert result.rows_quarantined == 0
