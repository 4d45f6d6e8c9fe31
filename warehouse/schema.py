"""Table schemas as the migrations made them, read back from the catalog (one definition)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import duckdb

from warehouse.errors import SchemaError

BOOKKEEPING_COLUMNS = frozenset({"ingested_at"})


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    nullable: bool


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def value_columns(self) -> list[str]:
        """Columns compared to decide whether a row changed (keys and bookkeeping excluded)."""
        return [
            c.name
            for c in self.columns
            if c.name not in self.key and c.name not in BOOKKEEPING_COLUMNS
        ]

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


# Per connection: a table's schema changes only through a migration (which forgets them), and a
# write reads it every time (two catalog queries, about 10 ms on DuckLake: as much as the write
# of a few rows in the serving loop).
_cache: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, dict[str, TableSchema]] = (
    weakref.WeakKeyDictionary()
)


def forget_schemas(con: duckdb.DuckDBPyConnection) -> None:
    """Read every table's schema from the catalog again on ``con`` (after a migration, or
    when a write was refused: another process may have migrated the warehouse)."""
    _cache.pop(con, None)


def table_schema(con: duckdb.DuckDBPyConnection, table: str) -> TableSchema:
    """``table``'s columns and key, as the migrations made them (cached per connection)."""
    known = _cache.setdefault(con, {})
    if table not in known:
        known[table] = _read_table_schema(con, table)
    return known[table]


def _read_table_schema(con: duckdb.DuckDBPyConnection, table: str) -> TableSchema:
    rows = con.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    if not rows:
        raise SchemaError(f"table {table!r} does not exist in the warehouse (run `tradeloop init`)")
    key_row = con.execute(
        "SELECT key_columns FROM table_keys WHERE table_name = ?", [table]
    ).fetchone()
    if key_row is None:
        raise SchemaError(f"table {table!r} has no key declared in table_keys")
    columns = tuple(Column(name, sql_type, nullable == "YES") for name, sql_type, nullable in rows)
    return TableSchema(table, columns, tuple(key_row[0].split(",")))
