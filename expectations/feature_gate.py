"""The feature gate: rows are checked before they are written; failing rows go to ``quarantine``.

``pipelines.features.rebuild.rebuild_features`` takes the write step as a parameter (as
``pipelines.collect`` takes the candle gate); ``flows/features.py`` passes ``gate_features``.

The rules are the documented feature suite of ``expectations.frames`` (every feature finite or
null, each named feature within its documented range, keys present and unique). They are
evaluated here with polars, not with Great Expectations: GX costs about 8 s to import and
about 1.7 s per validation however few rows are checked, several times the cost of an
incremental rebuild of one series, while these expressions take milliseconds. A test holds
this evaluation equal to ``expectations.frames.check_frame`` (GX) on real and corrupted rows.

``expectations.frames`` imports only polars (GX is imported inside ``check_frame``), so this
module loads no GX.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import duckdb
import polars as pl

from expectations.frames import FEATURE_KEYS, features_suite
from expectations.gate import Problem, show_value, write_quarantine
from expectations.specs import ExpectationDef
from warehouse import Settings, WriteResult, upsert

_FAIL = "_fail_"


@dataclass(frozen=True)
class FeatureProblem:
    row: int  # position in the checked frame
    rules: tuple[str, ...]  # e.g. ("finite", "feature_range")
    columns: tuple[str, ...]  # the offending feature columns
    reason: str


@dataclass(frozen=True)
class FeatureCheck:
    passing: pl.DataFrame  # the rows to write
    failing: pl.DataFrame  # the rows held back, in the checked frame's order
    problems: tuple[FeatureProblem, ...]  # one per failing row, same order as ``failing``


def _fails(definition: ExpectationDef, frame: pl.DataFrame) -> pl.Expr:
    """True on the rows GX would report as unexpected for ``definition`` (pandas semantics:
    NaN counts as null; null values are not checked by range and set expectations)."""
    column = str(definition.kwargs["column"])
    col = pl.col(column)
    is_float = frame.schema[column].is_float()
    value = col.fill_nan(None) if is_float else col
    kind = definition.expectation
    if kind == "ExpectColumnValuesToNotBeNull":
        return value.is_null()
    if kind == "ExpectColumnValuesToBeBetween":
        low, high = definition.kwargs.get("min_value"), definition.kwargs.get("max_value")
        out = pl.lit(False)
        if low is not None:
            out = out | (value < low)
        if high is not None:
            out = out | (value > high)
        return out.fill_null(False)
    if kind == "ExpectColumnValuesToBeInSet":
        allowed = list(definition.kwargs["value_set"])
        return (~value.is_in(allowed)).fill_null(False)
    raise ValueError(
        f"feature suite rule {definition.rule!r} uses {kind}, which the polars evaluation in "
        "expectations.feature_gate does not implement"
    )


def check_features(features: pl.DataFrame) -> FeatureCheck:
    """Split ``features`` into rows that pass the feature suite and rows that fail it."""
    derived, definitions = features_suite(features)
    rule_fails = [_fails(d, derived).alias(f"{_FAIL}{i}") for i, d in enumerate(definitions)]
    # one pass for the mask; the flag of each rule only when some row failed
    bad_mask = derived.lazy().select(pl.any_horizontal(rule_fails).alias("bad")).collect()["bad"]
    if not bad_mask.any():
        return FeatureCheck(features, features.head(0), ())
    fails = derived.select(rule_fails)
    bad_rows = [int(i) for i in bad_mask.arg_true().to_list()]
    passing, failing = features.filter(~bad_mask), features.filter(bad_mask)
    floats = [c for c, t in features.schema.items() if c not in FEATURE_KEYS and t.is_float()]
    failed = fails.filter(bad_mask).iter_rows()
    problems = []
    for row, values, flags in zip(bad_rows, failing.iter_rows(named=True), failed, strict=True):
        rules: list[str] = []
        columns: list[str] = []
        reasons: list[str] = []
        for d, failed_here in zip(definitions, flags, strict=True):
            if not failed_here:
                continue
            rules.append(d.rule)
            if d.rule == "finite":  # name the non-finite columns, not the derived flag
                offending = [
                    c for c in floats if values[c] is not None and not math.isfinite(values[c])
                ]
                columns += offending
                shown = ", ".join(f"{c}={show_value(values[c])}" for c in offending[:5])
                more = f" and {len(offending) - 5} more" if len(offending) > 5 else ""
                reasons.append(f"{d.describe} ({shown}{more})")
            else:
                column = str(d.kwargs["column"])
                columns.append(column)
                value = values[column] if column in values else derived[column][row]
                reasons.append(f"{d.describe} ({column}={show_value(value)})")
        problems.append(
            FeatureProblem(
                row,
                tuple(dict.fromkeys(rules)),
                tuple(dict.fromkeys(columns)),
                "; ".join(reasons),
            )
        )
    return FeatureCheck(passing, failing, tuple(problems))


def quarantine_features(
    con: duckdb.DuckDBPyConnection,
    check: FeatureCheck,
    *,
    settings: Settings,
    run_id: str | None = None,
) -> int:
    """Write the failing rows of ``check`` to ``quarantine`` with the quality gate's writer (one
    row format, one id scheme for every table). Returns the number of rows."""
    rows = list(range(check.failing.height))
    problems = {
        i: [Problem(",".join(p.rules), ",".join(p.columns), p.reason, "critical")]
        for i, p in enumerate(check.problems)
    }
    failing = check.failing
    write_quarantine(
        con, "features", failing.to_arrow(), failing.with_row_index("_row"), rows, problems,
        settings, run_id,
    )  # fmt: skip
    return len(rows)


def gate_features(
    con: duckdb.DuckDBPyConnection,
    features: pl.DataFrame,
    *,
    settings: Settings,
    run_id: str | None = None,
) -> tuple[WriteResult, int]:
    """Quarantine the rows of ``features`` that fail the suite and upsert the rest.

    Returns the write of the passing rows and the number of rows quarantined."""
    check = check_features(features)
    quarantined = quarantine_features(con, check, settings=settings, run_id=run_id)
    return upsert(con, "features", check.passing.to_arrow(), settings=settings), quarantined
