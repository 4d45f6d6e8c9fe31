"""The reports a person opens, opened in headless Chromium with no network.

A fresh TRADELOOP_HOME gets the real ETH/BTC 5m freqtrade file through `tradeloop import`;
then `tradeloop backtest --signals FILE`, `tradeloop backtest --model champion` (a real ONNX
model registered as champion) and `tradeloop quality` write their pages. Each page is loaded
by Chromium (``tests.flows.browser``: every request recorded, host names resolving to
nothing): no request fails, none leaves the machine, no script error, the charts are drawn
(plotly's SVG inside each chart's div, the candles as a candlestick trace) and the series is
named on the page.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from tests.flows.browser import PageLoad, chromium, open_page

# one worker builds the module's home (xdist would build it once per worker)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.xdist_group("report-browser"),
]

SERIES = "file ETH/BTC 5m"  # `import` stores a file's candles under the exchange "file"

# What a page drew: each plotly chart's traces (plotly keeps them on its div as `data`), the
# SVG layers it rendered, and the page's text.
PROBE = """({
  charts: Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => ({
    id: d.id,
    types: (d.data || []).map(t => t.type),
    names: (d.data || []).map(t => t.name),
    svgs: d.querySelectorAll('svg.main-svg').length,
    paths: d.querySelectorAll('g.trace path').length,
    title: (d.querySelector('.gtitle') || {}).textContent || '',
  })),
  h1: (document.querySelector('h1') || {}).textContent || '',
  h2: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
  series: Array.from(document.querySelectorAll('.series')).map(e => e.textContent),
  cells: document.querySelectorAll('td').length,
  text: document.body.innerText,
})"""


def _browser() -> None:
    if chromium() is None:
        message = "chromium is not installed (CI installs it with .ci/setup-chromium.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _ok(res: Any) -> str:
    assert res.exit_code == 0, res.output
    return str(res.output)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory, candles_dir: Path) -> Iterator[dict[str, Path]]:
    from flows.cli import app
    from tests.trading.serve_support import momentum_model, register_champion
    from warehouse import Settings, connect
    from warehouse.settings import get_settings

    _browser()
    tmp = tmp_path_factory.mktemp("report-browser")
    home = tmp / "home"
    cli = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRADELOOP_HOME", str(home))
        mp.delenv("TRADELOOP_REPORTS_URL", raising=False)
        mp.delenv("PREFECT_API_URL", raising=False)
        get_settings.cache_clear()
        try:
            _ok(cli.invoke(app, ["import", str(candles_dir / "ETH_BTC-5m.feather")]))

            real = pl.read_ipc(candles_dir / "ETH_BTC-5m.feather")
            signals = tmp / "my_signals.csv"
            pl.DataFrame(
                {
                    "ts": real["date"].dt.convert_time_zone("UTC"),
                    "symbol": ["ETH/BTC"] * real.height,
                    "signal": np.where((np.arange(real.height) // 144) % 2 == 0, 1, 0),
                }
            ).write_csv(signals)
            _ok(cli.invoke(app, ["backtest", "--signals", str(signals)]))

            settings = Settings(home=home)
            con = connect(settings)
            try:
                register_champion(con, settings, momentum_model(tmp / "momentum.onnx"))
            finally:
                con.close()
            _ok(cli.invoke(app, ["backtest", "--model", "champion"]))

            out = _ok(cli.invoke(app, ["quality", "--no-docs"]))
        finally:
            get_settings.cache_clear()
    found = re.search(r"Quality report: file://(\S+)", out)
    assert found, out
    reports = home / "reports"
    yield {
        "signals": reports / "ETH_BTC-5m-signals" / "report.html",
        "model": reports / "ETH_BTC-5m-model" / "report.html",
        "quality-run": Path(found.group(1)),
        "quality-index": reports / "quality" / "index.html",
    }


def _load(page: Path, profile: Path) -> PageLoad:
    assert page.is_file(), page
    load = open_page(page.resolve().as_uri(), profile, PROBE)
    assert load.failed == [], load.failed
    assert load.errors == [], load.errors
    outside = [u for u in load.requested if not u.startswith("file://")]
    assert outside == [], f"requests that leave the page's folder: {outside}"
    return load


@pytest.mark.parametrize("which", ["signals", "model"])
def test_backtest_report_draws_its_charts_offline(
    pages: dict[str, Path], which: str, tmp_path: Path
) -> None:
    load = _load(pages[which], tmp_path / "profile")
    assert any(u.endswith(".min.js") for u in load.requested)  # plotly.js, from _assets
    drawn = {c["id"]: c for c in load.probe["charts"]}
    assert {"chart-price", "chart-equity", "chart-drawdown"} <= set(drawn)
    for chart in drawn.values():
        assert chart["svgs"] >= 1 and chart["paths"] >= 1, chart  # rendered, not an empty div
    price = drawn["chart-price"]
    assert price["types"][0] == "candlestick" and price["names"][0] == "ETH/BTC"
    assert {"long entry", "exit"} <= set(price["names"])  # the trades are on the candles
    assert SERIES in price["title"]
    assert {"buy and hold", "RSI rule", "majority class"} <= set(drawn["chart-equity"]["names"])
    assert SERIES in load.probe["h1"] and SERIES in load.probe["series"]
    stress = [h for h in load.probe["h2"] if h.startswith("Stress scenarios")]
    expected = "replayed with your signals" if which == "signals" else "replayed by the model"
    assert len(stress) == 1 and expected in stress[0], stress
    # 20 days of 5m bars: no annualized figure, and no "None" anywhere a person reads
    assert "cagr" not in load.probe["text"] and "calmar" not in load.probe["text"]
    assert not re.search(r"\b(None|nan|NaN)\b", load.probe["text"])


@pytest.mark.parametrize("which", ["quality-run", "quality-index"])
def test_quality_pages_name_their_series_offline(
    pages: dict[str, Path], which: str, tmp_path: Path
) -> None:
    load = _load(pages[which], tmp_path / "profile")
    assert load.requested == [pages[which].resolve().as_uri()]  # the page alone: no asset
    assert "ETH/BTC" in load.probe["series"]
    if which == "quality-run":
        (section,) = [h for h in load.probe["h2"] if "ETH/BTC" in h]
        assert section.startswith(SERIES)
        assert "Expectations" in load.probe["text"] and load.probe["cells"] > 30
        assert "Data asset: None" not in load.probe["text"]
    else:
        assert re.search(r"file\s+ETH/BTC\s+5m\s+candles\s+passed", load.probe["text"])
