"""The quality gate: every batch is validated before it is merged.

``gate_and_merge`` reads a raw Arrow batch of any column types, validates it with the
table's suite (``expectations.specs``), quarantines the rows that fail (with the rule, the
column and the offending values), merges the rest with ``warehouse.upsert`` and writes one
``quality_results`` row. It never raises on bad data; ``GateResult.success`` says whether
the failure policy (``GatePolicy``) fails the batch, and ``raise_for_failure`` turns that
into an exception for a flow.

Writes, in this order, each idempotent: quarantine rows (``quarantine_id`` is a hash of
table, raw row, rules and occurrence, so re-validating a batch adds no rows), the passing
rows, then the ``quality_results`` row.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import hashlib
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import duckdb
import polars as pl
import pyarrow as pa

from expectations.coerce import coerce
from expectations.derive import derive_candles, derive_order_books, derive_trades
from expectations.policy import GatePolicy
from expectations.specs import SUITE_VERSION, ExpectationDef, TableSpec, spec_for, suite_for
from warehouse import upsert
from warehouse.settings import Settings

__all__ = ["GatePolicy", "GateResult", "QualityGateError", "gate_and_merge"]


class QualityGateError(RuntimeError):
    """A batch failed the quality gate's policy; the message names symbol, rule and count."""


@dataclass(frozen=True)
class GateResult:
    table: str
    rows_in: int
    rows_merged: int  # rows that passed and were upserted
    rows_quarantined: int
    success: bool  # False when the failure policy says the batch fails
    warnings: tuple[str, ...]  # e.g. "BTC/USDT 1m: 12 gaps (0.9% of expected bars)"
    validation_id: str
    message: str  # human summary naming symbol, rule, count

    def raise_for_failure(self) -> GateResult:
        if not self.success:
            raise QualityGateError(self.message)
        return self


@dataclass
class Problem:
    """Why one row failed one rule: what a ``quarantine`` row says (``column`` may list several,
    comma-separated)."""

    rule: str
    column: str
    message: str
    severity: str


# the Arrow shape of a `quarantine` batch (the table itself is defined in the migrations)
QUARANTINE_SCHEMA = pa.schema(
    [
        ("quarantine_id", pa.string()),
        ("run_id", pa.string()),
        ("table_name", pa.string()),
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("timeframe", pa.string()),
        ("ts", pa.timestamp("ms", tz="UTC")),
        ("expectation", pa.string()),
        ("column_name", pa.string()),
        ("reason", pa.string()),
        ("row_json", pa.string()),
    ]
)


def stable_id(*parts: object) -> str:
    """A 32-hex id from ``parts`` (the same parts give the same id: reruns write nothing new)."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]


def _fingerprint(batch: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_table(batch)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:32]


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


def _row_json(batch: pa.Table, rows: list[int]) -> list[str]:
    if not rows:
        return []
    return [json.dumps(r, default=str, sort_keys=True) for r in batch.take(rows).to_pylist()]


def _single(frame: pl.DataFrame, column: str) -> str | None:
    if column not in frame.columns:
        return None
    values = frame[column].drop_nulls().unique()
    return str(values[0]) if values.len() == 1 else None


def _series_label(series: tuple[Any, ...], spec: TableSpec) -> str:
    values = dict(zip(spec.series, series, strict=True))
    return " ".join(str(values[c]) for c in spec.series if c != "exchange")


def _gx_frame(frame: pl.DataFrame, spec: TableSpec, definitions: tuple[ExpectationDef, ...]):  # noqa: ANN202
    needed = sorted({c for d in definitions for c in d.gx_columns})
    return frame.select(needed).to_pandas()


def _candle_warnings(
    gaps: list, extreme: int, frame: pl.DataFrame, spec: TableSpec, policy: GatePolicy
) -> list[str]:
    warnings = []
    for g in gaps:
        if g.missing_bars:
            above = g.missing_fraction > policy.max_gap_fraction
            warnings.append(
                f"{_series_label(g.series, spec)}: {g.gaps} gaps, {g.missing_bars} missing bars "
                f"({g.missing_fraction:.1%} of expected bars)"
                + (f", above the {policy.max_gap_fraction:.0%} threshold" if above else "")
            )
    if extreme:
        action = (
            "quarantined" if policy.extreme_return_action == "quarantine" else "flagged, merged"
        )
        warnings.append(
            f"{extreme} extreme return(s) "
            f"(|log return| > {policy.extreme_return_sigmas:g} rolling sigma), {action}"
        )
    return warnings


_F = TypeVar("_F", bound=Callable[..., Any])


@contextmanager
def _gc_paused() -> Iterator[None]:
    """A batch with many bad rows allocates millions of small objects (problems, row JSON);
    the cyclic collector re-scanned them all at each of its runs, which made the gate's cost
    grow faster than the batch. Nothing here makes reference cycles, so it can wait."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _without_gc(fn: _F) -> _F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _gc_paused():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@_without_gc
def gate_and_merge(
    con: duckdb.DuckDBPyConnection,
    table: str,
    batch: pa.Table,
    *,
    settings: Settings,
    run_id: str | None = None,
    policy: GatePolicy | None = None,
    now: dt.datetime | None = None,
) -> GateResult:
    """Validate ``batch`` for ``table``; merge the passing rows, quarantine the rest.

    ``now`` is the clock that the future-timestamp and closed-candle rules judge against
    (default: the wall clock); an explicit one makes a validation reproducible.
    """
    started = time.perf_counter()
    policy = policy or GatePolicy()
    spec = spec_for(table)
    definitions = suite_for(table, policy)
    now = now or dt.datetime.now(dt.UTC)
    now_ms = int(now.timestamp() * 1000)
    rows_in = batch.num_rows
    fingerprint = _fingerprint(batch)
    validation_id = stable_id(run_id or uuid.uuid4().hex, table, fingerprint)
    suite_name = f"{table}@v{SUITE_VERSION}"

    coerced = coerce(spec, batch, extra_columns=policy.extra_columns)
    frame = coerced.frame
    warnings: list[str] = []
    if coerced.dropped_columns and policy.extra_columns == "drop":
        warnings.append(
            f"dropped column(s) the table does not have: {list(coerced.dropped_columns)}"
        )

    problems: dict[int, list[Problem]] = defaultdict(list)
    details: dict[str, Any] = {"fingerprint": fingerprint, "suite_version": SUITE_VERSION}
    schema_failure = coerced.schema_problem
    if rows_in == 0:
        warnings.append(f"empty batch for {table}: nothing to validate or merge")
    elif schema_failure:
        for row in range(rows_in):
            problems[row].append(
                Problem("schema", "", f"batch refused: {schema_failure}", "critical")
            )
    else:
        for p in coerced.problems:
            problems[p.row].append(Problem(p.rule, p.column, p.message, "critical"))
        if table == "candles":
            frame, gaps, extreme = derive_candles(frame, spec, policy, now_ms)
            warnings += _candle_warnings(gaps, extreme, frame, spec, policy)
            details["gaps"] = [
                {
                    "series": list(g.series),
                    "bars": g.bars_present,
                    "gaps": g.gaps,
                    "missing_bars": g.missing_bars,
                }
                for g in gaps
            ]
        elif table == "order_book_snapshots":
            frame = derive_order_books(frame, spec, policy, now_ms)
        else:
            frame = derive_trades(frame, spec, policy, now_ms)
        run = _engine_validate(
            settings, suite_name, definitions, _gx_frame(frame, spec, definitions), validation_id
        )
        details["gx_statistics"] = run.statistics
        # each expectation's outcome, for the quality report (expectations.quality_page)
        details["expectations"] = [
            {
                "rule": o.definition.rule,
                "columns": ",".join(o.definition.columns),
                "severity": o.definition.severity,
                "unexpected": o.unexpected_count,
            }
            for o in run.outcomes
        ]
        rule_counts: Counter[str] = Counter()
        for outcome in run.outcomes:
            d = outcome.definition
            if not outcome.unexpected_rows:
                continue
            rule_counts[d.rule] += len(outcome.unexpected_rows)
            if d.severity == "warning":
                if d.rule not in ("gaps", "extreme_return"):
                    warnings.append(f"{outcome.unexpected_count} row(s): {d.describe}")
                continue
            # python lists once: indexing a polars column per row cost seconds on big bad batches
            shown = {c: frame[c].to_list() for c in d.columns} if d.columns else None
            for row in outcome.unexpected_rows:
                already = {(p.rule, p.column) for p in problems[row]}
                if d.rule == "not_null" and ("type_coercion", d.columns[0]) in already:
                    continue
                values = (
                    ", ".join(f"{c}={show_value(shown[c][row])}" for c in d.columns)
                    if shown is not None
                    else ""
                )
                problems[row].append(
                    Problem(d.rule, ",".join(d.columns), f"{d.describe} ({values})", d.severity)
                )
        details["unexpected_by_rule"] = dict(rule_counts)

    bad_rows = [r for r, ps in problems.items() if any(p.severity == "critical" for p in ps)]
    bad_set = set(bad_rows)  # once: a membership test per row kept big bad batches quadratic
    held_rows = [r for r, ps in problems.items() if ps and r not in bad_set]
    allowed = max(policy.allowed_bad_rows, policy.max_bad_fraction * rows_in)
    success = not schema_failure and len(bad_rows) <= allowed
    if rows_in == 0 and policy.empty_batch_fails:
        success = False
    if not success and policy.quarantine_batch_on_failure and rows_in:
        for row in range(rows_in):
            if row not in problems:
                problems[row].append(
                    Problem(
                        "batch_failed", "", "batch failed the quality policy; row held back", "hold"
                    )
                )

    quarantined = sorted(problems)
    write_quarantine(con, table, batch, frame, quarantined, problems, settings, run_id)
    quarantined_set = set(quarantined)
    passing = frame.filter(~pl.col("_row").is_in(quarantined)) if quarantined else frame
    if rows_in and not schema_failure:
        passing = passing.select(spec.column_names)
        written = (
            upsert(con, table, passing.to_arrow(), settings=settings) if passing.height else None
        )
    else:
        written = None
        passing = passing.head(0)
    rows_merged = passing.height if not schema_failure else 0
    rows_quarantined = len(quarantined_set)

    if held_rows:
        warnings.append(
            f"{len(held_rows)} row(s) held in quarantine without failing the batch "
            "(unclosed candles or a failed batch's passing rows)"
        )
    message = _message(
        table,
        frame,
        rows_in,
        rows_merged,
        rows_quarantined,
        bad_rows,
        problems,
        success,
        allowed,
        schema_failure,
        policy,
    )
    details["write"] = (
        {"inserted": written.inserted, "replaced": written.replaced, "unchanged": written.unchanged}
        if written
        else None
    )
    details["elapsed_s"] = round(time.perf_counter() - started, 4)
    _write_result(
        con,
        settings,
        validation_id,
        run_id,
        table,
        suite_name,
        frame,
        success,
        rows_in,
        rows_merged,
        rows_quarantined,
        warnings,
        details,
        now,
    )
    return GateResult(
        table=table,
        rows_in=rows_in,
        rows_merged=rows_merged,
        rows_quarantined=rows_quarantined,
        success=success,
        warnings=tuple(warnings),
        validation_id=validation_id,
        message=message,
    )


def _engine_validate(
    settings: Settings,
    suite_name: str,
    definitions: tuple[ExpectationDef, ...],
    frame: Any,
    run_name: str,
) -> Any:
    from expectations import engine  # GX is imported here, on first use only

    return engine.validate(settings, suite_name, definitions, frame, run_name=run_name)


def _message(
    table: str,
    frame: pl.DataFrame,
    rows_in: int,
    merged: int,
    quarantined: int,
    bad_rows: list[int],
    problems: dict[int, list[Problem]],
    success: bool,
    allowed: float,
    schema_failure: str | None,
    policy: GatePolicy,
) -> str:
    where = (
        " ".join(v for v in (_single(frame, "symbol"), _single(frame, "timeframe")) if v) or "batch"
    )
    # rows per rule, not problems: a row breaking three OHLC pairs counts once, so the
    # counts read as rows and match "quarantined"
    rules = Counter(rule for ps in problems.values() for rule in dict.fromkeys(p.rule for p in ps))
    by_rule = ", ".join(f"{rule}: {n}" for rule, n in rules.most_common())
    text = f"{table} {where}: {rows_in} rows in, {merged} merged, {quarantined} quarantined"
    if by_rule:
        text += f" ({by_rule})"
    if schema_failure:
        return f"FAILED {text}; {schema_failure}"
    if not success:
        if rows_in == 0:
            return f"FAILED {text}; empty batch and the policy fails empty batches"
        return (
            f"FAILED {text}; {len(bad_rows)} bad row(s) exceed the policy limit "
            f"(max {policy.max_bad_fraction:.1%} of the batch, {allowed:g} rows here)"
        )
    return text


def write_quarantine(
    con: duckdb.DuckDBPyConnection,
    table: str,
    batch: pa.Table,
    frame: pl.DataFrame,
    rows: list[int],
    problems: dict[int, list[Problem]],
    settings: Settings,
    run_id: str | None,
) -> None:
    """Write ``rows`` of ``batch`` (positions) to ``quarantine`` with their ``problems``; the
    keys come from ``frame`` (the checked rows with a ``_row`` index). Idempotent: the id hashes
    the table, the row, its rules and the row's occurrence (identical rows stay distinct)."""
    if not rows:
        return
    raw = _row_json(batch, rows)
    occurrences: Counter[tuple[str, str]] = Counter()
    out: dict[str, list[Any]] = defaultdict(list)
    keys = ("exchange", "symbol", "timeframe", "ts")
    lookup = (
        {c: frame[c].to_list() if c in frame.columns else [None] * frame.height for c in keys}
        if "_row" in frame.columns
        else None
    )
    for row, row_json in zip(rows, raw, strict=True):
        ps = problems[row]
        rules = ",".join(dict.fromkeys(p.rule for p in ps))
        occurrences[(row_json, rules)] += 1
        out["quarantine_id"].append(
            stable_id(table, row_json, rules, occurrences[(row_json, rules)])
        )
        out["run_id"].append(run_id)
        out["table_name"].append(table)
        for c in keys:
            out[c].append(lookup[c][row] if lookup is not None else None)
        out["expectation"].append(rules)
        columns = dict.fromkeys(c for p in ps for c in p.column.split(",") if c)
        out["column_name"].append(",".join(columns) or None)
        out["reason"].append("; ".join(p.message for p in ps))
        out["row_json"].append(row_json)
    upsert(con, "quarantine", pa.table(dict(out), schema=QUARANTINE_SCHEMA), settings=settings)


def _write_result(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    validation_id: str,
    run_id: str | None,
    table: str,
    suite: str,
    frame: pl.DataFrame,
    success: bool,
    rows_in: int,
    merged: int,
    quarantined: int,
    warnings: list[str],
    details: dict[str, Any],
    now: dt.datetime,
) -> None:
    row = {
        "validation_id": [validation_id],
        "run_id": [run_id],
        "table_name": [table],
        "suite": [suite],
        "exchange": [_single(frame, "exchange")],
        "symbol": [_single(frame, "symbol")],
        "timeframe": [_single(frame, "timeframe")],
        "success": [success],
        "rows_in": [rows_in],
        "rows_merged": [merged],
        "rows_quarantined": [quarantined],
        "warnings_json": [json.dumps(warnings)],
        "details_json": [json.dumps(details, default=str)],
        "validated_at": [now],
    }
    schema = pa.schema(
        [
            ("validation_id", pa.string()),
            ("run_id", pa.string()),
            ("table_name", pa.string()),
            ("suite", pa.string()),
            ("exchange", pa.string()),
            ("symbol", pa.string()),
            ("timeframe", pa.string()),
            ("success", pa.bool_()),
            ("rows_in", pa.int64()),
            ("rows_merged", pa.int64()),
            ("rows_quarantined", pa.int64()),
            ("warnings_json", pa.string()),
            ("details_json", pa.string()),
            ("validated_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    upsert(con, "quality_results", pa.table(row, schema=schema), settings=settings)
