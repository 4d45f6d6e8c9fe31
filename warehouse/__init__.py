"""The warehouse: a DuckLake (Parquet files + a catalog database) shared by many processes.

Public entry points:
    connect()            -> a DuckDB connection with the lake attached as ``lake``
    migrate()            -> apply the numbered SQL migrations idempotently
    upsert()             -> transactional, idempotent, validated write of an Arrow table
    maintain()           -> compaction, snapshot expiry, file cleanup
"""

from warehouse.connection import Warehouse, connect
from warehouse.errors import SchemaError, WarehouseError, WriteConflictError
from warehouse.maintenance import maintain
from warehouse.migrate import migrate
from warehouse.settings import Settings, get_settings
from warehouse.writers import WriteResult, upsert

__all__ = [
    "SchemaError",
    "Settings",
    "Warehouse",
    "WarehouseError",
    "WriteConflictError",
    "WriteResult",
    "connect",
    "get_settings",
    "maintain",
    "migrate",
    "upsert",
]
