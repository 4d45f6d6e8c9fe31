"""A markdown summary of gate results (the quality and collect flows publish it as a Prefect
artifact)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from expectations.gate import GateResult


def summary_markdown(
    results: Sequence[GateResult], data_docs: Path | None = None, *, title: str = "# Data quality"
) -> str:
    """Totals, one table row per gate result, then every warning.

    ``title`` is the heading line; the collect flow nests this under its own run summary.
    """
    failed = [r for r in results if not r.success]
    rows_in = sum(r.rows_in for r in results)
    merged = sum(r.rows_merged for r in results)
    quarantined = sum(r.rows_quarantined for r in results)
    lines = [
        title,
        "",
        f"**{'FAILED' if failed else 'passed'}**: {len(results)} batch(es), {rows_in} rows in, "
        f"{merged} passed, {quarantined} quarantined, {len(failed)} failed the policy.",
        "",
        "| table | result | rows in | passed | quarantined | summary |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        summary = r.message.replace("|", "\\|")
        status = "ok" if r.success else "**FAILED**"
        lines.append(
            f"| {r.table} | {status} | {r.rows_in} | {r.rows_merged} | {r.rows_quarantined} "
            f"| {summary} |"
        )
    warnings = [w for r in results for w in r.warnings]
    if warnings:
        lines += ["", "## Warnings", "", *[f"- {w}" for w in warnings]]
    if data_docs is not None:
        lines += ["", f"Data Docs: `{data_docs}`"]
    return "\n".join(lines) + "\n"
