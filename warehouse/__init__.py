"""The warehouse: a DuckLake (Parquet files + a catalog database) shared by many processes.

Public entry points:
    connect()            -> a DuckDB connection with the lake attached as ``lake``
    migrate()            -> apply the numbered SQL migrations idempotently
    upsert()             -> transactional, idempotent, validated write of an Arrow table
    maintain()           -> compaction, snapshot expiry, file cleanup
    read_candles()       -> candles by symbol/timeframe/exchange/time/last n, at a snapshot
"""

from warehouse.connection import Warehouse, connect
from warehouse.errors import (
    SchemaError,
    WarehouseError,
    WarehouseNotFound,
    WarehouseReadError,
    WriteConflictError,
)
from warehouse.maintenance import maintain
from warehouse.migrate import migrate
from warehouse.readers import current_snapshot_id, read_candles
from warehouse.settings import Settings, get_settings, use_settings
from warehouse.writers import WriteResult, upsert, upsert_many

__all__ = [
    "WarehouseNotFound",
    "SchemaError",
    "Settings",
    "Warehouse",
    "WarehouseError",
    "WarehouseReadError",
    "WriteConflictError",
    "WriteResult",
    "connect",
    "current_snapshot_id",
    "get_settings",
    "use_settings",
    "maintain",
    "migrate",
    "read_candles",
    "upsert",
    "upsert_many",
]
