"""The feed-server test (issue 15): headlines fetched from a loopback RSS/Atom server through
feedparser, scored by VADER, stored once however often the feed is fetched again, and the news
features of the bars after them updated: a positive headline raises the score, a negative one
lowers it."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl
import pytest

from pipelines.news import (
    FeedSource,
    NewsSourceError,
    OnlineNewsFeatures,
    VaderScorer,
    ingest,
    news_features,
    read_news,
)
from tests.support.feeds import Entry, FeedServer, atom, ingest_counts, rss

T0 = dt.datetime(2024, 3, 1, 10, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def _bars() -> pl.DataFrame:
    """BTC/USDT 1h bars opened 09:00 .. 12:00 (closes 10:00 .. 13:00)."""
    ts = [T0 - HOUR + k * HOUR for k in range(4)]
    return pl.DataFrame(
        {"symbol": ["BTC/USDT"] * 4, "timeframe": ["1h"] * 4, "ts": ts, "close": [1.0] * 4}
    ).with_columns(pl.col("ts").dt.cast_time_unit("ms"))


def _features(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    news = pl.from_arrow(read_news(con, scored_only=True))
    assert isinstance(news, pl.DataFrame)
    return news_features(_bars(), news)


def test_headlines_are_fetched_scored_stored_once_and_move_the_features(
    lake: duckdb.DuckDBPyConnection, feed_server: FeedServer
) -> None:
    url = feed_server.url("/crypto.atom")
    entries = [
        Entry("urn:n:1", "Bitcoin holds steady ahead of data", T0 + dt.timedelta(minutes=10))
    ]
    feed_server.documents["/crypto.atom"] = atom(entries)

    assert ingest_counts(lake, FeedSource(url)) == (1, 0, 1)
    again = ingest_counts(lake, FeedSource(url))
    assert again == (0, 1, 0), "a re-run stores and scores nothing again"
    stored = read_news(lake).to_pylist()
    assert [(r["id"], r["symbols"], r["score"]) for r in stored] == [("urn:n:1", ["BTC"], 0.0)]
    assert stored[0]["source"] == url and stored[0]["ts"] == T0 + dt.timedelta(minutes=10)
    neutral = _features(lake)
    # bar 09:00 closes at 10:00, before the headline; bar 10:00 closes at 11:00, after it
    assert neutral["news_count_1h"].to_list() == [0, 1, 0, 0]
    assert neutral["news_mean_1h"].to_list() == [None, 0.0, None, None]

    entries.append(
        Entry("urn:n:2", "Bitcoin surges on strong inflows", T0 + dt.timedelta(minutes=20))
    )
    feed_server.documents["/crypto.atom"] = atom(entries)
    assert ingest_counts(lake, FeedSource(url)) == (1, 1, 1)
    positive = _features(lake)
    assert positive["news_count_1h"][1] == 2
    assert positive["news_mean_1h"][1] > neutral["news_mean_1h"][1]
    assert positive["news_decayed"][1] > neutral["news_decayed"][1]
    assert positive["market_news_mean_24h"][3] > neutral["market_news_mean_24h"][3]
    assert positive["news_mean_1h"][0] is None, "the bar that closed before it is unchanged"

    entries.append(
        Entry(
            "urn:n:3",
            "Bad day for Bitcoin as prices sink",
            T0 + dt.timedelta(minutes=30),
            summary="<p>Traders fear a <b>crash</b> as losses deepen.</p>",
        )
    )
    feed_server.documents["/crypto.atom"] = atom(entries)
    assert ingest_counts(lake, FeedSource(url)) == (1, 2, 1)
    negative = _features(lake)
    assert negative["news_count_1h"][1] == 3 and negative["news_count_24h"][3] == 3
    assert negative["news_mean_1h"][1] < positive["news_mean_1h"][1]
    assert negative["news_decayed"][1] < positive["news_decayed"][1]
    assert negative["market_news_decayed"][2] < positive["market_news_decayed"][2]
    assert lake.execute("SELECT count(*) FROM news").fetchone() == (3,)
    assert lake.execute("SELECT count(*) FROM news_scores").fetchone() == (3,)

    # the online engine, fed the stored headlines, gives the batch values bar by bar
    online = OnlineNewsFeatures("BTC/USDT")
    for row in read_news(lake, scored_only=True).to_pylist():
        online.on_news(row["ts"], row["score"], row["symbols"])
    for k, opened in enumerate(_bars()["ts"]):
        values = online.at_close(opened + HOUR)
        for name, value in values.items():
            expected = negative[name][k]
            assert (value is None) == (expected is None), (k, name)
            assert value is None or abs(value - expected) <= 1e-9, (k, name, value, expected)


def test_an_rss_feed_a_corrected_headline_and_an_undated_entry(
    lake: duckdb.DuckDBPyConnection, feed_server: FeedServer
) -> None:
    url = feed_server.url("/news.rss")
    when = T0 + dt.timedelta(minutes=5)
    feed_server.documents["/news.rss"] = rss(
        [Entry("g-1", "Ethereum gains as optimism grows", when)]
    )
    assert ingest_counts(lake, FeedSource(url)) == (1, 0, 1)
    row = read_news(lake).to_pylist()[0]
    assert (row["id"], row["ts"], row["symbols"]) == ("g-1", when, ["ETH"])
    assert row["score"] > 0.5
    # the publisher corrects the headline: the row is replaced and scored again
    feed_server.documents["/news.rss"] = rss(
        [Entry("g-1", "Ethereum loses ground as fear spreads", when)]
    )
    source = FeedSource(url)
    result = ingest(lake, source.fetch(), scorer=VaderScorer(), source=url)
    assert (result.inserted, result.replaced, result.scored) == (0, 1, 1)
    assert read_news(lake).to_pylist()[0]["score"] < -0.5

    # an entry without a date: stamped when first fetched, and kept so
    url = feed_server.url("/undated.rss")
    feed_server.documents["/undated.rss"] = rss(
        [Entry("u-1", "Solana gains as optimism grows", None)]
    )
    before = dt.datetime.now(dt.UTC)
    assert ingest_counts(lake, FeedSource(url)) == (1, 0, 1)
    first = read_news(lake, assets=["SOL"]).to_pylist()[0]["ts"]
    assert before <= first <= dt.datetime.now(dt.UTC), "stamped when fetched, never earlier"
    assert ingest_counts(lake, FeedSource(url)) == (0, 1, 0), "a re-fetch neither moves nor adds it"
    assert read_news(lake, assets=["SOL"]).to_pylist()[0]["ts"] == first


def test_a_missing_or_broken_feed_is_named(feed_server: FeedServer) -> None:
    with pytest.raises(NewsSourceError, match=r"feed http://127\.0\.0\.1:\d+/gone\.atom: HTTP 404"):
        FeedSource(feed_server.url("/gone.atom")).fetch()
    feed_server.documents["/broken"] = "<html><body>not a feed"
    with pytest.raises(NewsSourceError, match="/broken: not an RSS or Atom feed"):
        FeedSource(feed_server.url("/broken")).fetch()
