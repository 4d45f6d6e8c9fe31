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
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from expectations.coerce import coerce
from expectations.derive import derive_candles, derive_order_books, derive_trades
from expectations.derive_futures import FUTURES_TABLES, derive_futures
from expectations.policy import GatePolicy
from expectations.rowjson import row_json_series, show_value, shown
from expectations.rules import mostly_success, unexpected_rows
from expectations.specs import SUITE_VERSION, ExpectationDef, TableSpec, spec_for, suite_for
from warehouse import upsert
from warehouse.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "GatePolicy",
    "GateResult",
    "QualityGateError",
    "combine",
    "gate_and_merge",
    "gate_series",
    "gx_input",
    "prepare_gate",
    "show_value",
]


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
    # the series' key (the table spec's series columns) when the call was judged per series
    series: tuple[Any, ...] | None = None

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


def _flat(t: pa.DataType) -> bool:
    return (
        pa.types.is_primitive(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    ) and not pa.types.is_null(t)


def _canonical(values: pa.Array) -> pa.Array:
    """``values`` in one layout: nulls filled with a zero, no validity buffer (the nulls are
    hashed apart). A series taken out of a bigger batch gets validity buffers, and other bytes
    under its nulls, that the same rows passed alone do not have."""
    t = values.type
    if values.null_count:
        zero = pa.scalar("" if pa.types.is_string(t) or pa.types.is_large_string(t) else 0)
        if pa.types.is_boolean(t):
            zero = pa.scalar(False)
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
            zero = pa.scalar(b"")
        values = pc.fill_null(values, zero.cast(t))
    return pa.Array.from_buffers(
        t, len(values), [None, *values.buffers()[1:]], offset=values.offset
    )


def _fingerprint(batch: pa.Table) -> str:
    """A hash of the batch's content, whatever its layout (chunks, validity buffers): a
    series taken out of a bigger batch hashes as the same rows passed alone."""
    digest = hashlib.sha256(batch.schema.remove_metadata().to_string().encode())
    columns = []
    for column in batch.columns:
        values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        digest.update(np.packbits(pc.is_valid(values).to_numpy(zero_copy_only=False)).tobytes())
        columns.append(_canonical(values) if _flat(values.type) else values)
    canonical = pa.Table.from_arrays(columns, names=[f"c{i}" for i in range(len(columns))])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, canonical.schema) as writer:
        writer.write_table(canonical)
    digest.update(memoryview(sink.getvalue()))
    return digest.hexdigest()[:32]


def _single(frame: pl.DataFrame, column: str) -> str | None:
    if column not in frame.columns:
        return None
    values = frame[column].drop_nulls().unique()
    return str(values[0]) if values.len() == 1 else None


def _series_label(series: tuple[Any, ...], spec: TableSpec) -> str:
    values = dict(zip(spec.series, series, strict=True))
    return " ".join(str(values[c]) for c in spec.series if c != "exchange")


def _gx_frame(frame: pl.DataFrame, definitions: tuple[ExpectationDef, ...]) -> pl.DataFrame:
    """The columns the suite's expectations read (GX gets them as pandas)."""
    needed = sorted({c for d in definitions for c in d.gx_columns})
    return frame.select(needed)


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


@dataclass
class _Found:
    """The problems a gate call found, a column each, in the order found (``order``)."""

    chunks: list[pl.DataFrame] = field(default_factory=list)
    added: int = 0

    def add(
        self,
        rows: np.ndarray | list[int],
        rule: str,
        column: str,
        messages: list[str] | pl.Series | str,
        severity: str,
    ) -> None:
        n = len(rows)
        if not n:
            return
        text = pl.Series("message", [messages] * n if isinstance(messages, str) else messages)
        self.chunks.append(
            pl.DataFrame(
                {
                    "row": pl.Series(np.asarray(rows, dtype=np.int64)),
                    "order": pl.Series(np.arange(self.added, self.added + n, dtype=np.int64)),
                    "rule": pl.Series([rule] * n, dtype=pl.String),
                    "column": pl.Series([column] * n, dtype=pl.String),
                    "message": text.cast(pl.String),
                    "severity": pl.Series([severity] * n, dtype=pl.String),
                }
            )
        )
        self.added += n

    def by_row(self) -> pl.DataFrame:
        """One row per problem row: its rules (distinct, in order), columns, reason, whether
        any problem is critical, and ``first`` (when the row was first found)."""
        schema: dict[str, pl.DataType] = {
            "row": pl.Int64(),
            "first": pl.Int64(),
            "rules": pl.String(),
            "rule_list": pl.List(pl.String),
            "reason": pl.String(),
            "critical": pl.Boolean(),
            "column_name": pl.String(),
        }
        if not self.chunks:
            return pl.DataFrame(schema=schema)
        found = pl.concat(self.chunks).sort(["row", "order"])
        if found["row"].is_unique().all():  # one problem a row (an all-bad batch): no grouping
            return found.select(
                "row",
                pl.col("order").alias("first"),
                pl.col("rule").alias("rules"),
                pl.concat_list("rule").alias("rule_list"),
                pl.col("message").alias("reason"),
                (pl.col("severity") == "critical").alias("critical"),
                # a problem names distinct columns ("high,low"): nothing to deduplicate
                pl.when(pl.col("column") != "").then(pl.col("column")).alias("column_name"),
            )
        rows = found.group_by("row", maintain_order=True).agg(
            pl.col("order").min().alias("first"),
            pl.col("rule").unique(maintain_order=True).str.join(",").alias("rules"),
            pl.col("rule").unique(maintain_order=True).alias("rule_list"),
            pl.col("message").str.join("; ").alias("reason"),
            (pl.col("severity") == "critical").any().alias("critical"),
        )
        columns = (
            found.select("row", pl.col("column").str.split(","))
            .explode("column")
            .filter(pl.col("column") != "")
            .group_by("row", maintain_order=True)
            .agg(pl.col("column").unique(maintain_order=True).str.join(",").alias("column_name"))
        )
        return rows.join(columns, on="row", how="left").select(list(schema))


def _outcome_messages(frame: pl.DataFrame, d: ExpectationDef, rows: np.ndarray) -> pl.Series:
    """``"<describe> (<col>=<value>, ...)"`` for ``rows``: what a quarantine reason says."""
    if not d.columns:
        return pl.Series([f"{d.describe} ()"] * len(rows), dtype=pl.String)
    taken = frame[rows]
    parts: list[pl.Series | pl.Expr] = [pl.lit(f"{d.describe} (")]
    for i, c in enumerate(d.columns):
        parts += [pl.lit((", " if i else "") + f"{c}="), shown(taken[c])]
    parts.append(pl.lit(")"))
    return pl.select(pl.concat_str(parts)).to_series()


def _outcome_rows(
    settings: Settings,
    suite_name: str,
    definitions: tuple[ExpectationDef, ...],
    checked: pl.DataFrame,
    validation_id: str,
) -> tuple[Any, list[np.ndarray]]:
    """GX's run of the suite, and the rows each expectation rejected.

    GX counts; ``expectations.rules`` finds the rows. Where a count differs (or a rule is not
    covered there), GX runs again with its own row lists and those are used."""
    run = _engine_validate(settings, suite_name, definitions, checked.to_pandas(), validation_id)
    found = unexpected_rows(checked, definitions)
    if all(
        rows is not None and len(rows) == o.unexpected_count
        for rows, o in zip(found, run.outcomes, strict=True)
    ):
        return run, [r for r in found if r is not None]
    run = _engine_validate(
        settings, suite_name, definitions, checked.to_pandas(), validation_id, rows=True
    )
    return run, [np.asarray(o.unexpected_rows, dtype=np.int64) for o in run.outcomes]


@dataclass(frozen=True)
class _Series:
    """The rows of one series in a gate call (``key`` None: the whole call is one group)."""

    key: tuple[Any, ...] | None
    rows: np.ndarray

    def of(self, batch: pa.Table) -> pa.Table:
        """This series' rows of ``batch``: a slice (no copy) when they are consecutive, as
        when a batch holds one fetch after another."""
        n = len(self.rows)
        if n == batch.num_rows:
            return batch
        if n and int(self.rows[-1]) - int(self.rows[0]) == n - 1:
            return batch.slice(int(self.rows[0]), n)
        return batch.take(self.rows)


def _series_groups(frame: pl.DataFrame, spec: TableSpec, whole: bool) -> list[_Series]:
    if whole or any(c not in frame.columns for c in spec.series):
        return [_Series(None, np.arange(frame.height, dtype=np.int64))]
    groups = (
        frame.select(spec.series)
        .with_row_index("_pos")
        .group_by(list(spec.series), maintain_order=True)
        .agg(pl.col("_pos"))
    )
    positions = groups["_pos"]  # each group's positions as numpy, not as Python lists
    return [
        _Series(key, positions[i].to_numpy().astype(np.int64, copy=False))
        for i, key in enumerate(groups.select(spec.series).iter_rows())
    ]


def _missing_masks(outcomes: tuple[Any, ...], checked: pl.DataFrame) -> list[np.ndarray | None]:
    """Per expectation, the rows whose value GX skips as missing (null or NaN), where it
    skips them: column expectations other than not-null (once per call, not per series)."""
    masks: list[np.ndarray | None] = []
    for outcome in outcomes:
        d = outcome.definition
        if "column" in d.kwargs and d.expectation != "ExpectColumnValuesToNotBeNull":
            values = checked[d.kwargs["column"]]
            missing = values.is_null()
            if values.dtype.is_float():
                missing = missing | values.is_nan()
            masks.append(missing.to_numpy())
        else:
            masks.append(None)
    return masks


def _statistics(
    outcomes: tuple[Any, ...],
    counts: list[int],
    missing: list[np.ndarray | None],
    rows: np.ndarray,
) -> dict[str, Any]:
    """What GX's validation statistics would say about these rows alone."""
    successful = 0
    for outcome, unexpected, skipped in zip(outcomes, counts, missing, strict=True):
        nonnull = len(rows) - (_count_in(rows, skipped) if skipped is not None else 0)
        successful += mostly_success(unexpected, nonnull, outcome.definition.kwargs.get("mostly"))
    evaluated = len(outcomes)
    return {
        "evaluated_expectations": evaluated,
        "successful_expectations": successful,
        "unsuccessful_expectations": evaluated - successful,
        "success_percent": successful / evaluated * 100 if evaluated else None,
    }


def _labels(
    frame: pl.DataFrame, spec: TableSpec, key: tuple[Any, ...] | None
) -> dict[str, str | None]:
    """Exchange, symbol and timeframe of a series' rows: from its group key when the call was
    grouped (no gather of its rows), else the one value the rows share (None if several)."""
    known = dict(zip(spec.series, key, strict=True)) if key is not None else {}
    out: dict[str, str | None] = {}
    for column in ("exchange", "symbol", "timeframe"):
        if column in known:
            out[column] = None if known[column] is None else str(known[column])
        else:
            out[column] = _single(frame, column)
    return out


def _derive(
    table: str, frame: pl.DataFrame, spec: TableSpec, policy: GatePolicy, now_ms: int
) -> tuple[pl.DataFrame, list[Any]]:
    """The coerced frame with the table's rule columns (and, for candles, the gaps)."""
    if table == "candles":
        frame, gaps, _ = derive_candles(frame, spec, policy, now_ms)
        return frame, gaps
    if table == "order_book_snapshots":
        return derive_order_books(frame, spec, policy, now_ms), []
    if table in FUTURES_TABLES:
        return derive_futures(table, frame, spec, policy, now_ms)
    return derive_trades(frame, spec, policy, now_ms), []


def gx_input(
    table: str,
    batch: pa.Table,
    *,
    policy: GatePolicy | None = None,
    now: dt.datetime | None = None,
) -> tuple[str, tuple[ExpectationDef, ...], pd.DataFrame]:
    """The suite name, the expectations and the pandas frame that ``gate_series`` hands Great
    Expectations for ``batch``: what to time GX alone on (``benchmarks/bench_backfill.py``)."""
    policy = policy or GatePolicy()
    spec = spec_for(table)
    definitions = suite_for(table, policy)
    now_ms = int((now or dt.datetime.now(dt.UTC)).timestamp() * 1000)
    frame, _ = _derive(table, coerce(spec, batch).frame, spec, policy, now_ms)
    return f"{table}@v{SUITE_VERSION}", definitions, _gx_frame(frame, definitions).to_pandas()


def _count_in(rows: np.ndarray, member: np.ndarray) -> int:
    """How many of ``rows`` are True in the boolean mask ``member``."""
    return int(member[rows].sum()) if len(rows) else 0


@_without_gc
def prepare_gate(
    table: str, *, settings: Settings, policy: GatePolicy | None = None
) -> threading.Thread:
    """Start loading ``table``'s Great Expectations checkpoint in the background (its import
    alone costs about 2 s in a new process); call it before fetching or reading the batch
    that ``gate_series`` will validate."""
    from expectations import engine

    definitions = suite_for(table, policy or GatePolicy())
    return engine.prepare_in_background(settings, f"{table}@v{SUITE_VERSION}", definitions)


def gate_series(
    con: duckdb.DuckDBPyConnection,
    table: str,
    batch: pa.Table,
    *,
    settings: Settings,
    run_id: str | None = None,
    policy: GatePolicy | None = None,
    now: dt.datetime | None = None,
) -> list[GateResult]:
    """Validate ``batch`` (any number of series) in ONE call; one ``GateResult`` per series.

    The suite runs once over the whole batch (one coercion, one set of derived rules whose
    order, gap and duplicate checks are evaluated per series, one GX checkpoint run); the
    policy, the quarantine of a failed series' passing rows and the ``quality_results`` rows
    are per series, as separate calls would give them (same validation ids, counts, messages,
    warnings and details, except ``details.write``: the call writes once, and its counts are
    the call's; ``details.series_in_call`` says how many series shared it). Then one write
    of the quarantine, one of the passing rows, one of the results.

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
    base_id = run_id or uuid.uuid4().hex
    suite_name = f"{table}@v{SUITE_VERSION}"

    coerced = coerce(spec, batch, extra_columns=policy.extra_columns)
    frame = coerced.frame
    call_warnings: list[str] = []
    if coerced.dropped_columns and policy.extra_columns == "drop":
        call_warnings.append(
            f"dropped column(s) the table does not have: {list(coerced.dropped_columns)}"
        )
    schema_failure = coerced.schema_problem
    groups = _series_groups(frame, spec, whole=rows_in == 0 or bool(schema_failure))
    fingerprints: list[str] = []
    found = _Found()
    gaps: list[Any] = []
    outcome_rows: list[np.ndarray] = []
    run: Any = None
    if rows_in == 0:
        call_warnings.append(f"empty batch for {table}: nothing to validate or merge")
    elif schema_failure:
        found.add(np.arange(rows_in), "schema", "", f"batch refused: {schema_failure}", "critical")
    else:
        coercion_failed: dict[str, set[int]] = defaultdict(set)
        for p in coerced.problems:
            found.add([p.row], p.rule, p.column, p.message, "critical")
            if p.rule == "type_coercion":
                coercion_failed[p.column].add(p.row)
        frame, gaps = _derive(table, frame, spec, policy, now_ms)
        fingerprints = [_fingerprint(series.of(batch)) for series in groups]
        # the GX run's name: the series' own id when the call holds one series
        validation_id = stable_id(base_id, table, *fingerprints)
        run, outcome_rows = _outcome_rows(
            settings, suite_name, definitions, _gx_frame(frame, definitions), validation_id
        )
        for outcome, rows in zip(run.outcomes, outcome_rows, strict=True):
            d = outcome.definition
            if not len(rows) or d.severity == "warning":
                continue
            if d.rule == "not_null" and coercion_failed.get(d.columns[0]):
                rows = rows[~np.isin(rows, list(coercion_failed[d.columns[0]]))]
            found.add(
                rows, d.rule, ",".join(d.columns), _outcome_messages(frame, d, rows), d.severity
            )

    group_of = np.zeros(rows_in, dtype=np.int64)
    for g, series in enumerate(groups):
        group_of[series.rows] = g
    problems = found.by_row()
    problem_rows = problems["row"].to_numpy()
    has_problem = np.zeros(rows_in, dtype=bool)
    has_problem[problem_rows] = True
    critical = np.zeros(rows_in, dtype=bool)
    critical[problem_rows[problems["critical"].to_numpy()]] = True
    extreme = (
        ~frame["return_within_sigma"].to_numpy()
        if table == "candles" and rows_in and not schema_failure
        else np.zeros(rows_in, dtype=bool)
    )

    # rows held without failing (unclosed candles), counted before a failed series' passing
    # rows join them
    held_only = has_problem & ~critical
    # the policy, per series: a failed series may hold back its passing rows too
    successes: list[bool] = []
    for series in groups:
        n = len(series.rows)
        allowed = max(policy.allowed_bad_rows, policy.max_bad_fraction * n)
        success = not schema_failure and _count_in(series.rows, critical) <= allowed
        if n == 0 and policy.empty_batch_fails:
            success = False
        successes.append(success)
        if not success and policy.quarantine_batch_on_failure and n:
            held = series.rows[~has_problem[series.rows]]
            found.add(
                held,
                "batch_failed",
                "",
                "batch failed the quality policy; row held back",
                "hold",
            )
            has_problem[held] = True
    if found.added > len(problem_rows) and policy.quarantine_batch_on_failure:
        problems = found.by_row()
    problems = problems.sort("row")

    write_quarantine_rows(con, table, batch, frame, problems, settings, run_id)
    passing = frame.filter(pl.Series(~has_problem)) if rows_in else frame
    written = None
    if rows_in and not schema_failure:
        passing = passing.select(spec.column_names)
        if passing.height:
            written = upsert(con, table, passing.to_arrow(), settings=settings)
    write = (
        {"inserted": written.inserted, "replaced": written.replaced, "unchanged": written.unchanged}
        if written
        else None
    )

    results: list[GateResult] = []
    result_rows: list[dict[str, Any]] = []
    per_problem_group = group_of[problems["row"].to_numpy()] if rows_in else np.zeros(0, int)
    n_groups = len(groups)
    # per series (row) and expectation (column): rows rejected, counted in one pass each
    per_group = np.stack(
        [np.bincount(group_of[rows], minlength=n_groups) for rows in outcome_rows]
        or [np.zeros(n_groups, dtype=np.int64)],
        axis=1,
    )
    single = len(groups) == 1
    # each series' problem rows, split once (not filtered once per series)
    by_group = (
        {
            int(k[0]): part.drop("_group")
            for k, part in problems.with_columns(_group=pl.Series(per_problem_group))
            .partition_by("_group", as_dict=True)
            .items()
        }
        if not single and problems.height
        else {}
    )
    missing = (
        _missing_masks(run.outcomes, _gx_frame(frame, definitions))
        if run is not None and not single
        else []
    )
    for g, (series, success) in enumerate(zip(groups, successes, strict=True)):
        n = len(series.rows)
        labels = _labels(frame, spec, series.key)
        fingerprint = fingerprints[g] if fingerprints else _fingerprint(series.of(batch))
        validation_id = stable_id(base_id, table, fingerprint)
        mine = problems if single else by_group.get(g, problems.head(0))
        bad = _count_in(series.rows, critical)
        quarantined = mine.height
        merged = n - quarantined if not schema_failure else 0
        warnings = list(call_warnings)
        details: dict[str, Any] = {"fingerprint": fingerprint, "suite_version": SUITE_VERSION}
        if run is not None:
            counts = [int(c) for c in per_group[g]][: len(run.outcomes)]
            if table == "candles":
                own = [gap for gap in gaps if single or gap.series == series.key]
                warnings += _candle_warnings(
                    own, _count_in(series.rows, extreme), frame, spec, policy
                )
                details["gaps"] = [
                    {
                        "series": list(gap.series),
                        "bars": gap.bars_present,
                        "gaps": gap.gaps,
                        "missing_bars": gap.missing_bars,
                    }
                    for gap in own
                ]
            details["gx_statistics"] = (
                run.statistics
                if single
                else _statistics(run.outcomes, counts, missing, series.rows)
            )
            # each expectation's outcome, for the quality report (expectations.quality_page)
            details["expectations"] = [
                {
                    "rule": o.definition.rule,
                    "columns": ",".join(o.definition.columns),
                    "severity": o.definition.severity,
                    "unexpected": count,
                }
                for o, count in zip(run.outcomes, counts, strict=True)
            ]
            rule_counts: Counter[str] = Counter()
            for o, count in zip(run.outcomes, counts, strict=True):
                if not count:
                    continue
                rule_counts[o.definition.rule] += count
                if o.definition.severity == "warning" and o.definition.rule not in (
                    "gaps",
                    "extreme_return",
                ):
                    warnings.append(f"{count} row(s): {o.definition.describe}")
            details["unexpected_by_rule"] = dict(rule_counts)
        held = _count_in(series.rows, held_only)
        if held:
            warnings.append(
                f"{held} row(s) held in quarantine without failing the batch "
                "(unclosed candles or a failed batch's passing rows)"
            )
        allowed = max(policy.allowed_bad_rows, policy.max_bad_fraction * n)
        message = _message(
            table,
            labels,
            n,
            merged,
            quarantined,
            bad,
            mine,
            success,
            allowed,
            schema_failure,
            policy,
        )
        details["write"] = write
        if not single:
            details["series_in_call"] = len(groups)
        details["elapsed_s"] = round(time.perf_counter() - started, 4)
        result_rows.append(
            _result_row(
                validation_id,
                run_id,
                table,
                suite_name,
                labels,
                success,
                n,
                merged,
                quarantined,
                warnings,
                details,
                now,
            )  # fmt: skip
        )
        results.append(
            GateResult(
                table=table,
                rows_in=n,
                rows_merged=merged,
                rows_quarantined=quarantined,
                success=success,
                warnings=tuple(warnings),
                validation_id=validation_id,
                message=message,
                series=series.key,
            )
        )
    upsert(con, "quality_results", pa.Table.from_pylist(result_rows, schema=RESULT_SCHEMA))
    return results


def combine(results: list[GateResult]) -> GateResult:
    """The results of one call's series as one (the shape ``gate_and_merge`` returns): counts
    summed, failed if any series failed; one series comes back unchanged."""
    if len(results) == 1:
        return results[0]
    failed = [r for r in results if not r.success]
    head = (
        f"{results[0].table}: {len(results)} series, {sum(r.rows_in for r in results)} rows in, "
        f"{sum(r.rows_merged for r in results)} merged, "
        f"{sum(r.rows_quarantined for r in results)} quarantined"
    )
    return GateResult(
        table=results[0].table,
        rows_in=sum(r.rows_in for r in results),
        rows_merged=sum(r.rows_merged for r in results),
        rows_quarantined=sum(r.rows_quarantined for r in results),
        success=not failed,
        warnings=tuple(w for r in results for w in r.warnings),
        validation_id=stable_id(*(r.validation_id for r in results)),
        message=(f"FAILED {head}; " + "; ".join(r.message for r in failed)) if failed else head,
    )


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

    A batch of several series is validated in one call and judged per series
    (``gate_series``); the result here sums them (``combine``).
    """
    return combine(
        gate_series(con, table, batch, settings=settings, run_id=run_id, policy=policy, now=now)
    )


def _engine_validate(
    settings: Settings,
    suite_name: str,
    definitions: tuple[ExpectationDef, ...],
    frame: Any,
    run_name: str,
    *,
    rows: bool = False,
) -> Any:
    from expectations import engine  # GX is imported here, on first use only

    return engine.validate(settings, suite_name, definitions, frame, run_name=run_name, rows=rows)


def _message(
    table: str,
    labels: dict[str, str | None],
    rows_in: int,
    merged: int,
    quarantined: int,
    bad: int,
    problems: pl.DataFrame,
    success: bool,
    allowed: float,
    schema_failure: str | None,
    policy: GatePolicy,
) -> str:
    where = " ".join(v for v in (labels["symbol"], labels["timeframe"]) if v) or "batch"
    # rows per rule, not problems: a row breaking three OHLC pairs counts once, so the
    # counts read as rows and match "quarantined"; ties in the order the rules were first met
    met = problems.sort("first").select(pl.col("rule_list").explode())
    rules = Counter(met.to_series().to_list())
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
            f"FAILED {text}; {bad} bad row(s) exceed the policy limit "
            f"(max {policy.max_bad_fraction:.1%} of the batch, {allowed:g} rows here)"
        )
    return text


def write_quarantine_rows(
    con: duckdb.DuckDBPyConnection,
    table: str,
    batch: pa.Table,
    frame: pl.DataFrame,
    problems: pl.DataFrame,
    settings: Settings,
    run_id: str | None,
) -> None:
    """Write the rows of ``problems`` (``_Found.by_row``, sorted by row) to ``quarantine``.

    The keys come from ``frame`` (the checked rows, position = row), the raw row from
    ``batch``. Idempotent: the id hashes the table, the raw row, its rules and the row's
    occurrence among identical rows (identical rows stay distinct); DuckDB's ``sha256``
    computes the same id as ``stable_id``, for the whole batch at once."""
    if problems.height == 0:
        return
    rows = problems["row"].to_numpy()
    keys = ("exchange", "symbol", "timeframe", "ts")
    has_keys = "_row" in frame.columns
    text_series = row_json_series(batch.take(rows))
    texts = text_series.to_list()
    rules = problems["rules"].to_list()
    # the id of each row, as ``stable_id`` gives it: the n-th of identical (row, rules) pairs
    # hashes its occurrence n (one pass in Python: cheaper than a window and a SQL hash)
    sha256 = hashlib.sha256
    if text_series.n_unique() == len(texts):  # no identical rows: each is the first occurrence
        ids = [
            sha256(f"{table}\x1f{text}\x1f{rule}\x1f1".encode()).hexdigest()[:32]
            for text, rule in zip(texts, rules, strict=True)
        ]
    else:
        seen: dict[tuple[str, str], int] = {}
        ids = []
        for text, rule in zip(texts, rules, strict=True):
            occurrence = seen[text, rule] = seen.get((text, rule), 0) + 1
            joined = f"{table}\x1f{text}\x1f{rule}\x1f{occurrence}"
            ids.append(sha256(joined.encode()).hexdigest()[:32])
    n = len(rows)
    quarantine = pa.table(
        {
            "quarantine_id": pa.array(ids, pa.string()),
            "run_id": pa.nulls(n, pa.string()) if run_id is None else pa.array([run_id] * n),
            "table_name": pa.array([table] * n, pa.string()),
            **{
                c: (
                    frame[c][rows].to_arrow()
                    if has_keys and c in frame.columns
                    else pa.nulls(n, pa.timestamp("ms", "UTC") if c == "ts" else pa.string())
                )
                for c in keys
            },
            "expectation": problems["rules"].to_arrow(),
            "column_name": problems["column_name"].to_arrow(),
            "reason": problems["reason"].to_arrow(),
            "row_json": text_series.to_arrow().cast(pa.string()),
        }
    ).cast(QUARANTINE_SCHEMA)
    upsert(con, "quarantine", quarantine, settings=settings)


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
    listed = [(row, p) for row in rows for p in problems[row]]
    found = _Found()
    if listed:
        found.chunks.append(
            pl.DataFrame(
                {
                    "row": pl.Series([r for r, _ in listed], dtype=pl.Int64),
                    "order": pl.Series(range(len(listed)), dtype=pl.Int64),
                    "rule": pl.Series([p.rule for _, p in listed], dtype=pl.String),
                    "column": pl.Series([p.column for _, p in listed], dtype=pl.String),
                    "message": pl.Series([p.message for _, p in listed], dtype=pl.String),
                    "severity": pl.Series([p.severity for _, p in listed], dtype=pl.String),
                }
            )
        )
        found.added = len(listed)
    write_quarantine_rows(con, table, batch, frame, found.by_row().sort("row"), settings, run_id)


RESULT_SCHEMA = pa.schema(
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


def _result_row(
    validation_id: str,
    run_id: str | None,
    table: str,
    suite: str,
    labels: dict[str, str | None],
    success: bool,
    rows_in: int,
    merged: int,
    quarantined: int,
    warnings: list[str],
    details: dict[str, Any],
    now: dt.datetime,
) -> dict[str, Any]:
    """One ``quality_results`` row (one per series of a gate call)."""
    return {
        "validation_id": validation_id,
        "run_id": run_id,
        "table_name": table,
        "suite": suite,
        "exchange": labels["exchange"],
        "symbol": labels["symbol"],
        "timeframe": labels["timeframe"],
        "success": success,
        "rows_in": rows_in,
        "rows_merged": merged,
        "rows_quarantined": quarantined,
        "warnings_json": json.dumps(warnings),
        "details_json": json.dumps(details, default=str),
        "validated_at": now,
    }
