"""The backtest report's interactive charts: plotly figures that work offline.

The plotly.js bundle that the ``plotly`` package ships is written once per reports folder
(``<reports>/_assets/plotly-<version>.min.js``) and every report loads it by a relative path,
so a report opens from disk or from ``tradeloop reports serve`` with no request leaving the
machine (a CDN script would leave an offline page with no charts).

``price_data`` turns candles and a backtest's trades into the JSON-ready data of the price
chart (it is stored in ``report.json`` beside the other figures); the ``*_chart`` functions turn
figure data into HTML fragments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs, get_plotlyjs_version

from trading.backtest import BacktestResult, Candles

ASSETS_DIR = "_assets"
MAX_CANDLES = 2000  # more candles than this are merged (OHLC of consecutive bars) for the chart
CHART_HEIGHT = 420
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
CONFIG = {"displaylogo": False, "responsive": True}


def plotly_js_name() -> str:
    return f"plotly-{get_plotlyjs_version()}.min.js"


def write_plotly_js(reports_dir: Path) -> Path:
    """``<reports_dir>/_assets/plotly-<version>.min.js`` (written once; about 4.8 MB)."""
    js = get_plotlyjs()
    path = reports_dir / ASSETS_DIR / plotly_js_name()
    if path.exists() and path.stat().st_size == len(js.encode()):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two writers never leave a half file
    tmp.write_text(js, encoding="utf-8")
    tmp.replace(path)
    return path


def _dates(ts_ms: Any) -> np.ndarray:
    return np.asarray(ts_ms, dtype=np.int64).astype("datetime64[ms]")


def _merged(candles: Candles, max_candles: int) -> tuple[int, dict[str, list[Any]]]:
    """(bars per drawn candle, OHLC lists): consecutive bars merged so at most
    ``max_candles`` are drawn (open of the first, high max, low min, close of the last)."""
    n = len(candles)
    step = max(1, -(-n // max_candles))
    starts = np.arange(0, n, step)
    return step, {
        "ts_ms": candles.ts_ms[starts].tolist(),
        "open": candles.open[starts].tolist(),
        "high": np.maximum.reduceat(candles.high, starts).tolist(),
        "low": np.minimum.reduceat(candles.low, starts).tolist(),
        "close": candles.close[np.minimum(starts + step, n) - 1].tolist(),
    }


def trade_markers(candles: Candles, result: BacktestResult) -> dict[str, list[dict[str, Any]]]:
    """Entries and exits of the closed trades, plus the entry of a position still open at the
    end (its price: the open of the bar its fill happened on, when the fill is not recorded)."""
    entries = [
        {
            "ts_ms": int(t.entry_ts_ms),
            "price": float(t.entry_price),
            "side": "long" if t.direction > 0 else "short",
        }
        for t in result.trades
    ]
    exits = [
        {
            "ts_ms": int(t.exit_ts_ms),
            "price": float(t.exit_price),
            "side": "long" if t.direction > 0 else "short",
            "reason": str(t.exit_reason),
            "return": float(t.return_fraction),
        }
        for t in result.trades
    ]
    units = np.asarray(result.units)
    if units.size and units[-1] != 0:
        sign = np.sign(units)
        changed = np.flatnonzero(sign != sign[-1])
        at = int(changed[-1]) + 1 if changed.size else 0
        ts = int(result.ts_ms[at])
        fills = [f for f in result.fills if f.ts_ms >= ts]
        i = int(np.searchsorted(candles.ts_ms, ts))
        price = fills[0].price if fills else float(candles.open[min(i, len(candles) - 1)])
        entries.append(
            {
                "ts_ms": ts,
                "price": float(price),
                "side": "long" if units[-1] > 0 else "short",
                "open_at_end": True,
            }
        )
    return {"entries": entries, "exits": exits}


def price_data(
    candles: Candles, result: BacktestResult, max_candles: int = MAX_CANDLES
) -> dict[str, Any]:
    """The price chart's data: the candles of the backtested bars (merged down to at most
    ``max_candles``) and the trades' entries and exits."""
    lo, hi = 0, len(candles)
    if len(result.ts_ms):
        lo = int(np.searchsorted(candles.ts_ms, result.ts_ms[0]))
        hi = int(np.searchsorted(candles.ts_ms, result.ts_ms[-1], side="right"))
    shown = candles.slice(lo, hi)
    step, ohlc = _merged(shown, max_candles)
    return {
        "symbol": candles.symbol,
        "bars_per_candle": step,
        **ohlc,
        **trade_markers(shown, result),
    }


def _html(fig: go.Figure, div_id: str) -> str:
    fig.update_layout(
        template="plotly_white",
        height=CHART_HEIGHT,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.15},
    )
    return str(fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=CONFIG))


def price_chart(data: dict[str, Any], title: str) -> str:
    """Candles with entries (triangles) and exits (crosses) marked."""
    fig = go.Figure(
        go.Candlestick(
            x=_dates(data["ts_ms"]),
            open=data["open"],
            high=data["high"],
            low=data["low"],
            close=data["close"],
            name=data["symbol"],
        )
    )
    for side, symbol, color in (
        ("long", "triangle-up", "#2ca02c"),
        ("short", "triangle-down", "#d62728"),
    ):
        marks = [e for e in data["entries"] if e["side"] == side]
        if marks:
            fig.add_trace(
                go.Scatter(
                    x=_dates([e["ts_ms"] for e in marks]),
                    y=[e["price"] for e in marks],
                    mode="markers",
                    marker={"symbol": symbol, "size": 10, "color": color},
                    name=f"{side} entry",
                    text=["still open at the end" if e.get("open_at_end") else "" for e in marks],
                )
            )
    if data["exits"]:
        fig.add_trace(
            go.Scatter(
                x=_dates([e["ts_ms"] for e in data["exits"]]),
                y=[e["price"] for e in data["exits"]],
                mode="markers",
                marker={"symbol": "x", "size": 8, "color": "#333"},
                name="exit",
                text=[f"{e['reason']}, {e['return']:+.2%}" for e in data["exits"]],
            )
        )
    fig.update_layout(title=title, xaxis_rangeslider_visible=False, yaxis_title="price")
    return _html(fig, "chart-price")


def lines_chart(
    div_id: str,
    title: str,
    ts_ms: list[int],
    series: dict[str, list[float | None]],
    *,
    percent: bool = False,
    names: dict[str, str] | None = None,
) -> str:
    """One line per series (None: a gap) over a shared time axis."""
    fig = go.Figure()
    for k, (key, values) in enumerate(series.items()):
        fig.add_trace(
            go.Scatter(
                x=_dates(ts_ms),
                y=[np.nan if v is None else v for v in values],
                mode="lines",
                name=(names or {}).get(key, key),
                line={"color": COLORS[k % len(COLORS)], "width": 2 if k == 0 else 1.2},
            )
        )
    fig.update_layout(title=title, yaxis_tickformat=".1%" if percent else None)
    return _html(fig, div_id)


def confusion_chart(labels: list[str], matrix: list[list[int]]) -> str:
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=labels,
            y=labels,
            colorscale="Blues",
            text=matrix,
            texttemplate="%{text}",
            showscale=False,
        )
    )
    fig.update_layout(
        title="Confusion matrix (rows: true class, columns: predicted)",
        xaxis_title="predicted",
        yaxis_title="true",
        yaxis_autorange="reversed",
    )
    return _html(fig, "chart-confusion")
