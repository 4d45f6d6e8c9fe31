"""Printing Arrow tables as a rich table, CSV or JSON."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import sys
from typing import Any

import pyarrow as pa


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    return value


def json_ready(value: Any, *, drop: frozenset[str] = frozenset()) -> Any:
    """``value`` with non-finite floats as null (JSON has no NaN) and the dict keys in ``drop``
    left out, recursively."""
    if isinstance(value, dict):
        return {k: json_ready(v, drop=drop) for k, v in value.items() if k not in drop}
    if isinstance(value, list | tuple):
        return [json_ready(v, drop=drop) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def print_arrow(table: pa.Table, output_format: str = "table") -> None:
    rows = table.to_pylist()
    if output_format == "json":
        json.dump(
            [{k: _jsonable(v) for k, v in row.items()} for row in rows], sys.stdout, default=str
        )
        sys.stdout.write("\n")
    elif output_format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(table.column_names)
        for row in rows:
            writer.writerow([_jsonable(row[name]) for name in table.column_names])
    else:
        from rich.console import Console
        from rich.table import Table

        rich_table = Table(*table.column_names)
        for row in rows:
            rich_table.add_row(*["" if v is None else str(v) for v in row.values()])
        Console(width=max(120, 14 * len(table.column_names))).print(rich_table)
