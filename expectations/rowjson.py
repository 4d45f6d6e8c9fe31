"""Rows as text, a column at a time: the quarantine's ``row_json`` and the values a reason shows.

The gate used to build both row by row (``json.dumps`` of ``to_pylist()`` dicts, ``repr`` of
each value). On a batch whose rows all fail that was most of its cost: about 25 us a row,
against about 7 us a row for gating a clean batch. Here each column is rendered once, with
arrow/polars kernels for the common types (text through its few distinct values), and the
rows are joined with ``concat_str``.

The text is the same, byte for byte, as ``json.dumps(row, default=str, sort_keys=True)`` and
``expectations.gate.show_value``: the quarantine id hashes the row JSON, so a batch quarantined
before this module existed gets the same ids when it is validated again. Types without a
fast path (lists, decimals, dates, nanosecond or non-UTC timestamps...) go through the
row-by-row functions, so every type stays exact; a test compares both on mixed batches.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

_JSON_FLOATS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_UTC_NAMES = ("UTC", "utc", "Etc/UTC", "+00:00")


def _by_distinct(values: pa.ChunkedArray | pa.Array, render: Callable[[Any], str]) -> pl.Series:
    """``render`` once per distinct value (text columns repeat: exchange, symbol, timeframe)."""
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    texts = pa.array([render(v) for v in encoded.dictionary.to_pylist()], pa.string())
    picked = pc.take(texts, encoded.indices)  # null where the value is null
    return pl.Series(picked, dtype=pl.String)


def _floats(values: pl.Series, *, as_json: bool) -> pl.Series:
    """``repr`` of each float (JSON's names for NaN and infinities when ``as_json``).

    Polars prints the same shortest round-trip digits as Python for 1e-4 <= |x| < 1e16 and
    0 (a test compares them on random values); the rest, where Python switches to exponent
    notation or names NaN/inf, are rendered by Python."""
    values = values.cast(pl.Float64)
    text = values.cast(pl.String)
    magnitude = values.abs()
    odd = (~((magnitude >= 1e-4) & (magnitude < 1e16)) & (values != 0)).fill_null(False)
    if not odd.any():
        return text
    rows = odd.arg_true()
    fixed = []
    for v in values.gather(rows).to_list():
        shown = float.__repr__(v)
        fixed.append(_JSON_FLOATS.get(shown, shown) if as_json else shown)
    return text.scatter(rows, pl.Series(fixed, dtype=pl.String))


def _timestamp_text(values: pa.ChunkedArray | pa.Array, *, sep: str) -> pl.Series | None:
    """``str(datetime)`` (sep " ") or ``datetime.isoformat()`` (sep "T") of timestamps in s,
    ms or us, naive or UTC; None for other units or zones (the caller falls back)."""
    t = values.type
    if t.unit not in ("s", "ms", "us") or (t.tz is not None and t.tz not in _UTC_NAMES):
        return None
    us = pc.cast(pc.cast(values, pa.timestamp("us", tz=t.tz)), pa.int64()).to_numpy(
        zero_copy_only=False
    )
    seconds = pl.Series(values).dt.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    frac = np.mod(np.nan_to_num(us, nan=0).astype(np.int64), 1_000_000)
    fraction = pl.Series(frac).cast(pl.String).str.zfill(6)
    suffix = "+00:00" if t.tz is not None else ""
    return pl.select(
        pl.concat_str(
            seconds,
            pl.when(pl.Series(frac) != 0).then(pl.lit(".") + fraction).otherwise(pl.lit("")),
            pl.lit(suffix),
        )
    ).to_series()


def json_fragments(values: pa.ChunkedArray | pa.Array) -> pl.Series:
    """Each value as ``json.dumps(value, default=str)`` writes it ("null" for a null)."""
    t = values.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        out = _by_distinct(values, json.dumps)
    elif pa.types.is_floating(t):
        out = _floats(pl.Series(pc.cast(values, pa.float64())), as_json=True)
    elif pa.types.is_integer(t):
        out = pl.Series(pc.cast(values, pa.string()).to_pylist(), dtype=pl.String)
    elif pa.types.is_boolean(t):
        out = pl.Series(values.to_pylist(), dtype=pl.Boolean).replace_strict(
            {True: "true", False: "false"}, return_dtype=pl.String
        )
    elif pa.types.is_null(t):
        out = pl.Series([None] * len(values), dtype=pl.String)
    elif pa.types.is_timestamp(t) and (text := _timestamp_text(values, sep=" ")) is not None:
        out = ('"' + text + '"') if text.len() else text
    else:
        out = pl.Series(
            [None if v is None else json.dumps(v, default=str) for v in values.to_pylist()],
            dtype=pl.String,
        )
    return out.fill_null("null")


def row_json(batch: pa.Table) -> list[str]:
    """Every row of ``batch`` as ``json.dumps(row, default=str, sort_keys=True)``."""
    return row_json_series(batch).to_list()


def row_json_series(batch: pa.Table) -> pl.Series:
    """``row_json`` as a polars string Series (no round trip through Python strings)."""
    names = batch.column_names
    if len(set(names)) != len(names):  # a dict keeps the last copy of a name: do as it does
        return pl.Series(
            [json.dumps(r, default=str, sort_keys=True) for r in batch.to_pylist()],
            dtype=pl.String,
        )
    if batch.num_rows == 0:
        return pl.Series([], dtype=pl.String)
    parts: list[pl.Series | pl.Expr] = []
    for i, name in enumerate(sorted(names)):
        parts.append(pl.lit(("{" if i == 0 else ", ") + json.dumps(name) + ": "))
        parts.append(json_fragments(batch.column(name)))
    parts.append(pl.lit("}"))
    if not names:
        return pl.Series(["{}"] * batch.num_rows, dtype=pl.String)
    return pl.select(pl.concat_str(parts)).to_series()


def show_value(value: Any) -> str:
    """A value as a quarantine reason shows it (floats exactly, lists cut at five)."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list):
        return (
            "["
            + ", ".join(show_value(v) for v in value[:5])
            + (", ..." if len(value) > 5 else "")
            + "]"
        )
    return repr(value)


def shown(series: pl.Series) -> pl.Series:
    """``show_value`` of every value of a typed (coerced) column."""
    dtype = series.dtype
    if dtype == pl.Float64 or dtype == pl.Float32:
        return _floats(series, as_json=False).fill_null("None")
    if dtype == pl.String:
        return _by_distinct(series.to_arrow(), repr).fill_null("None")
    if dtype.is_integer():
        return series.cast(pl.String).fill_null("None")
    if dtype == pl.Boolean:
        return series.replace_strict(
            {True: "True", False: "False"}, default=None, return_dtype=pl.String
        ).fill_null("None")
    if isinstance(dtype, pl.Datetime):
        text = _timestamp_text(series.to_arrow(), sep="T")
        if text is not None:
            return text.fill_null("None")
    return pl.Series([show_value(v) for v in series.to_list()], dtype=pl.String)
