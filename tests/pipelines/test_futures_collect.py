"""Funding rates, mark prices and open interest through the real ccxt.binanceusdm client
against the loopback exchange (Binance's USD-M shape), with faults injected: two runs, the
second resuming after the first, store exactly what the exchange has, none lost or twice."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.futures_collect import Kind, collect_futures, futures_source
from pipelines.loopback import Fault, FaultPlan
from pipelines.simulated_exchange import DEFAULT_ORIGIN_MS
from pipelines.sources import RetryPolicy, SourceError
from tests.support.loopback import NOW_MS

CONTRACT = "BTC/USDT:USDT"
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
FUTURES = ("markPriceKlines", "fundingRate", "openInterestHist")
FAULTS = FaultPlan(
    pattern=(
        Fault.RATE_LIMIT,
        Fault.DUPLICATES,
        Fault.SERVER_ERROR,
        Fault.SLOW,
        Fault.SHUFFLED,
        Fault.UNAVAILABLE,
        None,
        Fault.TRUNCATED,
    ),
    endpoints=FUTURES,
    repeat=False,  # each endpoint's first 8 requests (over both runs) get these
    slow_s=1.0,  # past the client's 700 ms timeout
    retry_after_s=0.02,
)
RETRY = RetryPolicy(max_attempts=8, backoff_initial_s=0.005, backoff_max_s=0.02)
SINCE = DEFAULT_ORIGIN_MS + DAY_MS + 12_345  # not aligned: the first rows start after it
PAGES: dict[Kind, int] = {"mark_candles": 60, "funding_rates": 6, "open_interest": 60}
SQL = {
    "mark_candles": "SELECT epoch_ms(ts), open, high, low, close FROM mark_candles",
    "funding_rates": "SELECT epoch_ms(ts), funding_rate FROM funding_rates",
    "open_interest": "SELECT epoch_ms(ts), open_interest, open_interest_value FROM open_interest",
}


def _truth(exchange, kind: str, until_ms: int) -> np.ndarray:
    """What the exchange has in [SINCE, until_ms) at ``until_ms``, from its own methods."""
    if kind == "mark_candles":
        rows = exchange.klines(CONTRACT, "1h", SINCE, until_ms - 1, 10_000, mark=True)
        rows = [r[:5] for r in rows if r[0] + HOUR_MS <= until_ms]  # closed only
    elif kind == "funding_rates":
        rows = [
            [r["fundingTime"], r["fundingRate"]]
            for r in exchange.funding_history(CONTRACT, SINCE, until_ms - 1, 10_000)
        ]
    else:
        rows = [
            [r["timestamp"], r["sumOpenInterest"], r["sumOpenInterestValue"]]
            for r in exchange.open_interest_hist(CONTRACT, "1h", SINCE, until_ms - 1, 10_000)
        ]
    return np.asarray(rows, dtype=np.float64)


@pytest.mark.slow  # 10-26 s on the shared 2-core machine: GX start-up, 7 gate calls, 3 timeouts
def test_two_runs_with_faults_store_every_row_once(loopback, lake, settings) -> None:
    clock = [NOW_MS - 3 * DAY_MS]
    server = loopback(faults=FAULTS, futures=(CONTRACT,), clock=lambda: clock[0])
    source = futures_source(
        api_base=server.url,
        config={"timeout": 700, "rateLimit": 1},
        retry=RETRY,
        clock=lambda: clock[0],
        seed=1,
    )
    results = []
    for run_now in (NOW_MS - 3 * DAY_MS, NOW_MS):  # the second run resumes after the first
        clock[0] = run_now
        for kind, limit in PAGES.items():
            results.append(
                collect_futures(
                    lake, source, kind, CONTRACT, SINCE, settings=settings, page_limit=limit
                )
            )
    first, second = results[:3], results[3:]
    for a, b in zip(first, second, strict=True):
        assert b.since_ms > a.since_ms  # resumed after the last stored row
        assert a.rows_merged > 0 and b.rows_merged > 0
    for kind in PAGES:
        stored = np.asarray(lake.execute(SQL[kind] + " ORDER BY ts").fetchall(), dtype=np.float64)
        truth = _truth(server.exchange, kind, NOW_MS)
        assert stored.shape == truth.shape, kind  # 0 lost, 0 duplicated
        assert np.array_equal(stored, truth), kind
        assert len(np.unique(stored[:, 0])) == len(stored)
    assert lake.execute(
        "SELECT count(*) FROM quarantine WHERE table_name IN "
        "('mark_candles', 'funding_rates', 'open_interest')"
    ).fetchone() == (0,)
    assert sum(r.rows_quarantined for r in results) == 0
    # every kind of fault happened on the futures endpoints and was survived
    errors = " ".join(e for r in results for e in r.fetch.errors)
    for name in ("DDoSProtection", "ExchangeNotAvailable", "RequestTimeout", "MalformedResponse"):
        assert name in errors, errors
    assert sum(r.fetch.duplicates_dropped for r in results) > 0
    # every fault of the plan was served on each endpoint (ccxt sorts a shuffled page itself)
    assert all(server.exchange._fault_index[e] >= len(FAULTS.pattern) for e in FUTURES), dict(
        server.exchange._fault_index
    )
    # the mark candle holding "now" was served but not stored
    assert sum(r.fetch.open_candles_dropped for r in results) >= 1

    # a full re-run without resume (overlapping every stored row) changes nothing
    before = lake.execute("SELECT count(*) FROM funding_rates").fetchone()
    again = collect_futures(
        lake,
        source,
        "funding_rates",
        CONTRACT,
        SINCE,
        settings=settings,
        page_limit=7,
        resume=False,
    )
    assert again.rows_merged == before[0]
    assert lake.execute("SELECT count(*) FROM funding_rates").fetchone() == before


def test_unknown_contract_fails_at_once(loopback, lake, settings) -> None:
    server = loopback(futures=(CONTRACT,))
    source = futures_source(api_base=server.url, config={"timeout": 2_000, "rateLimit": 1})
    with pytest.raises(SourceError, match="ETH/USDT:USDT"):
        collect_futures(lake, source, "funding_rates", "ETH/USDT:USDT", SINCE, settings=settings)
