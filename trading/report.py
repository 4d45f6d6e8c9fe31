"""HTML report (inline SVG plots, no plotting library) plus a JSON of every figure.

Written under ``<TRADELOOP_HOME>/reports/<name>/``: ``report.html`` and ``report.json``.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from pathlib import Path
from typing import Any

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"  # undefined (e.g. an annualized figure of a window under 30 days)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return html.escape(str(v))


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


def heatmap(title: str, labels: list[str], matrix: list[list[int]]) -> str:
    total = max(1, max(max(r) for r in matrix))
    cells = []
    size = 60
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            shade = int(255 - 200 * v / total)
            cells.append(
                f'<rect x="{80 + j * size}" y="{30 + i * size}" width="{size}" '
                f'height="{size}" fill="rgb({shade},{shade},255)" stroke="#fff"/>'
                f'<text x="{80 + j * size + size / 2}" y="{30 + i * size + 35}" '
                f'font-size="13" text-anchor="middle">{v}</text>'
            )
    heads = "".join(
        f'<text x="{80 + j * size + size / 2}" y="22" font-size="12" '
        f'text-anchor="middle">{html.escape(lab)}</text>'
        f'<text x="72" y="{30 + j * size + 35}" font-size="12" text-anchor="end">'
        f"{html.escape(lab)}</text>"
        for j, lab in enumerate(labels)
    )
    n = len(labels)
    return (
        f"<h3>{html.escape(title)} (rows: true, columns: predicted)</h3>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{100 + n * size}" '
        f'height="{50 + n * size}">{heads}{"".join(cells)}</svg>'
    )


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


METRIC_ROWS = (
    "total_return",
    "cagr",
    "sharpe",
    "sharpe_ci_low",
    "sharpe_ci_high",
    "probabilistic_sharpe",
    "deflated_sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "max_drawdown_duration_bars",
    "trades",
    "win_rate",
    "profit_factor",
    "avg_trade_return",
    "expectancy",
    "exposure",
    "turnover",
    "fees_paid",
    "stop_exits",
)


def write_report(
    name: str, summary: dict[str, Any], figs: dict[str, Any], reports_dir: Path
) -> tuple[Path, Path]:
    out = reports_dir / name
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "report.json", out / "report.html"
    json_path.write_text(
        json.dumps({"summary": summary, "figures": figs}, default=_json_default, indent=1)
    )
    base = summary.get("baselines", {})
    metric_rows = [
        {"metric": m, "strategy": summary.get(m), **{k: v.get(m) for k, v in base.items()}}
        for m in METRIC_ROWS
    ]
    parts = [
        f"<h1>Backtest: {html.escape(name)}</h1>",
        f"<p>{html.escape(str(summary.get('symbol')))} {summary.get('timeframe')}, "
        f"{summary.get('bars')} bars, strategy {html.escape(str(summary.get('strategy')))}; "
        f"fee {summary.get('fee_fraction')} and slippage {summary.get('slippage_fraction')} "
        "per side; fills at the next bar's open.</p>",
        "<h2>Metrics vs baselines</h2>",
        table(metric_rows),
    ]
    if "equity" in figs:
        parts.append(
            line_chart("Equity vs baselines", figs["equity"]["ts_ms"], figs["equity"]["series"])
        )
    if "drawdown" in figs:
        parts.append(
            line_chart(
                "Drawdown", figs["drawdown"]["ts_ms"], figs["drawdown"]["series"], percent=True
            )
        )
    if "rolling_accuracy" in figs:
        parts.append(
            line_chart(
                "Rolling out-of-sample accuracy",
                figs["rolling_accuracy"]["ts_ms"],
                figs["rolling_accuracy"]["series"],
                percent=True,
            )
        )
    if "confusion_matrix" in figs:
        parts.append(
            heatmap(
                "Confusion matrix",
                figs["confusion_matrix"]["labels"],
                figs["confusion_matrix"]["matrix"],
            )
        )
    if "folds" in figs:
        parts += ["<h2>Walk-forward folds</h2>", table(figs["folds"])]
    if "stress" in figs:
        parts += [
            f"<h2>Stress scenarios ({html.escape(str(figs.get('stress_strategy', 'RSI rule')))},"
            " event-driven engine)</h2>",
            table(figs["stress"]),
        ]
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px}"
    )
    html_path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>"
        f"{html.escape(name)}</title><style>{style}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    return html_path, json_path


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)
