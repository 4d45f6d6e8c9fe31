"""HTML pieces shared by the reports: number cells, tables, the page around them, and the
plain SVG line chart of the walk-forward report (no script: it renders wherever HTML does).

A missing figure (None or NaN: e.g. a win rate with no trades) shows as an em dash, never as
"None" or "nan".
"""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import Any

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
MISSING = "\u2014"
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}th{background:#f4f4f4}"
    ".note{color:#555;font-size:13px}.pass{color:#1a7f37}.fail{color:#c62828;font-weight:bold}"
    ".warn{color:#9a6700}h2{margin-top:1.6em;border-bottom:1px solid #eee}"
)


def fmt(v: Any) -> str:
    """One table cell: numbers to 4 significant digits, missing as an em dash."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "\u221e" if v > 0 else "-\u221e"
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return html.escape(str(v))


def table(rows: list[dict[str, Any]], headers: dict[str, str] | None = None) -> str:
    """An HTML table of ``rows`` (columns: the first row's keys; ``headers`` renames them)."""
    if not rows:
        return "<p>(none)</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape((headers or {}).get(c, c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, body: list[str], head: str = "") -> str:
    """A whole HTML document; ``head`` adds to ``<head>`` (e.g. a local script)."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style>{head}</head><body>"
        + "\n".join(body)
        + "</body></html>"
    )


def utc(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def line_chart(
    title: str,
    ts_ms: list[int],
    series: dict[str, list[float | None]],
    width: int = 900,
    height: int = 280,
    percent: bool = False,
) -> str:
    values = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    if not values or len(ts_ms) < 2:
        return f"<h3>{html.escape(title)}</h3><p>(no data)</p>"
    lo, hi = min(values), max(values)
    if hi == lo:
        hi = lo + 1e-9
    pad_l, pad_b = 70, 30
    w, h = width - pad_l - 10, height - pad_b - 10
    t0, t1 = ts_ms[0], ts_ms[-1]

    def xy(i: int, v: float) -> str:
        x = pad_l + (ts_ms[i] - t0) / max(t1 - t0, 1) * w
        y = 10 + (hi - v) / (hi - lo) * h
        return f"{x:.1f},{y:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img"><title>{html.escape(title)}</title>',
        f'<rect x="{pad_l}" y="10" width="{w}" height="{h}" fill="none" stroke="#ccc"/>',
    ]
    for frac in (0, 0.5, 1):
        v = hi - frac * (hi - lo)
        label = f"{v:.2%}" if percent else f"{v:.4g}"
        parts.append(
            f'<text x="{pad_l - 5}" y="{10 + frac * h + 4:.0f}" font-size="11" '
            f'text-anchor="end">{label}</text>'
        )
    for t, anchor, x in ((t0, "start", pad_l), (t1, "end", pad_l + w)):
        day = dt.datetime.fromtimestamp(t / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")
        parts.append(
            f'<text x="{x}" y="{height - 8}" font-size="11" text-anchor="{anchor}">{day}</text>'
        )
    for k, (name, vals) in enumerate(series.items()):
        pts = [xy(i, v) for i, v in enumerate(vals) if v is not None and math.isfinite(v)]
        color = COLORS[k % len(COLORS)]
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.3" points="{" ".join(pts)}"/>'
        )
        parts.append(
            f'<text x="{pad_l + 8}" y="{24 + 14 * k}" font-size="12" fill="{color}">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return f"<h3>{html.escape(title)}</h3>" + "".join(parts)
