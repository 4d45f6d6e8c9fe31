"""Transactional, idempotent writes into the warehouse.

``upsert`` writes only rows that are new or changed: the same batch written twice leaves one
copy (and makes no new snapshot), a revised row replaces the old one, and the whole batch is
committed in one transaction or not at all. Concurrent writers of one table conflict on its
write token and retry with backoff.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count

import duckdb
import numpy as np
import pyarrow as pa

from warehouse.retry import run_transaction
from warehouse.schema import TableSchema, forget_schemas, table_schema
from warehouse.settings import Settings, get_settings
from warehouse.validation import validate_batch

_batch_names = count()


@dataclass(frozen=True)
class WriteResult:
    table: str
    rows_in: int
    inserted: int  # new keys
    replaced: int  # existing keys whose values changed
    unchanged: int  # identical rows already present

    @property
    def written(self) -> int:
        return self.inserted + self.replaced


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _key_match(schema: TableSchema, left: str, right: str) -> str:
    return " AND ".join(f"{left}.{_quote(k)} = {right}.{_quote(k)}" for k in schema.key)


def _range_filter(schema: TableSchema, data: pa.Table, alias: str) -> str:
    """Bounds on timestamp key columns, so the lake can skip files outside the batch."""
    clauses = []
    for key in schema.key:
        column = schema.column(key)
        if column.sql_type == "TIMESTAMP WITH TIME ZONE" and data.num_rows:
            values = data.column(key)
            lo, hi = pa.compute.min(values).as_py(), pa.compute.max(values).as_py()
            clauses.append(
                f"{alias}.{_quote(key)} BETWEEN '{lo.isoformat()}'::TIMESTAMPTZ "
                f"AND '{hi.isoformat()}'::TIMESTAMPTZ"
            )
    return " AND ".join(clauses) if clauses else "TRUE"


_POS = "_tl_pos"


def _stored_sql(schema: TableSchema, batch: pa.Table, batch_name: str, *, same: bool) -> str:
    """The positions of the batch's rows whose key is stored (``same``: stored with the same
    values, so the row is unchanged). The key-only query reads the key columns alone: when
    no key is stored, as for new rows, the values are never read. (``NOT EXISTS (same key
    AND same values)`` had DuckDB first deduplicate the batch on every column: seconds for
    wide rows, even against an empty table.)"""
    columns = [*schema.key, *schema.value_columns] if same else list(schema.key)
    condition = _key_match(schema, "t", "b")
    if same and schema.value_columns:
        condition += " AND " + " AND ".join(
            f"t.{_quote(c)} IS NOT DISTINCT FROM b.{_quote(c)}" for c in schema.value_columns
        )
    return (
        f"SELECT DISTINCT b.{_POS} FROM {batch_name} b JOIN (SELECT "
        f"{', '.join(_quote(c) for c in columns)} FROM {_quote(schema.name)} t "
        f"WHERE {_range_filter(schema, batch, 't')}) t ON {condition}"
    )


def upsert(
    con: duckdb.DuckDBPyConnection,
    table: str,
    data: pa.Table,
    *,
    settings: Settings | None = None,
) -> WriteResult:
    """Validate ``data`` against ``table`` and merge it by the table's key in one transaction."""
    return upsert_many(con, [(table, data)], settings=settings)[0]


def upsert_many(
    con: duckdb.DuckDBPyConnection,
    writes: Sequence[tuple[str, pa.Table]],
    *,
    settings: Settings | None = None,
) -> list[WriteResult]:
    """``upsert`` of several tables in ONE transaction: all are merged, or none (one commit
    instead of one per table: the serving loop writes up to eight tables a flush)."""
    settings = settings or get_settings()
    merges = [_Merge.of(con, table, data) for table, data in writes]
    todo = [m for m in merges if m.batch.num_rows]
    if not todo:
        return [m.result(0, 0) for m in merges]
    for m in todo:
        con.register(m.batch_name, m.batch.append_column(_POS, pa.array(np.arange(m.rows_in))))
    try:
        counts = run_transaction(
            con,
            lambda c: {id(m): m.merge(c) for m in todo},
            what=f"upsert into {', '.join(m.schema.name for m in todo)}",
            max_attempts=settings.write_max_attempts,
            backoff_initial_s=settings.write_backoff_initial_s,
            backoff_max_s=settings.write_backoff_max_s,
        )
    except duckdb.Error:
        forget_schemas(con)  # another process may have migrated the table: read it again
        raise
    finally:
        for m in todo:
            con.unregister(m.batch_name)
    return [m.result(*counts.get(id(m), (0, 0))) for m in merges]


@dataclass(frozen=True)
class _Merge:
    """One table's part of an upsert: its validated batch, merged inside a transaction."""

    schema: TableSchema
    batch: pa.Table
    batch_name: str

    @classmethod
    def of(cls, con: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> _Merge:
        schema = table_schema(con, table)
        return cls(schema, validate_batch(schema, data), f"_tl_batch_{next(_batch_names)}")

    @property
    def rows_in(self) -> int:
        return int(self.batch.num_rows)

    def result(self, changed_rows: int, replaced: int) -> WriteResult:
        return WriteResult(
            table=self.schema.name,
            rows_in=self.rows_in,
            inserted=changed_rows - replaced,
            replaced=replaced,
            unchanged=self.rows_in - changed_rows,
        )

    def merge(self, con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
        """(rows written, of which replaced); the batch is registered as ``batch_name`` (its
        rows with their positions: the query that finds new or changed rows returns positions,
        not rows; taking the rows back out of DuckDB copied every column)."""
        schema, batch, batch_name = self.schema, self.batch, self.batch_name
        stored = con.execute(_stored_sql(schema, batch, batch_name, same=False))
        existed = stored.fetchnumpy()[_POS]
        positions = np.arange(batch.num_rows)
        if len(existed):  # some keys are stored: leave out the rows stored unchanged
            unchanged = con.execute(_stored_sql(schema, batch, batch_name, same=True))
            positions = np.setdiff1d(positions, unchanged.fetchnumpy()[_POS])
            existed = np.intersect1d(existed, positions)
        if len(positions) == 0:
            return 0, 0
        changed = batch if len(positions) == batch.num_rows else batch.take(pa.array(positions))
        changed_name = batch_name + "_changed"
        insert_columns = ", ".join(_quote(c) for c in schema.column_names)
        insert_values = ", ".join(
            "now()" if c.name == "ingested_at" else f"CAST(c.{_quote(c.name)} AS {c.sql_type})"
            for c in schema.columns
        )
        con.register(changed_name, changed)
        try:
            con.execute(
                "UPDATE write_tokens SET writes = writes + 1 WHERE table_name = ?", [schema.name]
            )
            deleted = (
                con.execute(
                    f"DELETE FROM {_quote(schema.name)} t USING {changed_name} c "
                    f"WHERE {_key_match(schema, 't', 'c')}"
                ).fetchone()
                if len(existed)  # nothing stored under these keys: nothing to delete
                else (0,)
            )
            con.execute(
                f"INSERT INTO {_quote(schema.name)} ({insert_columns}) "
                f"SELECT {insert_values} FROM {changed_name} c"
            )
        finally:
            con.unregister(changed_name)
        return changed.num_rows, int(deleted[0]) if deleted else 0
