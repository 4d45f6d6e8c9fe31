"""The gate on order-book snapshots and trades."""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from expectations.gate import GatePolicy, gate_and_merge
from tests.support.batches import START, TS_TYPE
from warehouse import Settings

LOOSE = GatePolicy(max_bad_fraction=1.0)


def _books(n: int = 8) -> dict[str, list[Any]]:
    return {
        "exchange": ["binance"] * n,
        "symbol": ["BTC/USDT"] * n,
        "ts": [START + dt.timedelta(seconds=i) for i in range(n)],
        "bid_prices": [[100.0 + i, 99.5 + i, 99.0 + i] for i in range(n)],
        "bid_sizes": [[1.0, 2.0, 3.0] for _ in range(n)],
        "ask_prices": [[100.5 + i, 101.0 + i, 101.5 + i] for i in range(n)],
        "ask_sizes": [[1.5, 2.5, 3.5] for _ in range(n)],
    }


def _book_table(rows: dict[str, list[Any]]) -> pa.Table:
    lists = pa.list_(pa.float64())
    return pa.table(
        {
            k: pa.array(
                v, TS_TYPE if k == "ts" else lists if k.endswith(("prices", "sizes")) else None
            )
            for k, v in rows.items()
        }
    )


BOOK_CASES = {
    "crossed": (lambda r: r["bid_prices"].__setitem__(1, [102.0, 99.0, 98.0]), "book_not_crossed"),
    "zero_size": (lambda r: r["ask_sizes"].__setitem__(2, [1.0, 0.0, 1.0]), "size_positive"),
    "unsorted_bids": (
        lambda r: r["bid_prices"].__setitem__(3, [100.0, 100.2, 99.0]),
        "levels_sorted",
    ),
    "length_mismatch": (lambda r: r["bid_sizes"].__setitem__(4, [1.0]), "levels_present"),
    "negative_price": (
        lambda r: r["ask_prices"].__setitem__(5, [-1.0, 101.0, 102.0]),
        "price_positive",
    ),
}


@pytest.mark.parametrize("case", sorted(BOOK_CASES))
def test_bad_order_books_are_quarantined(
    case: str, lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    corrupt, rule = BOOK_CASES[case]
    rows = _books()
    corrupt(rows)
    result = gate_and_merge(
        lake, "order_book_snapshots", _book_table(rows), settings=settings, policy=LOOSE
    )
    assert (result.rows_merged, result.rows_quarantined) == (7, 1), result.message
    (expectation,) = lake.execute("SELECT expectation FROM quarantine").fetchone() or ("",)
    assert rule in expectation.split(",")
    assert lake.execute("SELECT count(*) FROM order_book_snapshots").fetchone() == (7,)


def _trades(n: int = 6) -> dict[str, list[Any]]:
    return {
        "exchange": ["binance"] * n,
        "symbol": ["BTC/USDT"] * n,
        "trade_id": [str(1000 + i) for i in range(n)],
        "ts": [START + dt.timedelta(seconds=i) for i in range(n)],
        "side": ["buy", "sell"] * (n // 2),
        "price": [100.0 + i for i in range(n)],
        "amount": [0.5] * n,
        "cost": [(100.0 + i) * 0.5 for i in range(n)],
    }


def test_bad_trades_are_quarantined(lake: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    rows = _trades()
    rows["side"][1] = "hold"
    rows["amount"][2] = 0.0
    rows["trade_id"][4] = rows["trade_id"][3]  # same id, different values
    rows["cost"][5] = 1.0  # inconsistent cost: a warning only
    batch = pa.table({k: pa.array(v, TS_TYPE if k == "ts" else None) for k, v in rows.items()})
    result = gate_and_merge(lake, "trades", batch, settings=settings, policy=LOOSE)
    assert (result.rows_merged, result.rows_quarantined) == (2, 4), result.message
    rules = {r[0] for r in lake.execute("SELECT expectation FROM quarantine").fetchall()}
    assert {"side_known", "amount_positive", "key_unique"} <= {
        x for r in rules for x in r.split(",")
    }
    assert any("cost" in w for w in result.warnings)


@pytest.mark.parametrize("column", ["price", "amount", "cost"])
def test_infinite_trade_values_are_quarantined_naming_the_column(
    column: str, lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    rows = _trades()
    rows[column][2] = float("inf")  # +inf passes "> 0", so only the finiteness rule sees it
    batch = pa.table({k: pa.array(v, TS_TYPE if k == "ts" else None) for k, v in rows.items()})
    result = gate_and_merge(lake, "trades", batch, settings=settings, policy=LOOSE)
    assert (result.rows_merged, result.rows_quarantined) == (5, 1), result.message
    assert "finite: 1" in result.message
    row = lake.execute(
        "SELECT expectation, column_name, reason, row_json FROM quarantine"
    ).fetchone()
    assert row is not None
    expectation, column_name, reason, row_json = row
    assert expectation == "finite" and column_name == column
    assert f"{column}=inf" in reason and '"trade_id": "1002"' in row_json
    stored = lake.execute("SELECT trade_id FROM trades ORDER BY trade_id").fetchall()
    assert stored == [(t,) for t in ("1000", "1001", "1003", "1004", "1005")]
