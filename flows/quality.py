"""Flow `quality`: re-validate stored data, write the quality report, publish its figures.

The report is ``expectations.quality_page``'s static HTML under ``<home>/reports/quality``
(offline, one section per series naming its exchange, symbol and timeframe); the Great
Expectations Data Docs are still rebuilt beside it when asked. The artifacts carry the
numbers: a table with one row per validated series, the markdown summary, and a link to
the report (``Settings.report_link``: under ``TRADELOOP_REPORTS_URL`` when it is set).

Also ``gate_task``, the Prefect task wrapper of the quality gate other flows may call per
batch (the gate itself is ``expectations.gate.gate_and_merge``, plain Python).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from expectations.gate import GatePolicy, GateResult, QualityGateError, gate_and_merge
from expectations.report import summary_markdown
from expectations.revalidate import candle_series, revalidate_candles
from flows.alerts import quality_alerts
from flows.orchestration import (
    DEFAULT_TASK_RUNNER,
    NO_CACHE,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
    flow,
    get_run_logger,
    task,
    unmapped,
)
from warehouse import Settings, connect, get_settings, migrate


@task(name="quality-gate", cache_policy=NO_CACHE)
def gate_task(
    settings: Settings,
    table: str,
    batch: pa.Table,
    run_id: str | None = None,
    policy: GatePolicy | None = None,
) -> GateResult:
    """Validate one batch and merge what passes (opens its own warehouse connection)."""
    con = connect(settings)
    try:
        result = gate_and_merge(con, table, batch, settings=settings, run_id=run_id, policy=policy)
    finally:
        con.close()
    logger = get_run_logger()
    (logger.info if result.success else logger.error)(result.message)
    for warning in result.warnings:
        logger.warning(warning)
    return result


@task(name="quality-list-series", cache_policy=NO_CACHE)
def list_series_task(
    settings: Settings,
    symbols: Sequence[str] | None,
    timeframes: Sequence[str] | None,
    exchange: str | None,
) -> list[tuple[str, str, str]]:
    con = connect(settings)
    try:
        migrate(con)
        return candle_series(con, symbols=symbols, timeframes=timeframes, exchange=exchange)
    finally:
        con.close()


@task(name="quality-revalidate", cache_policy=NO_CACHE)
def revalidate_task(
    settings: Settings,
    series: tuple[str, str, str],
    start: dt.datetime | None,
    end: dt.datetime | None,
    run_id: str,
    policy: GatePolicy | None,
) -> GateResult:
    exchange, symbol, timeframe = series
    con = connect(settings)
    try:
        result = revalidate_candles(
            con,
            settings=settings,
            exchange=exchange,
            symbol=symbol,
            timeframe=timeframe,
            start=start,
            end=end,
            run_id=run_id,
            policy=policy,
        )
    finally:
        con.close()
    get_run_logger().info(result.message)
    return result


@task(name="quality-data-docs", cache_policy=NO_CACHE)
def build_docs_task(settings: Settings, keep_days: float) -> Path:
    from expectations.engine import build_data_docs, prune_stored_results

    deleted = prune_stored_results(settings, keep_days=keep_days)
    if deleted:
        get_run_logger().info(
            f"pruned {deleted} stored GX result file(s) older than {keep_days:g} days"
        )
    return build_data_docs(settings)


@task(name="quality-report", cache_policy=NO_CACHE)
def quality_report_task(settings: Settings, run_id: str) -> Path:
    """The run's page and the index under ``<home>/reports/quality`` (read-only connection)."""
    from expectations.quality_page import write_quality_pages

    con = connect(settings, read_only=True)
    try:
        return write_quality_pages(con, settings.home / "reports", run_id)
    finally:
        con.close()


def result_rows(
    results: Sequence[GateResult], series: Sequence[tuple[str, str, str]]
) -> list[dict[str, object]]:
    """The table artifact's rows: one per validated series, with its numbers."""
    return [
        {
            "exchange": exchange,
            "symbol": symbol,
            "timeframe": timeframe,
            "result": "passed" if r.success else "FAILED",
            "rows_in": r.rows_in,
            "passed": r.rows_merged,
            "quarantined": r.rows_quarantined,
            "warnings": len(r.warnings),
        }
        for (exchange, symbol, timeframe), r in zip(series, results, strict=True)
    ]


@task(name="quality-summary", cache_policy=NO_CACHE)
def publish_summary(
    results: list[GateResult],
    data_docs: Path | None,
    *,
    series: Sequence[tuple[str, str, str]] = (),
    report: Path | None = None,
    settings: Settings | None = None,
) -> str:
    markdown = summary_markdown(results, data_docs)
    if report is not None and settings is not None:
        markdown += f"\nQuality report: {settings.report_link(report)}\n"
        create_link_artifact(
            key="quality-report",
            link=settings.report_link(report),
            link_text="data quality report (exchange, symbol, timeframe per validation)",
        )
    if series:
        create_table_artifact(
            key="quality-results",
            table=result_rows(results, series),
            description="data quality: one row per validated series",
        )
    create_markdown_artifact(
        key="quality-summary", markdown=markdown, description="data quality run"
    )
    return markdown


@flow(name="quality", task_runner=DEFAULT_TASK_RUNNER, log_prints=False)
def quality(
    symbols: Sequence[str] | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    timeframes: Sequence[str] | None = None,
    exchange: str | None = None,
    build_docs: bool = True,
    fail_on_policy: bool = True,
    keep_days: float = 7.0,
) -> dict[str, object]:
    """Re-validate stored candles in ``[start, end)``; fail only where the policy says so.

    Stored GX results older than ``keep_days`` are pruned before the Data Docs are rebuilt.
    """
    settings = get_settings()
    run_id = f"quality-{uuid.uuid4().hex[:12]}"
    series = list_series_task(settings, symbols, timeframes, exchange)
    # one mapped task per series, run where the flow's task runner says (threads or Dask)
    results = list(
        revalidate_task.map(
            unmapped(settings),
            series,
            unmapped(start),
            unmapped(end),
            unmapped(run_id),
            unmapped(None),
        ).result()
    )
    docs = build_docs_task(settings, keep_days) if build_docs else None
    report = quality_report_task(settings, run_id)
    markdown = publish_summary(results, docs, series=series, report=report, settings=settings)
    failed = [r.message for r in results if not r.success]
    quality_alerts(settings, results, run_id, report)  # one notification per failed series
    if failed and fail_on_policy:
        raise QualityGateError("; ".join(failed))
    return {
        "run_id": run_id,
        "results": results,
        "data_docs": docs,
        "report": report,
        "summary": markdown,
    }
