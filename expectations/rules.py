"""Which rows each expectation of a suite rejects, found with polars.

Great Expectations stays the judge of every batch (the gate runs its checkpoint and stores the
result for the Data Docs), but asked for the failing rows of a big bad batch it builds,
deep-copies and serialises index lists of every failing row: most of the gate's cost when
all rows fail. The gate asks GX for counts only and finds the rows here, then holds the two
to each other: a count that differs sends the gate back to GX's own row lists
(``expectations.gate``), so a rule whose semantics drift from GX's costs time, not truth.

The semantics follow GX's pandas engine on the frame the gate hands it: a null is a null or
a NaN (pandas reads both as missing); range, set and pair expectations skip missing values.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from expectations.specs import ExpectationDef


def _missing(frame: pl.DataFrame, column: str) -> pl.Expr:
    col = pl.col(column)
    if frame.schema[column].is_float():
        return col.is_null() | col.is_nan()
    return col.is_null()


def _between(frame: pl.DataFrame, d: ExpectationDef) -> pl.Expr:
    column = d.kwargs["column"]
    col = pl.col(column)
    bad = pl.lit(False)
    if (lo := d.kwargs.get("min_value")) is not None:
        bad = bad | ((col <= lo) if d.kwargs.get("strict_min") else (col < lo))
    if (hi := d.kwargs.get("max_value")) is not None:
        bad = bad | ((col >= hi) if d.kwargs.get("strict_max") else (col > hi))
    return ~_missing(frame, column) & bad


def _in_set(frame: pl.DataFrame, d: ExpectationDef) -> pl.Expr | None:
    column = d.kwargs["column"]
    values = list(d.kwargs["value_set"])
    dtype = frame.schema[column]
    if dtype == pl.Boolean and all(isinstance(v, bool) for v in values):
        allowed = pl.lit(False)
        for v in set(values):
            allowed = allowed | (pl.col(column) == v)
        return ~_missing(frame, column) & ~allowed
    if dtype == pl.String and all(isinstance(v, str) for v in values):
        return ~_missing(frame, column) & ~pl.col(column).is_in(values)
    return None


def _pair(frame: pl.DataFrame, d: ExpectationDef) -> pl.Expr | None:
    if d.kwargs.get("ignore_row_if", "both_values_are_missing") != "either_value_is_missing":
        return None
    a, b = d.kwargs["column_A"], d.kwargs["column_B"]
    compared = ~_missing(frame, a) & ~_missing(frame, b)
    ok = pl.col(a) >= pl.col(b) if d.kwargs.get("or_equal") else pl.col(a) > pl.col(b)
    return compared & ~ok


def unexpected_expr(frame: pl.DataFrame, d: ExpectationDef) -> pl.Expr | None:
    """True where ``d`` rejects a row of ``frame``; None for an expectation not covered here."""
    if any(c not in frame.columns for c in d.gx_columns):
        return None
    if d.expectation == "ExpectColumnValuesToNotBeNull":
        return _missing(frame, d.kwargs["column"])
    if d.expectation == "ExpectColumnValuesToBeBetween":
        return _between(frame, d)
    if d.expectation == "ExpectColumnValuesToBeInSet":
        return _in_set(frame, d)
    if d.expectation == "ExpectColumnPairValuesAToBeGreaterThanB":
        return _pair(frame, d)
    return None


def unexpected_rows(
    frame: pl.DataFrame, definitions: tuple[ExpectationDef, ...]
) -> list[np.ndarray | None]:
    """Per definition, the positions (in ``frame``) of the rows it rejects (None: not covered)."""
    exprs = {i: unexpected_expr(frame, d) for i, d in enumerate(definitions)}
    covered = {i: e for i, e in exprs.items() if e is not None}
    masks = (
        frame.select([e.fill_null(False).alias(f"_u{i}") for i, e in covered.items()])
        if covered
        else pl.DataFrame()
    )
    out: list[np.ndarray | None] = []
    for i in range(len(definitions)):
        if i in covered:
            out.append(masks[f"_u{i}"].arg_true().to_numpy().astype(np.int64))
        else:
            out.append(None)
    return out


def mostly_success(unexpected: int, nonnull: int, mostly: float | None) -> bool:
    """Whether an expectation succeeds on ``nonnull`` values with ``unexpected`` failures, as
    GX decides it (``mostly``: the share of values that must pass; default all)."""
    if nonnull == 0:
        return True
    if mostly is None:
        return unexpected == 0
    return (nonnull - unexpected) / nonnull >= mostly
