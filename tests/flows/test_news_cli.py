"""`tradeloop news` in-process, run directly (no Prefect server): fetch from the loopback feed
server (a missing feed is one error line, the other feed is stored), a re-run stores nothing,
list as JSON, a bad import row named by file and line, a term added, simulated headlines, and
the news features as-of stored candles."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pipelines.simulated_exchange import DAY_MS, DEFAULT_ORIGIN_MS, SimulatedExchange
from tests.support.cli import run_tradeloop
from tests.support.feeds import Entry, atom, serve_feeds
from warehouse import Settings, connect, upsert

ORIGIN = dt.datetime.fromtimestamp(DEFAULT_ORIGIN_MS / 1000, dt.UTC)


@pytest.mark.slow  # 55-64 s wall at load 40-48 on 2 cores (15 s CPU for the whole process)
def test_news_commands(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADELOOP_HOME", str(settings.home))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with serve_feeds() as server:
        server.documents["/a.atom"] = atom(
            [
                Entry("a-1", "Bitcoin surges on strong inflows", ORIGIN + dt.timedelta(hours=30)),
                Entry(
                    "a-2",
                    "Ethereum slides as worried sellers take control",
                    ORIGIN + dt.timedelta(hours=31),
                ),
            ]
        )
        good, missing = server.url("/a.atom"), server.url("/missing.atom")

        out = run_tradeloop(["news", "fetch", "--feed", good, "--feed", missing])
        assert out.exit_code == 1, out.output
        assert f"{good}: 2 headlines, 2 new, 0 changed, 0 unchanged, 2 scored" in out.output
        assert f"error: feed {missing}: HTTP 404" in out.output

        out = run_tradeloop(["news", "fetch", "--feed", good])
        assert out.exit_code == 0, out.output
        assert f"{good}: 2 headlines, 0 new, 0 changed, 2 unchanged, 0 scored" in out.output

    out = run_tradeloop(["news", "list", "-s", "BTC/USDT", "-f", "json"])
    assert out.exit_code == 0, out.output
    listed = json.loads(out.output)
    assert [(r["id"], r["symbols"]) for r in listed] == [("a-1", ["BTC"])]
    assert listed[0]["score"] > 0.3

    bad = tmp_path / "bad.csv"
    bad.write_text("ts,title\n2024-01-02,fine\nyesterday,Bitcoin up\n")
    out = run_tradeloop(["news", "import", str(bad)])
    assert out.exit_code == 1
    assert f"error: {bad}:3: ts 'yesterday' is not an ISO time" in out.output

    out = run_tradeloop(["news", "terms", "add", "pepe", "pepe", "PEPE"])
    assert out.exit_code == 0 and "PEPE: 2 term(s) added" in out.output, out.output

    simulate = ["news", "simulate", "-s", "ETH/USDT", "--timerange", "2024-01-01:2024-01-03"]
    out = run_tradeloop(simulate)
    assert out.exit_code == 0, out.output
    assert "simulated: " in out.output and " 0 new" not in out.output

    con = connect(settings)
    try:
        candles = SimulatedExchange().candles(
            "ETH/USDT", DEFAULT_ORIGIN_MS, DEFAULT_ORIGIN_MS + 2 * DAY_MS, timeframe="1h"
        )
        upsert(con, "candles", candles, settings=settings)
    finally:
        con.close()
    out = run_tradeloop(["news", "features", "-s", "ETH/USDT", "-t", "1h", "-f", "json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert len(rows) == 48
    at_31h = next(r for r in rows if r["ts"].startswith("2024-01-02T07:00"))  # closes 08:00
    assert at_31h["market_news_count_24h"] >= 2  # the feed's two and the simulated ones
    assert rows[-1]["news_count_24h"] > 0 and rows[-1]["news_decayed"] != 0.0
