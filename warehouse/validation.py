"""Checks an Arrow table against a warehouse table before anything is written.

Every error names the table, the column and the problem, and nothing is written.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from warehouse.errors import SchemaError
from warehouse.schema import BOOKKEEPING_COLUMNS, TableSchema


def _type_fits(sql_type: str, arrow_type: pa.DataType) -> str | None:
    """None when ``arrow_type`` can be stored in ``sql_type``, else what is wrong."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_null(arrow_type):
        return None
    if sql_type in ("DOUBLE", "FLOAT", "REAL"):
        ok = pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type)
        return None if ok else f"has type {arrow_type}, expected a number ({sql_type})"
    if sql_type in ("INTEGER", "BIGINT", "SMALLINT", "TINYINT", "UBIGINT", "UINTEGER"):
        ok = pa.types.is_integer(arrow_type)
        return None if ok else f"has type {arrow_type}, expected an integer ({sql_type})"
    if sql_type == "VARCHAR":
        ok = pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
        return None if ok else f"has type {arrow_type}, expected text (VARCHAR)"
    if sql_type == "BOOLEAN":
        return (
            None if pa.types.is_boolean(arrow_type) else f"has type {arrow_type}, expected BOOLEAN"
        )
    if sql_type == "TIMESTAMP WITH TIME ZONE":
        if not pa.types.is_timestamp(arrow_type):
            return f"has type {arrow_type}, expected a UTC timestamp"
        if arrow_type.tz is None:
            return "holds naive timestamps; expected timezone-aware UTC timestamps"
        return None
    if sql_type.endswith("[]"):
        if not (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)):
            return f"has type {arrow_type}, expected a list ({sql_type})"
        return _type_fits(sql_type[:-2], arrow_type.value_type)
    return None  # types without a specific rule are left to DuckDB's cast


def validate_batch(schema: TableSchema, data: pa.Table) -> pa.Table:
    """Return ``data`` with its columns in table order (absent nullable columns as nulls).

    Raises SchemaError for: missing or extra columns, wrong types, naive timestamps, nulls in
    NOT NULL columns, NaN or null in a key column, and duplicate keys within the batch.
    """
    where = f"table {schema.name!r}"
    given = set(data.column_names)
    known = set(schema.column_names)
    extra = sorted(given - known)
    if extra:
        raise SchemaError(
            f"{where}: unexpected column(s) {extra}; the table has {schema.column_names}"
        )
    missing = [
        c.name
        for c in schema.columns
        if c.name not in given and not c.nullable and c.name not in BOOKKEEPING_COLUMNS
    ]
    if missing:
        raise SchemaError(f"{where}: missing required column(s) {missing}")

    columns: dict[str, pa.ChunkedArray | pa.Array] = {}
    for column in schema.columns:
        if column.name not in given:
            columns[column.name] = pa.nulls(data.num_rows)
            continue
        values = data.column(column.name)
        problem = _type_fits(column.sql_type, values.type)
        if problem:
            raise SchemaError(f"{where}: column {column.name!r} {problem}")
        nulls = values.null_count
        if nulls and (not column.nullable or column.name in schema.key):
            first = pc.index(pc.is_null(values), True).as_py()
            kind = "key column" if column.name in schema.key else "NOT NULL column"
            raise SchemaError(
                f"{where}: {kind} {column.name!r} has {nulls} null value(s) (first at row {first})"
            )
        if column.name in schema.key and pa.types.is_floating(values.type):
            nan = pc.is_nan(values)
            if pc.any(nan).as_py():
                first = pc.index(nan, True).as_py()
                raise SchemaError(
                    f"{where}: key column {column.name!r} has NaN (first at row {first})"
                )
        columns[column.name] = values

    _reject_duplicate_keys(schema, data)
    return pa.table(columns)


def _runs_without_repeats(keys: pa.Table) -> bool:
    """True when the rows come in runs of one value of the leading key columns (a series),
    no run's value comes twice, and the last key column strictly increases within each run:
    then no key repeats. A few vectorised comparisons of each row with the next and a
    grouping of the runs' first rows, far cheaper than grouping a big batch; batches usually
    come that way (each series after another, in time order). False: not shown, check all."""
    n = keys.num_rows
    *lead, last = keys.column_names
    before, after = keys.slice(0, n - 1), keys.slice(1)
    same = pa.array(np.ones(n - 1, dtype=bool))
    try:
        for name in keys.column_names:
            if keys.column(name).null_count or pa.types.is_dictionary(keys.column(name).type):
                return False
        for name in lead:
            same = pc.and_(same, pc.equal(before.column(name), after.column(name)))
        if not pc.all(
            pc.or_(pc.invert(same), pc.less(before.column(last), after.column(last)))
        ).as_py():
            return False
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # a type without an order
        return False
    if not lead:
        return True
    firsts = np.flatnonzero(np.concatenate(([True], ~same.to_numpy(zero_copy_only=False))))
    heads = keys.select(lead).take(pa.array(firsts))
    return heads.group_by(lead).aggregate([]).num_rows == heads.num_rows


def _reject_duplicate_keys(schema: TableSchema, data: pa.Table) -> None:
    if data.num_rows == 0:
        return
    if _runs_without_repeats(data.select(list(schema.key))):
        return
    keys = data.select(list(schema.key))
    counts = keys.group_by(list(schema.key)).aggregate([([], "count_all")])
    if counts.num_rows == data.num_rows:
        return
    duplicated = counts.filter(pc.greater(counts.column("count_all"), 1))
    example = {k: duplicated.column(k)[0].as_py() for k in schema.key}
    raise SchemaError(
        f"table {schema.name!r}: {data.num_rows - counts.num_rows} duplicate key(s) on "
        f"{list(schema.key)} within the batch, e.g. {example}"
    )
