"""What the backtest report says, on the real ETH/BTC 5m file (20 days: under the 30 days an
annualized figure needs)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from trading.backtest import BacktestConfig, Candles, SignalSeries, run_event_driven
from trading.decision import rsi_rule_signals
from trading.evaluation import signal_backtest
from trading.report import metric_rows
from trading.report_html import MISSING, fmt
from trading.report_plots import price_data, trade_markers


def _signal_file(candles: Candles, signal: np.ndarray, path: Path) -> Path:
    pl.DataFrame(
        {
            "ts": pl.Series(candles.ts_ms).cast(pl.Datetime("ms", "UTC")),
            "symbol": [candles.symbol] * len(candles),
            "signal": signal.astype(np.int64),
        }
    ).write_csv(path)
    return path


@pytest.fixture(scope="module")
def report(eth_btc: Candles, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("report")
    signals = _signal_file(eth_btc, rsi_rule_signals(eth_btc.close), tmp / "my_signals.csv")
    return signal_backtest(
        eth_btc, signals, BacktestConfig(), reports_dir=tmp / "reports", exchange="binance"
    )


def test_the_report_names_the_series_and_what_ran(report: dict[str, Any]) -> None:
    text = Path(report["report_html"]).read_text()
    h1 = re.search(r"<h1>(.*?)</h1>", text)
    assert h1 is not None and h1.group(1) == "Backtest of my_signals.csv on binance ETH/BTC 5m"
    assert "2018-01-10 04:55 UTC to 2018-01-30 04:50 UTC (20.0 days)" in text
    # the stress scenarios replay the user's signals: the section says so, not "RSI rule"
    stress = re.search(r"<h2>(Stress scenarios[^<]*)</h2>", text)
    assert stress is not None
    assert stress.group(1) == "Stress scenarios, replayed with your signals (event-driven engine)"


def test_no_annualized_figure_and_no_empty_cell_under_30_days(report: dict[str, Any]) -> None:
    text = Path(report["report_html"]).read_text()
    assert report["sharpe_units"] == "per bar" and report["cagr"] is None
    cells = re.findall(r"<td>([^<]*)</td>", text)
    assert "cagr" not in cells and "calmar" not in cells  # rows left out, not shown empty
    assert "sharpe (per bar)" in cells and "sortino (per bar)" in cells
    assert "no annualized figures" in text
    assert not {"None", "nan", "NaN", "n/a", "inf"} & set(cells), sorted(set(cells))[:20]
    # a figure that is undefined (no kill switch fired: no bar) shows as a dash
    assert MISSING in cells


def test_the_charts_load_plotly_from_the_reports_folder(report: dict[str, Any]) -> None:
    html_path = Path(report["report_html"])
    text = html_path.read_text()
    src = re.findall(r'<script src="([^"]+)"', text)
    assert len(src) == 1 and re.fullmatch(r"\.\./_assets/plotly-[\d.]+\.min\.js", src[0])
    js = (html_path.parent / src[0]).resolve()
    assert js.is_file() and js.stat().st_size > 1_000_000  # the whole bundle, not a stub
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", text)  # no CDN, no remote file
    for chart in ("price", "equity", "drawdown"):
        assert text.count(f'id="chart-{chart}"') == 1
    assert '"type":"candlestick"' in text


def test_entries_and_exits_are_the_trades(report: dict[str, Any], eth_btc: Candles) -> None:
    figs = json.loads(Path(report["report_json"]).read_text())["figures"]
    price = figs["price"]
    # 5,760 bars: three per drawn candle (at most 2,000 are drawn)
    assert price["symbol"] == "ETH/BTC" and price["bars_per_candle"] == 3
    assert len(price["ts_ms"]) == len(eth_btc) // 3
    assert len(price["exits"]) == report["trades"]
    assert len(price["entries"]) in (report["trades"], report["trades"] + 1)
    lo, hi = eth_btc.ts_ms[0], eth_btc.ts_ms[-1]
    for mark in price["entries"] + price["exits"]:
        assert lo <= mark["ts_ms"] <= hi
        i = int(np.searchsorted(eth_btc.ts_ms, mark["ts_ms"], side="right")) - 1
        # a fill is at the bar's open or a stop inside the bar, with at most the slippage
        assert eth_btc.low[i] * 0.99 <= mark["price"] <= eth_btc.high[i] * 1.01


def test_a_position_open_at_the_end_is_marked_at_its_fill(eth_btc: Candles) -> None:
    part = eth_btc.slice(0, 500)
    signal = np.zeros(len(part), dtype=np.int8)
    signal[100:] = 1  # long from bar 100 on, never closed
    result = run_event_driven(part, SignalSeries.of(signal), BacktestConfig())
    assert result.trades == []
    marks = trade_markers(part, result)
    assert marks["exits"] == []
    (entry,) = marks["entries"]
    fill = result.fills[0]
    assert entry == {"ts_ms": fill.ts_ms, "price": fill.price, "side": "long", "open_at_end": True}
    assert fill.ts_ms == part.ts_ms[101]  # decided at bar 100's close, filled at 101's open


def test_candles_are_merged_down_keeping_each_high_and_low(eth_btc: Candles) -> None:
    result = run_event_driven(eth_btc, SignalSeries.of(np.zeros(len(eth_btc))), BacktestConfig())
    data = price_data(eth_btc, result, max_candles=100)
    step = data["bars_per_candle"]
    assert step == math.ceil(len(eth_btc) / 100) and len(data["open"]) <= 100
    assert data["open"][0] == eth_btc.open[0] and data["close"][-1] == eth_btc.close[-1]
    assert max(data["high"]) == eth_btc.high.max() and min(data["low"]) == eth_btc.low.min()
    assert data["high"][1] == eth_btc.high[step : 2 * step].max()
    assert data["close"][0] == eth_btc.close[step - 1]


def test_annualized_rows_stay_for_a_month_or_more() -> None:
    summary = {"sharpe_units": "annualized", "cagr": 0.12, "calmar": 1.5, "baselines": {}}
    rows = {r["figure"]: r["strategy"] for r in metric_rows(summary)}
    assert rows["cagr"] == 0.12 and rows["calmar"] == 1.5 and "sharpe" in rows
    short = {r["figure"] for r in metric_rows({**summary, "sharpe_units": "per bar"})}
    assert "cagr" not in short and "calmar" not in short and "sharpe (per bar)" in short


def test_cells() -> None:
    assert fmt(None) == fmt(float("nan")) == MISSING
    assert fmt(float("inf")) == "\u221e" and fmt(True) == "yes"
    assert fmt(0.123456) == "0.1235" and fmt(1234567.0) == "1,234,567"
    assert fmt("<b>") == "&lt;b&gt;"
