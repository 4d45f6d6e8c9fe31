"""The data quality report: static HTML pages rendered from ``quality_results``.

Great Expectations' Data Docs load their CSS and JavaScript from CDNs (offline they show two
links and two buttons) and call every validation "Data asset: None". These pages need
nothing but the files themselves, and each validation names its exchange, symbol and
timeframe:

* ``<reports>/quality/index.html``: the latest validation of every stored series, and the
  recent runs;
* ``<reports>/quality/runs/<run_id>.html``: one section per validation of a run: result, rows
  in, passed and quarantined, each expectation with its unexpected-row count, gaps, warnings
  and the first quarantined rows with the rule and the reason.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from expectations.policy import GatePolicy
from expectations.specs import suite_for

MISSING = "\u2014"
QUARANTINE_SHOWN = 20  # quarantined rows listed per validation (the table holds them all)
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.2em}"
    "td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px;text-align:left}"
    "th{background:#f4f4f4}td.n{text-align:right}.note{color:#555;font-size:13px}"
    ".pass{color:#1a7f37}.fail{color:#c62828;font-weight:bold}.warn{color:#9a6700}"
    "section{border-top:1px solid #ddd;margin-top:1.5em}"
)


@dataclass(frozen=True)
class Validation:
    """One ``quality_results`` row."""

    validation_id: str
    run_id: str | None
    table: str
    suite: str
    exchange: str | None
    symbol: str | None
    timeframe: str | None
    success: bool
    rows_in: int
    rows_merged: int
    rows_quarantined: int
    warnings: tuple[str, ...]
    details: dict[str, Any]
    validated_ms: int

    @property
    def series(self) -> str:
        """``exchange symbol timeframe`` (a batch of several series says so)."""
        if self.symbol is None:
            return f"{self.exchange or 'several exchanges'}, several series"
        parts = [self.exchange or "several exchanges", self.symbol]
        parts.append(self.timeframe or ("order book" if "book" in self.table else "trades"))
        return " ".join(parts)


_COLUMNS = (
    "validation_id, run_id, table_name, suite, exchange, symbol, timeframe, success, rows_in, "
    "rows_merged, rows_quarantined, warnings_json, details_json, epoch_ms(validated_at)"
)


def _validation(row: Sequence[Any]) -> Validation:
    warnings = json.loads(row[11]) if row[11] else []
    details = json.loads(row[12]) if row[12] else {}
    return Validation(
        validation_id=str(row[0]),
        run_id=row[1],
        table=str(row[2]),
        suite=str(row[3]),
        exchange=row[4],
        symbol=row[5],
        timeframe=row[6],
        success=bool(row[7]),
        rows_in=int(row[8]),
        rows_merged=int(row[9]),
        rows_quarantined=int(row[10]),
        warnings=tuple(warnings),
        details=details,
        validated_ms=int(row[13]),
    )


def read_run(con: duckdb.DuckDBPyConnection, run_id: str) -> list[Validation]:
    """The validations of one run, by table and series."""
    rows = con.execute(
        f"SELECT {_COLUMNS} FROM quality_results WHERE run_id = ? "
        "ORDER BY table_name, exchange, symbol, timeframe",
        [run_id],
    ).fetchall()
    return [_validation(r) for r in rows]


def read_latest(con: duckdb.DuckDBPyConnection) -> list[Validation]:
    """The latest validation of every (table, exchange, symbol, timeframe)."""
    rows = con.execute(
        f"SELECT {_COLUMNS} FROM quality_results QUALIFY row_number() OVER ("
        "PARTITION BY table_name, exchange, symbol, timeframe ORDER BY validated_at DESC) = 1 "
        "ORDER BY table_name, exchange, symbol, timeframe"
    ).fetchall()
    return [_validation(r) for r in rows]


def read_runs(con: duckdb.DuckDBPyConnection, limit: int = 30) -> list[dict[str, Any]]:
    """The most recent runs: id, time, validations, failed validations, rows quarantined."""
    rows = con.execute(
        "SELECT run_id, epoch_ms(max(validated_at)), count(*), count(*) FILTER (NOT success), "
        "sum(rows_quarantined) FROM quality_results WHERE run_id IS NOT NULL "
        "GROUP BY run_id ORDER BY max(validated_at) DESC LIMIT ?",
        [limit],
    ).fetchall()
    keys = ("run_id", "validated_ms", "validations", "failed", "quarantined")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def read_quarantine(
    con: duckdb.DuckDBPyConnection, run_id: str, per_series: int = QUARANTINE_SHOWN
) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """The first ``per_series`` quarantined rows of a run, by (table, exchange, symbol,
    timeframe)."""
    rows = con.execute(
        "SELECT table_name, exchange, symbol, timeframe, epoch_ms(ts), expectation, column_name, "
        "reason FROM quarantine WHERE run_id = ? QUALIFY row_number() OVER (PARTITION BY "
        "table_name, exchange, symbol, timeframe ORDER BY ts) <= ? ORDER BY ALL",
        [run_id, per_series],
    ).fetchall()
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for table, exchange, symbol, timeframe, ts, rule, column, reason in rows:
        out[(table, exchange, symbol, timeframe)].append(
            {"ts_ms": ts, "rule": rule, "column": column, "reason": reason}
        )
    return dict(out)


# ---------------------------------------------------------------- rendering


def _e(value: Any) -> str:
    return MISSING if value is None else html.escape(str(value))


def _when(ms: int | None) -> str:
    if ms is None:
        return MISSING
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(headers: Sequence[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    if not rows:
        return "<p class='note'>(none)</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='n'>{c}</td>" if i in (numeric or set()) else f"<td>{c}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _status(success: bool) -> str:
    return "<span class='pass'>passed</span>" if success else "<span class='fail'>FAILED</span>"


def _describe(table: str) -> dict[tuple[str, str], str]:
    try:
        return {(d.rule, ",".join(d.columns)): d.describe for d in suite_for(table, GatePolicy())}
    except ValueError:
        return {}


def expectation_rows(v: Validation) -> list[list[str]]:
    """One row per expectation: what it checks, its columns, severity, result, unexpected rows.

    Validations written before the gate recorded each expectation show the unexpected rows by
    rule instead (those are the rules that found something)."""
    described = _describe(v.table)
    if "expectations" in v.details:
        rows = []
        for x in v.details["expectations"]:
            n = int(x.get("unexpected") or 0)
            if n == 0:
                result = "<span class='pass'>pass</span>"
            elif x.get("severity") == "warning":
                result = "<span class='warn'>warning</span>"
            else:
                result = "<span class='fail'>fail</span>"
            what = described.get((x["rule"], x.get("columns", "")), x["rule"])
            rows.append(
                [_e(what), _e(x.get("columns") or None), _e(x.get("severity")), result, str(n)]
            )
        return rows
    return [
        [_e(rule), MISSING, MISSING, "<span class='fail'>unexpected rows</span>", str(n)]
        for rule, n in (v.details.get("unexpected_by_rule") or {}).items()
    ]


def _anchor(v: Validation) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", f"{v.table}-{v.series}").strip("-")


def validation_section(v: Validation, quarantined: list[dict[str, Any]]) -> str:
    parts = [
        f"<section id='{_anchor(v)}'><h2>{_e(v.series)} <small>({_e(v.table)})</small></h2>",
        "<p>"
        + _status(v.success)
        + f": exchange <b>{_e(v.exchange)}</b>, symbol <b class='series'>{_e(v.symbol)}</b>, "
        f"timeframe <b>{_e(v.timeframe)}</b>; {v.rows_in} rows in, {v.rows_merged} passed, "
        f"{v.rows_quarantined} quarantined. Suite {_e(v.suite)}, validated {_when(v.validated_ms)}"
        f"; validation <code>{_e(v.validation_id)}</code>.</p>",
        "<h3>Expectations</h3>",
        _table(
            ("expectation", "columns", "severity", "result", "unexpected rows"),
            expectation_rows(v),
            {4},
        ),
    ]
    gaps = v.details.get("gaps") or []
    if gaps:
        parts += [
            "<h3>Gaps</h3>",
            _table(
                ("series", "bars", "gaps", "missing bars"),
                [
                    [_e(" ".join(map(str, g["series"]))), str(g["bars"]), str(g["gaps"])]
                    + [str(g["missing_bars"])]
                    for g in gaps
                ],
                {1, 2, 3},
            ),
        ]
    if v.warnings:
        parts += ["<h3>Warnings</h3><ul>", *[f"<li>{_e(w)}</li>" for w in v.warnings], "</ul>"]
    if v.rows_quarantined:
        shown = len(quarantined)
        parts += [
            f"<h3>Quarantined rows (the first {shown} of {v.rows_quarantined})</h3>",
            _table(
                ("open time", "rule", "column", "reason"),
                [
                    [_when(q["ts_ms"]), _e(q["rule"]), _e(q["column"]), _e(q["reason"])]
                    for q in quarantined
                ],
            ),
            "<p class='note'>All of them: <code>tradeloop sql \"SELECT * FROM quarantine "
            f"WHERE run_id = '{_e(v.run_id)}'\"</code></p>",
        ]
    parts.append("</section>")
    return "\n".join(parts)


def _page(title: str, body: list[str]) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + "</body></html>"
    )


def render_run(
    run_id: str,
    validations: Sequence[Validation],
    quarantined: dict[tuple[Any, ...], list[dict[str, Any]]],
) -> str:
    failed = [v for v in validations if not v.success]
    body = [
        f"<h1>Data quality run {_e(run_id)}</h1>",
        "<p><a href='../index.html'>All series</a></p>",
        f"<p>{len(validations)} validation(s), {len(failed)} failed the policy; "
        f"{sum(v.rows_in for v in validations)} rows in, "
        f"{sum(v.rows_quarantined for v in validations)} quarantined.</p>",
        _table(
            ("series", "table", "result", "rows in", "passed", "quarantined"),
            [
                [
                    f"<a href='#{_anchor(v)}'>{_e(v.series)}</a>",
                    _e(v.table),
                    _status(v.success),
                    str(v.rows_in),
                    str(v.rows_merged),
                    str(v.rows_quarantined),
                ]
                for v in validations
            ],
            {3, 4, 5},
        ),
    ]
    for v in validations:
        key = (v.table, v.exchange, v.symbol, v.timeframe)
        body.append(validation_section(v, quarantined.get(key, [])))
    return _page(f"Data quality {run_id}", body)


def render_index(
    latest: Sequence[Validation], runs: Sequence[dict[str, Any]], run_pages: set[str]
) -> str:
    def run_link(run_id: str | None) -> str:
        if run_id and _safe(run_id) in run_pages:
            return f"<a href='runs/{_safe(run_id)}.html'>{html.escape(run_id)}</a>"
        return _e(run_id)

    body = [
        "<h1>Data quality</h1>",
        "<p class='note'>The latest validation of every stored series, from the warehouse's "
        "<code>quality_results</code> table.</p>",
        _table(
            ("exchange", "symbol", "timeframe", "table", "result", "rows in", "quarantined")
            + ("warnings", "validated", "run"),
            [
                [
                    _e(v.exchange),
                    f"<span class='series'>{_e(v.symbol)}</span>",
                    _e(v.timeframe),
                    _e(v.table),
                    _status(v.success),
                    str(v.rows_in),
                    str(v.rows_quarantined),
                    str(len(v.warnings)),
                    _when(v.validated_ms),
                    run_link(v.run_id),
                ]
                for v in latest
            ],
            {5, 6, 7},
        ),
        "<h2>Recent runs</h2>",
        _table(
            ("run", "validated", "validations", "failed", "rows quarantined"),
            [
                [
                    run_link(r["run_id"]),
                    _when(r["validated_ms"]),
                    str(r["validations"]),
                    str(r["failed"]),
                    str(r["quarantined"]),
                ]
                for r in runs
            ],
            {2, 3, 4},
        ),
    ]
    return _page("Data quality", body)


def _safe(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)


def write_quality_pages(
    con: duckdb.DuckDBPyConnection, reports_dir: Path, run_id: str | None = None
) -> Path:
    """Write the run's page (when ``run_id`` is given) and the index; return the run's page,
    or the index without a run."""
    out = reports_dir / "quality"
    (out / "runs").mkdir(parents=True, exist_ok=True)
    page: Path | None = None
    if run_id is not None:
        page = out / "runs" / f"{_safe(run_id)}.html"
        text = render_run(run_id, read_run(con, run_id), read_quarantine(con, run_id))
        page.write_text(text, encoding="utf-8")
    existing = {p.stem for p in (out / "runs").glob("*.html")}
    index = out / "index.html"
    index.write_text(render_index(read_latest(con), read_runs(con), existing), encoding="utf-8")
    return page or index
