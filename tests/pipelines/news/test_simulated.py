"""The simulated news source follows the simulated exchange's regimes (positive headlines in
up-trends, negative in down-trends) and is deterministic for its seed, whatever window is
asked."""

from __future__ import annotations

import numpy as np

from pipelines.news import SimulatedNewsSource, VaderScorer
from pipelines.simulated_exchange import (
    DAY_MS,
    DEFAULT_ORIGIN_MS,
    MINUTE_MS,
    TREND_DOWN,
    TREND_UP,
    SimulatedExchange,
)

DAYS = 12


def test_headlines_follow_the_regimes_and_repeat_for_a_seed() -> None:
    exchange = SimulatedExchange()
    start, end = DEFAULT_ORIGIN_MS + 2 * DAY_MS, DEFAULT_ORIGIN_MS + (2 + DAYS) * DAY_MS
    items = SimulatedNewsSource(exchange, ["BTC/USDT"], start, end).fetch()
    assert len(items) >= 3 * DAYS
    assert all(i.symbols == ("BTC",) and "Bitcoin" in i.title for i in items)
    assert all(start <= i.ts.timestamp() * 1000 < end for i in items)
    regime = exchange.candle_arrays("BTC/USDT", start, end)["regime"]
    at = np.array([int(i.ts.timestamp() * 1000 - start) // MINUTE_MS for i in items])
    scores = np.array(VaderScorer().score([i.title for i in items]))
    up, down = scores[regime[at] == TREND_UP], scores[regime[at] == TREND_DOWN]
    assert up.size >= 5 and down.size >= 5
    assert up.mean() > 0.2 > -0.2 > down.mean(), (up.mean(), down.mean())

    again = SimulatedNewsSource(SimulatedExchange(), ["BTC/USDT"], start, end).fetch()
    assert again == items, "the same seed gives the same headlines"
    middle = (start + end) // 2
    part = SimulatedNewsSource(SimulatedExchange(), ["BTC/USDT"], middle, end).fetch()
    assert part == [i for i in items if i.ts.timestamp() * 1000 >= middle]
