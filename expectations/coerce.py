"""Turning a raw Arrow batch of any column types into typed columns, row by row.

Nothing here raises on bad data: a value that cannot be read as its column's type becomes
null and is reported as a ``RowProblem`` naming the row, the column and the value; a batch
whose columns do not match the table is reported as a ``schema_problem``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from expectations.specs import ColumnSpec, TableSpec

TS_DTYPE = pl.Datetime("ms", "UTC")


@dataclass(frozen=True)
class RowProblem:
    row: int
    rule: str
    column: str
    message: str


@dataclass(frozen=True)
class Coerced:
    frame: pl.DataFrame  # `_row` plus every spec column, typed
    problems: tuple[RowProblem, ...]
    schema_problem: str | None  # the whole batch is refused when set
    dropped_columns: tuple[str, ...]


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _unparseable(values: pa.Array, parsed: pl.Series) -> list[int]:
    given = pl.Series(pc.is_valid(values).to_numpy(zero_copy_only=False))
    return (given & parsed.is_null()).arg_true().to_list()


def _float(name: str, values: pa.Array) -> tuple[pl.Series, list[int], str]:
    t = values.type
    if pa.types.is_null(t):
        return pl.Series(name, [None] * len(values), pl.Float64), [], ""
    if _is_numeric(t) or pa.types.is_boolean(t):
        return pl.Series(name, pc.cast(values, pa.float64(), safe=False)), [], ""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        parsed = pl.Series(name, values).str.strip_chars().cast(pl.Float64, strict=False)
        return parsed, _unparseable(values, parsed), "is not a number"
    return (
        pl.Series(name, [None] * len(values), pl.Float64),
        _valid_rows(values),
        f"has type {t}, not a number",
    )


def _valid_rows(values: pa.Array) -> list[int]:
    return pl.Series(pc.is_valid(values).to_numpy(zero_copy_only=False)).arg_true().to_list()


def _string(name: str, values: pa.Array) -> tuple[pl.Series, list[int], str]:
    t = values.type
    if pa.types.is_null(t):
        return pl.Series(name, [None] * len(values), pl.String), [], ""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or _is_numeric(t):
        return pl.Series(name, pc.cast(values, pa.large_string())), [], ""
    return (
        pl.Series(name, [None] * len(values), pl.String),
        _valid_rows(values),
        f"has type {t}, not text",
    )


def _parse_ts_text(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return int(parsed.timestamp() * 1000)


def _timestamp(name: str, values: pa.Array) -> tuple[pl.Series, list[int], str]:
    t = values.type
    empty = pl.Series(name, [None] * len(values), pl.Int64).cast(TS_DTYPE)
    if pa.types.is_null(t):
        return empty, [], ""
    if pa.types.is_timestamp(t):
        if t.tz is None:
            return empty, _valid_rows(values), "is a timestamp without a time zone (UTC required)"
        ms = pc.cast(pc.cast(values, pa.timestamp("ms", tz="UTC"), safe=False), pa.int64())
        return pl.Series(name, ms).cast(TS_DTYPE), [], ""
    if pa.types.is_integer(t):
        return pl.Series(name, pc.cast(values, pa.int64())).cast(TS_DTYPE), [], ""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        ms_list = [_parse_ts_text(v) for v in values.to_pylist()]
        parsed = pl.Series(name, ms_list, pl.Int64).cast(TS_DTYPE)
        return parsed, _unparseable(values, parsed), "is not an ISO 8601 time with a time zone"
    return empty, _valid_rows(values), f"has type {t}, not a timestamp"


def _float_list(name: str, values: pa.Array) -> tuple[pl.Series, list[int], str]:
    t = values.type
    target = pl.List(pl.Float64)
    if pa.types.is_null(t):
        return pl.Series(name, [None] * len(values), target), [], ""
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
        _is_numeric(t.value_type) or pa.types.is_null(t.value_type)
    ):
        return pl.Series(name, pc.cast(values, pa.large_list(pa.float64()), safe=False)), [], ""
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
        pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)
    ):
        raw = pl.Series(name, values)
        parsed = raw.list.eval(pl.element().str.strip_chars().cast(pl.Float64, strict=False))
        bad = (
            raw.list.eval(pl.element().is_not_null()).list.sum()
            != parsed.list.eval(pl.element().is_not_null()).list.sum()
        ).fill_null(False)
        rows = bad.arg_true().to_list()
        parsed = pl.Series(
            name, [None if i in set(rows) else v for i, v in enumerate(parsed.to_list())], target
        )
        return parsed, rows, "holds a value that is not a number"
    return (
        pl.Series(name, [None] * len(values), target),
        _valid_rows(values),
        f"has type {t}, not a list of numbers",
    )


_CONVERTERS = {"float": _float, "str": _string, "ts": _timestamp, "float_list": _float_list}


def _column(spec: ColumnSpec, values: pa.Array) -> tuple[pl.Series, list[int], str]:
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return _CONVERTERS[spec.kind](spec.name, values)


def coerce(spec: TableSpec, batch: pa.Table, *, extra_columns: str = "quarantine") -> Coerced:
    """Read ``batch`` into ``spec``'s typed columns, collecting problems instead of raising."""
    given = batch.column_names
    n = batch.num_rows
    missing = [c for c in spec.required if c not in given]
    extra = [c for c in given if c not in spec.column_names and c not in spec.optional_extra]
    duplicated = sorted({c for c in given if given.count(c) > 1})
    problem_parts = []
    if missing:
        problem_parts.append(f"missing required column(s) {missing}")
    if duplicated:
        problem_parts.append(f"column(s) given more than once {duplicated}")
    if extra and extra_columns == "quarantine":
        problem_parts.append(f"unexpected column(s) {extra} (the table has {spec.column_names})")
    dropped = tuple(c for c in given if c not in spec.column_names)

    columns: list[pl.Series] = [pl.Series("_row", range(n), pl.Int64)]
    problems: list[RowProblem] = []
    for col in spec.columns:
        if col.name not in given or col.name in duplicated:
            converted = _column(col, pa.nulls(n))[0]
        else:
            values = batch.column(col.name).combine_chunks()
            converted, bad_rows, why = _column(col, values)
            for row in bad_rows:
                shown = values[row].as_py()
                problems.append(
                    RowProblem(row, "type_coercion", col.name, f"{col.name}={shown!r} {why}")
                )
        columns.append(converted.alias(col.name))
    return Coerced(
        frame=pl.DataFrame(columns),
        problems=tuple(problems),
        schema_problem="; ".join(problem_parts) or None,
        dropped_columns=dropped,
    )
