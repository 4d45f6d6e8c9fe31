"""The simulated exchange's perpetual: its mark candles, funding rates and open interest are
consistent with its candles, equal what the loopback exchange serves, and pass their suites."""

from __future__ import annotations

import datetime as dt

import numpy as np

from expectations.gate import gate_and_merge
from pipelines.loopback import LoopbackExchange
from pipelines.simulated_exchange import DEFAULT_ORIGIN_MS, SimulatedExchange
from pipelines.simulated_futures import premium, simulated_futures

CONTRACT = "BTC/USDT:USDT"
H = 3_600_000
SINCE = DEFAULT_ORIGIN_MS + 2 * 86_400_000 + 123
UNTIL = SINCE + 4 * 86_400_000


def test_simulated_futures_match_the_candles_and_the_loopback(lake, settings) -> None:
    sim = SimulatedExchange()
    tables = {
        kind: simulated_futures(sim, CONTRACT, kind, SINCE, UNTIL)
        for kind in ("mark_candles", "funding_rates", "open_interest")
    }
    mark, funding, oi = tables.values()
    assert (mark.num_rows, funding.num_rows, oi.num_rows) == (
        95,
        12,
        96,
    )  # the first hour opens before SINCE
    # mark = trade / (1 + premium): the 1h closes against the underlying's 1h candles
    trade = sim.candles("BTC/USDT", SINCE, UNTIL, timeframe="1h")
    t = trade["ts"].cast("int64").to_numpy()
    assert np.array_equal(t, mark["ts"].cast("int64").to_numpy())
    expected = trade["close"].to_numpy() / (1 + premium(t + H - 60_000))
    assert np.allclose(mark["close"].to_numpy(), expected, rtol=1e-14, atol=0)
    assert mark["volume"].null_count == mark.num_rows
    # the loopback exchange serves the same values
    ex = LoopbackExchange(
        symbols=["BTC/USDT"], futures=[CONTRACT], simulated=sim, clock=lambda: UNTIL
    )
    served = ex.klines(CONTRACT, "1h", SINCE, UNTIL - 1, 1000, mark=True)
    closed = [float(r[4]) for r in served if r[0] + H <= UNTIL]  # not the open one
    assert closed == mark["close"].to_pylist()
    rates = ex.funding_history(CONTRACT, SINCE, UNTIL - 1, 1000)
    assert [r["fundingTime"] for r in rates] == funding["ts"].cast("int64").to_pylist()
    assert np.allclose([float(r["fundingRate"]) for r in rates], funding["funding_rate"], atol=1e-8)
    hist = ex.open_interest_hist(CONTRACT, "1h", SINCE, UNTIL - 1, 1000)
    assert np.allclose([float(r["sumOpenInterest"]) for r in hist], oi["open_interest"], atol=1e-8)
    # every row passes its table's suite
    now = dt.datetime.fromtimestamp(UNTIL / 1000, dt.UTC)
    for kind, table in tables.items():
        result = gate_and_merge(lake, kind, table, settings=settings, now=now)
        assert (result.rows_merged, result.rows_quarantined) == (table.num_rows, 0), kind
