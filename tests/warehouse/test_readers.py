"""warehouse.readers: candle reads with every filter, per-series `last`, and time travel."""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa
import pytest

from tests.warehouse.workers import EPOCH, candle_batch
from warehouse import Settings, current_snapshot_id, read_candles, upsert
from warehouse.readers import CANDLE_COLUMNS, newest_candle_ts


def _minutes(table: pa.Table) -> list[int]:
    return [int((ts - EPOCH).total_seconds() // 60) for ts in table.column("ts").to_pylist()]


@pytest.fixture
def stored(lake: duckdb.DuckDBPyConnection, settings: Settings) -> duckdb.DuckDBPyConnection:
    upsert(lake, "candles", candle_batch(list(range(10))), settings=settings)
    eth = candle_batch(list(range(5, 12)), symbol="ETH/USDT")
    upsert(lake, "candles", eth, settings=settings)
    upsert(lake, "candles", candle_batch([0, 1, 2], exchange="other"), settings=settings)
    return lake


def test_filters_order_and_columns(stored: duckdb.DuckDBPyConnection) -> None:
    everything = read_candles(stored)
    assert tuple(everything.column_names) == CANDLE_COLUMNS
    assert everything.num_rows == 10 + 7 + 3
    keys = list(
        zip(*(everything.column(c).to_pylist() for c in ("exchange", "symbol", "ts")), strict=True)
    )
    assert keys == sorted(keys)

    btc = read_candles(stored, symbols=["BTC/USDT"], timeframe="1m", exchange="test")
    assert _minutes(btc) == list(range(10))
    window = read_candles(
        stored,
        symbols=["BTC/USDT"],
        exchange="test",
        after=EPOCH + dt.timedelta(minutes=2),
        before=EPOCH + dt.timedelta(minutes=6),
    )
    assert _minutes(window) == [3, 4, 5]  # both bounds exclusive
    assert read_candles(stored, symbols=["SOL/USDT"]).num_rows == 0
    assert read_candles(stored, timeframe="5m").column_names == list(CANDLE_COLUMNS)


def test_last_n_is_per_series(stored: duckdb.DuckDBPyConnection) -> None:
    last = read_candles(stored, exchange="test", last=3)
    by_symbol: dict[str, list[int]] = {}
    for symbol, minute in zip(last.column("symbol").to_pylist(), _minutes(last), strict=True):
        by_symbol.setdefault(symbol, []).append(minute)
    assert by_symbol == {"BTC/USDT": [7, 8, 9], "ETH/USDT": [9, 10, 11]}
    with pytest.raises(ValueError, match="last"):
        read_candles(stored, last=-1)


def test_snapshot_reads_the_data_as_it_was(
    stored: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    before = current_snapshot_id(stored)
    revised = candle_batch([9, 10], price=200.0)
    upsert(stored, "candles", revised, settings=settings)
    assert current_snapshot_id(stored) > before

    now = read_candles(stored, symbols=["BTC/USDT"], exchange="test")
    then = read_candles(stored, symbols=["BTC/USDT"], exchange="test", snapshot_id=before)
    assert _minutes(now) == list(range(11)) and _minutes(then) == list(range(10))
    assert now.column("open").to_pylist()[9] == 200.0
    assert then.column("open").to_pylist()[9] == 100.0
    newest = newest_candle_ts(
        stored, symbols=["BTC/USDT"], timeframe="1m", exchange="test", snapshot_id=before
    )
    assert newest == EPOCH + dt.timedelta(minutes=9)
    with pytest.raises(RuntimeError, match="snapshot 999999"):
        read_candles(stored, snapshot_id=999_999)
