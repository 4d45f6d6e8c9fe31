"""News features: the availability rule by hand, no look-ahead (a property test, batch and
online), and batch/online parity to 1e-9.

Rule (pipelines/news/features.py): the bar opened at ``t`` closes at ``close = t + step``; an
item published at ``ts`` counts for it iff ``ts < close``; a window of width ``W`` holds the items
with ``close - W <= ts < close``. So for any ``T``, changing, removing or adding items published
at ``>= T`` leaves every bar with ``close <= T`` exactly as it was.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass

import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipelines.news import NEWS_FEATURE_COLUMNS, NewsFeatureSpec, OnlineNewsFeatures, news_features

MIN = 60_000
HOUR = 60 * MIN
T0 = 1_709_251_200_000  # 2024-03-01 00:00 UTC
SYMBOLS = ("BTC/USDT", "ETH/BTC")
ASSETS = ("BTC", "ETH", "XRP")
SHORT = NewsFeatureSpec(windows=(("10m", 10 * MIN), ("1h", HOUR)), half_life_ms=15 * MIN)


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def candles(opens: dict[str, list[int]], timeframe: str = "5m") -> pl.DataFrame:
    rows = [(s, t) for s, ts in opens.items() for t in ts]
    return pl.DataFrame(
        {
            "symbol": [s for s, _ in rows],
            "timeframe": [timeframe] * len(rows),
            "ts": pl.Series([t for _, t in rows])
            .cast(pl.Datetime("ms"))
            .dt.replace_time_zone("UTC"),
        }
    )


@dataclass(frozen=True)
class Item:
    ts: int
    score: float
    symbols: tuple[str, ...]


def news(items: list[Item]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": pl.Series([i.ts for i in items], dtype=pl.Int64)
            .cast(pl.Datetime("ms"))
            .dt.replace_time_zone("UTC"),
            "score": pl.Series([i.score for i in items], dtype=pl.Float64),
            "symbols": pl.Series([list(i.symbols) for i in items], dtype=pl.List(pl.String)),
        }
    )


def online(
    frame: pl.DataFrame, items: list[Item], spec: NewsFeatureSpec, seed: int
) -> list[dict[str, float | int | None]]:
    """Each symbol's engine fed the items as they arrive: a bar's close is delivered up to a
    minute after it, and every item published before that moment (some at or after the
    close, which must not count for it yet) is fed first, shuffled; rows in the frame's order."""
    shuffle = random.Random(seed)
    out: dict[tuple[str, int], dict[str, float | int | None]] = {}
    for symbol in SYMBOLS:
        engine = OnlineNewsFeatures(symbol, spec=spec)
        closes = sorted(
            t + 5 * MIN
            for s, t in zip(frame["symbol"], frame["ts"].dt.epoch("ms"), strict=True)
            if s == symbol
        )
        waiting = sorted(items, key=lambda i: i.ts)
        for close in closes:
            arrived = close + shuffle.choice([0, 1, shuffle.randrange(MIN)])
            due = [i for i in waiting if i.ts <= arrived]
            waiting = waiting[len(due) :]
            shuffle.shuffle(due)
            for item in due:
                engine.on_news(item.ts, item.score, item.symbols)
            out[(symbol, close)] = engine.at_close(close)
    return [
        out[(s, t + 5 * MIN)]
        for s, t in zip(frame["symbol"], frame["ts"].dt.epoch("ms"), strict=True)
    ]


def test_the_availability_rule_and_the_decay_by_hand() -> None:
    close = T0 + 2 * HOUR  # the 5m bar opened at T0 + 1:55
    frame = candles({"BTC/USDT": [close - 5 * MIN]})
    items = [
        Item(close, 0.9, ("BTC",)),  # at the close: not yet
        Item(close - 1, -0.5, ("BTC",)),  # a millisecond before: counts
        Item(close - HOUR, 0.3, ("BTC",)),  # the 1h window's first instant: in it
        Item(close - HOUR - 1, 0.8, ("BTC",)),  # just before: in 24h only
        Item(close - 30 * MIN, 0.4, ("ETH",)),  # another asset: market only
    ]
    row = news_features(frame, news(items)).row(0, named=True)
    assert row["news_count_1h"] == 2 and row["news_mean_1h"] == (-0.5 + 0.3) / 2
    assert row["news_count_24h"] == 3 and math.isclose(row["news_mean_24h"], 0.6 / 3)
    assert row["market_news_count_1h"] == 3 and row["market_news_count_24h"] == 4
    h = 6 * HOUR
    decayed = -0.5 * 0.5 ** (1 / h) + 0.3 * 0.5 ** (HOUR / h) + 0.8 * 0.5 ** ((HOUR + 1) / h)
    assert abs(row["news_decayed"] - decayed) <= 1e-12
    assert abs(row["market_news_decayed"] - decayed - 0.4 * 0.5 ** (30 * MIN / h)) <= 1e-12
    engine = OnlineNewsFeatures("BTC/USDT")
    for item in items:
        engine.on_news(_utc(item.ts), item.score, item.symbols)
    values = engine.at_close(_utc(close))
    assert all(_near(values[c], row[c]) for c in NEWS_FEATURE_COLUMNS)
    empty = news_features(frame, news([])).row(0, named=True)
    assert empty["news_mean_1h"] is None and empty["news_count_24h"] == 0
    assert empty["market_news_decayed"] == 0.0


@st.composite
def cases(
    draw: st.DrawFn,
) -> tuple[dict[str, list[int]], list[Item], int, list[Item], NewsFeatureSpec]:
    opens: dict[str, list[int]] = {}
    for symbol in SYMBOLS:
        steps = draw(st.lists(st.integers(1, 30), min_size=1, max_size=80))  # gaps up to 2.5 h
        t, ts = T0 + draw(st.integers(0, 11)) * 5 * MIN, []
        for step in steps:
            t += step * 5 * MIN
            ts.append(t)
        opens[symbol] = ts
    end = max(max(v) for v in opens.values()) + 10 * MIN
    closes = sorted({t + 5 * MIN for v in opens.values() for t in v})
    when = st.one_of(
        st.integers(T0 - 30 * HOUR, end),
        st.sampled_from(closes),  # exactly on a close: counts only for the next bar
        st.sampled_from(closes).map(lambda c: c - 1),
    )
    item = st.builds(
        Item,
        when,
        st.floats(-1, 1, allow_nan=False),
        st.lists(st.sampled_from(ASSETS), max_size=2, unique=True).map(tuple),
    )
    items = draw(st.lists(item, max_size=60))
    cut = draw(st.one_of(st.sampled_from(closes), st.integers(T0, end)))
    # after the cut: some items rescored or dropped, new ones published
    later = [
        Item(i.ts, draw(st.floats(-1, 1, allow_nan=False)), i.symbols)
        for i in items
        if i.ts >= cut and draw(st.booleans())
    ]
    added = draw(
        st.lists(
            st.builds(Item, st.integers(cut, end + HOUR), st.floats(-1, 1), st.just(("BTC",))),
            max_size=10,
        )
    )
    changed = [i for i in items if i.ts < cut] + later + added
    spec = draw(st.sampled_from([NewsFeatureSpec(), SHORT]))
    return opens, items, cut, changed, spec


def _same(a: object, b: object) -> bool:
    return a == b or (a is None and b is None)


def _near(a: float | int | None, b: float | int | None) -> bool:
    """Equal nulls, or numbers within 1e-9 (batch/online parity)."""
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= 1e-9


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.integers(0, 2**16))
@example(
    (
        {"BTC/USDT": [T0], "ETH/BTC": [T0]},
        [Item(T0 + 5 * MIN, 1.0, ("BTC",))],
        T0 + 5 * MIN,
        [Item(T0 + 5 * MIN, -1.0, ("BTC",))],
        NewsFeatureSpec(),
    ),
    0,
)
def test_items_after_t_never_change_the_features_at_t_and_online_equals_batch(
    case: tuple[dict[str, list[int]], list[Item], int, list[Item], NewsFeatureSpec], seed: int
) -> None:
    opens, items, cut, changed, spec = case
    frame = candles(opens)
    before = news_features(frame, news(items), spec=spec)
    after = news_features(frame, news(changed), spec=spec)
    online_before = online(frame, items, spec, seed)
    online_after = online(frame, changed, spec, seed + 1)
    closes = (frame["ts"].dt.epoch("ms") + 5 * MIN).to_list()
    for k, close in enumerate(closes):
        for column in spec.columns:
            b, o = before[column][k], online_before[k][column]
            assert _near(b, o), (k, column, b, o)  # parity
            b2, o2 = after[column][k], online_after[k][column]
            assert _near(b2, o2), (k, column, b2, o2)
            if close <= cut:  # no look-ahead: exactly unchanged
                assert _same(b, b2), ("batch", k, column, close, cut, b, b2)
                assert _same(o, o2), ("online", k, column, close, cut, o, o2)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # an overflow in exp2 fails it
def test_decay_over_thousands_of_half_lives_stays_finite_and_matches_online() -> None:
    """Blocks of closes far apart (a year of 1-minute half-lives): no overflow, old items weigh
    nothing, and batch equals online."""
    spec = NewsFeatureSpec(windows=(("1h", HOUR),), half_life_ms=MIN)
    opens = [T0 + k * 7 * 24 * HOUR for k in range(52)]  # weekly bars over a year
    items = [Item(T0 + k * 24 * HOUR + 7, (-1) ** k * 0.5, ("BTC",)) for k in range(365)]
    frame = candles({"BTC/USDT": opens})
    batch = news_features(frame, news(items), spec=spec)
    engine = OnlineNewsFeatures("BTC/USDT", spec=spec)
    for item in items:
        engine.on_news(item.ts, item.score, item.symbols)
    for k, opened in enumerate(opens):
        values = engine.at_close(opened + 5 * MIN)
        assert all(_near(values[c], batch[c][k]) for c in spec.columns), k
    assert batch["news_decayed"].is_finite().all()
    # bar 1 sees item 7 (5 minutes old); item 6, a day older, weighs 2 ** -1440: nothing
    assert abs(batch["news_decayed"][1] - -0.5 * 2 ** (-(5 * MIN - 7) / MIN)) <= 1e-15
