"""How funding and news data reach the serving loop (``trading.side_data``): the stored data
handed out bar by bar (a value only once it exists before the bar's close, a mark candle at its
own close), and the live feed that polls the warehouse for new rows (each headline once, a
late-written headline still delivered)."""

from __future__ import annotations

import time

import duckdb
import polars as pl
import pyarrow as pa

from pipelines.features.side import SideInputs
from trading.side_data import SideTimeline, WarehouseSideFeed, reads_side_groups
from warehouse import Settings, upsert

H = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def _utc(ms: list[int]) -> pl.Series:
    return pl.Series(ms, dtype=pl.Int64).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")


def test_the_timeline_hands_out_a_value_once_it_exists_before_the_close() -> None:
    side = SideInputs(
        funding=pl.DataFrame({"ts": _utc([T0 + H, T0 + H + 17]), "funding_rate": [1e-4, 2e-4]}),
        mark=pl.DataFrame({"ts": _utc([T0, T0 + H]), "close": [1.0, 1.1]}),
        news=pl.DataFrame(
            {"ts": _utc([T0 + 30 * 60_000]), "score": [0.5], "symbols": [["BTC"]]},
            schema={
                "ts": pl.Datetime("ms", "UTC"),
                "score": pl.Float64,
                "symbols": pl.List(pl.String),
            },
        ),
    )
    timeline = SideTimeline("BTC/USDT:USDT", side, H)
    # the bar opening at T0 closes at T0 + H: its own mark candle and the headline, not the
    # funding rate stamped exactly at its close
    first = timeline.until(T0 + H)
    assert sorted((t, m) for t, m, _ in first) == [(T0, "on_mark"), (T0 + 30 * 60_000, "on_news")]
    second = timeline.until(T0 + 2 * H)
    assert sorted((t, m) for t, m, _ in second) == [
        (T0 + H, "on_funding"),
        (T0 + H, "on_mark"),
        (T0 + H + 17, "on_funding"),
    ]
    assert timeline.until(T0 + 3 * H) == ()
    timeline.reset()
    assert len(timeline.until(T0 + 3 * H)) == 5
    assert reads_side_groups(["basis", "rsi_14"]) == ("funding",)
    assert reads_side_groups(["market_news_decayed"]) == ("sentiment",)


def _news(
    con: duckdb.DuckDBPyConnection, settings: Settings, ids: list[str], ts: list[int]
) -> None:
    n = len(ids)
    keys = {"source": ["feed"] * n, "id": ids}
    upsert(
        con,
        "news",
        pa.table(
            {
                **keys,
                "ts": pa.array(ts, pa.timestamp("ms", "UTC")),
                "title": ids,
                "body": pa.nulls(n, pa.string()),
                "url": pa.nulls(n, pa.string()),
                "symbols": [["BTC"]] * n,
            }
        ),
        settings=settings,
    )
    upsert(
        con,
        "news_scores",
        pa.table({**keys, "scorer": ["vader"] * n, "score": [0.25] * n}),
        settings=settings,
    )


def _funding(con: duckdb.DuckDBPyConnection, settings: Settings, ts: list[int]) -> None:
    n = len(ts)
    upsert(
        con,
        "funding_rates",
        pa.table(
            {
                "exchange": ["x"] * n,
                "symbol": ["BTC/USDT:USDT"] * n,
                "timeframe": ["8h"] * n,
                "ts": pa.array(ts, pa.timestamp("ms", "UTC")),
                "funding_rate": [1e-4] * n,
            }
        ),
        settings=settings,
    )


def test_the_live_feed_reads_what_the_warehouse_received_since_the_last_poll(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    now = int(time.time() * 1000)
    _funding(lake, settings, [now - 9 * H, now - H])
    _news(lake, settings, ["a", "b"], [now - 2 * H, now - H])
    symbols = ["BTC/USDT:USDT", "ETH/BTC"]
    # no overlap here: rows written before a poll are not read again by the next one (with an
    # overlap, funding rows are re-read and replace themselves; headlines never come twice)
    feed = WarehouseSideFeed(lake, "x", "1h", symbols, clock=time.time, overlap_s=0.0)
    first = feed.poll()
    assert sorted(m for _, m, _ in first["BTC/USDT:USDT"]) == ["on_funding"] * 2 + ["on_news"] * 2
    assert [m for _, m, _ in first["ETH/BTC"]] == ["on_news", "on_news"]  # market-wide news
    # a new funding rate, and a headline published an hour ago but written only now
    _funding(lake, settings, [now + 7 * H])
    _news(lake, settings, ["late"], [now - H + 1])
    second = feed.poll()
    assert sorted((t, m) for t, m, _ in second["BTC/USDT:USDT"]) == [
        (now - H + 1, "on_news"),
        (now + 7 * H, "on_funding"),
    ]
    assert [m for _, m, _ in second["ETH/BTC"]] == ["on_news"]
    feed.overlap_s = 3600.0  # everything is re-read: the funding rows, never a headline
    third = feed.poll()
    assert all(m == "on_funding" for events in third.values() for _, m, _ in events)
    assert len(third["BTC/USDT:USDT"]) == 3 and "ETH/BTC" not in third
