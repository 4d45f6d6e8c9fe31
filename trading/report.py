"""The backtest report: an HTML page with interactive charts, plus a JSON of every figure.

Written under ``<reports>/<name>/``: ``report.html`` and ``report.json``. The charts are
plotly's (``trading.report_plots``): the candles with the trades' entries and exits, the
equity against the baselines, and the drawdown. The page loads plotly.js from
``<reports>/_assets/`` by a relative path, so it works offline, from disk or served by
``tradeloop reports serve``.

What the page says follows what ran: the series (exchange, symbol, timeframe) and window in
the title, no annualized figure for a window under 30 days (``trading.metrics`` leaves them
undefined; their rows are left out), a missing figure as an em dash, and the stress section
named by who replayed the scenarios (``figs["stress_strategy"]``).
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any

from trading.metrics import MIN_ANNUALIZED_DAYS
from trading.report_html import fmt, line_chart, page, table, utc
from trading.report_plots import (
    confusion_chart,
    lines_chart,
    price_chart,
    write_plotly_js,
)

__all__ = ["METRIC_ROWS", "REGIME_NOTE", "line_chart", "table", "write_report"]

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
# figures that only exist for a window of MIN_ANNUALIZED_DAYS or more
ANNUALIZED_ROWS = frozenset({"cagr", "calmar", "volatility_annual"})
MODEL_ROWS = (
    "ic",
    "ic_ci_low",
    "ic_ci_high",
    "ic_bars",
    "log_loss",
    "brier",
    "ece",
    "accuracy",
    "majority_class_accuracy",
    "model_bars",
    "fallback_bars",
    "model_trades",
    "fallback_trades",
    "in_sample_bars",
)
# what the per-regime rows of a backtest or walk-forward report mean (trading.regimes)
REGIME_NOTE = (
    "Regimes from the features' <code>regime_trend</code> (bull / sideways / bear) and "
    "<code>regime_vol</code> (high / low volatility), known at each bar's close "
    "(docs/regimes.md). A decision counts in the regime of the bar that made it: the next "
    "bar's after-fee return, the trades it opened, its IC pair. Return: compounded over "
    "those bars per symbol, averaged over symbols; buy and hold's on the same bars beside it."
)
BASELINE_NAMES = {
    "buy_and_hold": "buy and hold",
    "rsi_rule": "RSI rule",
    "majority_class": "majority class",
}


def series_name(summary: dict[str, Any]) -> str:
    """``exchange symbol timeframe`` of the backtested series (exchange left out when the
    candles came from a file rather than the warehouse)."""
    parts = (summary.get("exchange"), summary.get("symbol"), summary.get("timeframe"))
    return " ".join(str(p) for p in parts if p)


def _window(summary: dict[str, Any], figs: dict[str, Any]) -> tuple[int, int] | None:
    if summary.get("first_ts_ms") is not None and summary.get("last_ts_ms") is not None:
        return int(summary["first_ts_ms"]), int(summary["last_ts_ms"])
    ts = (figs.get("price") or figs.get("equity") or {}).get("ts_ms") or []
    return (int(ts[0]), int(ts[-1])) if ts else None


def metric_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: the strategy, then each baseline. The annualized rows are left
    out for a window under 30 days (they are undefined there, not zero)."""
    base = summary.get("baselines", {})
    annualized = summary.get("sharpe_units", "annualized") == "annualized"
    rows = []
    for m in METRIC_ROWS:
        if m in ANNUALIZED_ROWS and not annualized:
            continue
        label = m if m not in ("sharpe", "sortino") or annualized else f"{m} (per bar)"
        row = {"figure": label, "strategy": summary.get(m)}
        row.update({BASELINE_NAMES.get(k, k): v.get(m) for k, v in base.items()})
        rows.append(row)
    return rows


def _header(name: str, summary: dict[str, Any], figs: dict[str, Any]) -> list[str]:
    series = series_name(summary)
    window = _window(summary, figs)
    span = ""
    if window is not None:
        days = (window[1] - window[0]) / 86_400_000
        span = f", {utc(window[0])} to {utc(window[1])} ({days:.1f} days)"
    strategy = html.escape(str(summary.get("strategy", "")))
    parts = [
        f"<h1>Backtest of {strategy} on {html.escape(series)}</h1>",
        f"<p>Series <b class='series'>{html.escape(series)}</b>: {fmt(summary.get('bars'))} "
        f"bars{span}. Strategy: {strategy}. Costs per side: fee {fmt(summary.get('fee_fraction'))}"
        f", slippage {fmt(summary.get('slippage_fraction'))}; a decision at a bar's close fills "
        "at the next bar's open. Report <code>" + html.escape(name) + "</code>.</p>",
    ]
    if summary.get("sharpe_units") == "per bar":
        parts.append(
            f"<p class='note'>The window is shorter than {MIN_ANNUALIZED_DAYS:g} days: no "
            "annualized figures (CAGR, Calmar, annual volatility); Sharpe and Sortino are per "
            "bar, not annualized.</p>"
        )
    if summary.get("sigma"):
        parts.append(
            "<p>Stops, take-profit and confidence sizing used <b class='sigma'>"
            f"{html.escape(str(summary['sigma']))}</b>.</p>"
        )
    if summary.get("in_sample_bars"):
        parts.append(
            f"<p class='note'>{summary['in_sample_bars']} of the {summary.get('bars')} bars "
            "precede the model's test window (it trained or calibrated on them): the figures "
            "over them are in sample.</p>"
        )
    return parts


def _charts(summary: dict[str, Any], figs: dict[str, Any]) -> list[str]:
    series = series_name(summary)
    parts = ["<h2>Charts</h2>"]
    if "price" in figs:
        p = figs["price"]
        merged = p.get("bars_per_candle", 1)
        title = f"{series}: candles, entries and exits"
        if merged > 1:
            title += f" (one candle per {merged} bars)"
        parts.append(price_chart(p, title))
    names = {"strategy": str(summary.get("strategy", "strategy")), **BASELINE_NAMES}
    if "equity" in figs:
        e = figs["equity"]
        parts.append(
            lines_chart(
                "chart-equity",
                f"{series}: equity against the baselines (same costs)",
                e["ts_ms"],
                e["series"],
                names=names,
            )
        )
    if "drawdown" in figs:
        d = figs["drawdown"]
        parts.append(
            lines_chart(
                "chart-drawdown",
                f"{series}: drawdown from the running peak",
                d["ts_ms"],
                d["series"],
                percent=True,
                names=names,
            )
        )
    if "rolling_accuracy" in figs:
        r = figs["rolling_accuracy"]
        parts.append(
            lines_chart(
                "chart-accuracy",
                "Rolling out-of-sample accuracy",
                r["ts_ms"],
                r["series"],
                percent=True,
            )
        )
    if "confusion_matrix" in figs:
        c = figs["confusion_matrix"]
        parts.append(confusion_chart(c["labels"], c["matrix"]))
    return parts


def _stress(figs: dict[str, Any]) -> list[str]:
    who = figs.get("stress_strategy")
    heading = "Stress scenarios" + (f", {html.escape(str(who))}" if who else "")
    return [
        f"<h2>{heading}</h2>",
        "<p class='note'>Each scenario damages the candles half-way through the window (a 30 % "
        "crash, three times the volatility, a wide spread, a data outage) and replays the "
        "decisions over them with the same costs and risk limits.</p>",
        table(figs["stress"]),
    ]


def render(name: str, summary: dict[str, Any], figs: dict[str, Any], plotly_src: str) -> str:
    """The report's HTML; ``plotly_src`` is the (relative) URL of plotly.js."""
    parts = _header(name, summary, figs)
    parts += ["<h2>Figures against the baselines</h2>", table(metric_rows(summary))]
    parts += _charts(summary, figs)
    if "ic" in summary:
        rows = [{"measure": k, "value": summary.get(k)} for k in MODEL_ROWS if k in summary]
        parts += [f"<h2>The model's measures ({html.escape(str(summary['strategy']))})</h2>"]
        parts += [table(rows)]
    if summary.get("volatility", {}).get("scores"):
        parts += ["<h2>Volatility forecasters, out of sample</h2>"]
        parts += [table(summary["volatility"]["scores"])]
    if summary.get("regimes"):
        parts += [
            "<h2>Results by market regime</h2>",
            f"<p class='note'>{REGIME_NOTE}</p>",
            table(summary["regimes"]),
        ]
    if "folds" in figs:
        parts += ["<h2>Walk-forward folds</h2>", table(figs["folds"])]
    if "stress" in figs:
        parts += _stress(figs)
    title = f"Backtest {summary.get('strategy', '')} {series_name(summary)}"
    script = f'<script src="{html.escape(plotly_src)}" charset="utf-8"></script>'
    return page(title, parts, head=script)


def write_report(
    name: str, summary: dict[str, Any], figs: dict[str, Any], reports_dir: Path
) -> tuple[Path, Path]:
    out = reports_dir / name
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "report.json", out / "report.html"
    json_path.write_text(
        json.dumps({"summary": summary, "figures": figs}, default=_json_default, indent=1)
    )
    js = write_plotly_js(reports_dir)
    src = Path(os.path.relpath(js, out)).as_posix()
    html_path.write_text(render(name, summary, figs, src), encoding="utf-8")
    return html_path, json_path


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)
