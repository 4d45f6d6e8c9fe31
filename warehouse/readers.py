"""Typed readers: the warehouse reads the other packages share, with one definition each.

Reads return Arrow tables in the ``candles`` schema's column order, sorted by
(exchange, symbol, timeframe, ts). ``snapshot_id`` reads the lake as of that DuckLake snapshot
(time travel: ``candles AT (VERSION => id)``), so a model can re-read exactly the data it was
trained on whatever was written since.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import duckdb
import pyarrow as pa

from warehouse.connection import LAKE
from warehouse.errors import WarehouseReadError

CANDLE_COLUMNS = ("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")


def current_snapshot_id(con: duckdb.DuckDBPyConnection) -> int:
    """The id of the newest DuckLake snapshot (the data version a read sees now)."""
    row = con.execute(f"SELECT max(snapshot_id) FROM {LAKE}.snapshots()").fetchone()
    if row is None or row[0] is None:
        raise WarehouseReadError("the lake has no snapshots: run `tradeloop init` first")
    return int(row[0])


def _source(table: str, snapshot_id: int | None) -> str:
    return table if snapshot_id is None else f"{table} AT (VERSION => {int(snapshot_id)})"


def read_candles(
    con: duckdb.DuckDBPyConnection,
    *,
    symbols: Sequence[str] | None = None,
    timeframe: str | None = None,
    exchange: str | None = None,
    after: dt.datetime | None = None,
    before: dt.datetime | None = None,
    last: int | None = None,
    snapshot_id: int | None = None,
) -> pa.Table:
    """Candles matching every filter given: ``after < ts < before`` (both exclusive, UTC),
    ``last``: only the latest ``last`` candles of each (exchange, symbol, timeframe) series.

    An empty result is an empty table with the candle columns, not an error: callers decide
    whether "no candles" is one."""
    if last is not None and last < 0:
        raise ValueError(f"read_candles: last must be >= 0, got {last}")
    where: list[str] = []
    params: list[object] = []
    if symbols is not None:
        where.append("symbol IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(symbols))
    for column, value in (("timeframe", timeframe), ("exchange", exchange)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if after is not None:
        where.append("ts > ?")
        params.append(after)
    if before is not None:
        where.append("ts < ?")
        params.append(before)
    columns = ", ".join(CANDLE_COLUMNS)
    query = f"SELECT {columns} FROM {_source('candles', snapshot_id)}"
    if where:
        query += " WHERE " + " AND ".join(where)
    if last is not None:
        query = (
            f"SELECT {columns} FROM ({query}) QUALIFY row_number() OVER "
            f"(PARTITION BY exchange, symbol, timeframe ORDER BY ts DESC) <= {int(last)}"
        )
    query += " ORDER BY exchange, symbol, timeframe, ts"
    try:
        return con.execute(query, params).fetch_arrow_table()
    except duckdb.Error as exc:
        at = f" at snapshot {snapshot_id}" if snapshot_id is not None else ""
        raise WarehouseReadError(f"cannot read candles{at}: {exc}") from exc


def newest_candle_ts(
    con: duckdb.DuckDBPyConnection,
    *,
    symbols: Sequence[str],
    timeframe: str,
    exchange: str | None = None,
    snapshot_id: int | None = None,
) -> dt.datetime | None:
    """The open time of the newest candle among ``symbols`` (None when there is none)."""
    where = ["timeframe = ?", "symbol IN (SELECT unnest(?::VARCHAR[]))"]
    params: list[object] = [timeframe, list(symbols)]
    if exchange is not None:
        where.append("exchange = ?")
        params.append(exchange)
    query = f"SELECT max(ts) FROM {_source('candles', snapshot_id)} WHERE " + " AND ".join(where)
    try:
        row = con.execute(query, params).fetchone()
    except duckdb.Error as exc:
        at = f" at snapshot {snapshot_id}" if snapshot_id is not None else ""
        raise WarehouseReadError(f"cannot read candles{at}: {exc}") from exc
    return row[0] if row else None
