"""The real ccxt.binance client against the loopback exchange, with faults injected."""

from __future__ import annotations

import ccxt
import numpy as np
import pyarrow as pa
import pytest

from pipelines.loopback import Fault, FaultPlan
from pipelines.simulated_exchange import MINUTE_MS
from pipelines.sources import FetchStats, RetryPolicy, SourceError, candles_checksum, table_checksum
from tests.support.loopback import NOW_MS, ccxt_source
from warehouse import upsert

FAULTS = FaultPlan(
    pattern=(
        Fault.RATE_LIMIT,
        None,
        Fault.SERVER_ERROR,
        Fault.SLOW,
        Fault.UNAVAILABLE,
        Fault.TRUNCATED,
        Fault.DUPLICATES,
        Fault.SHUFFLED,
        None,
    ),
    slow_s=1.2,  # past the client's 700 ms timeout
    retry_after_s=0.02,
)


SPARE_RETRY = RetryPolicy(max_attempts=8, backoff_initial_s=0.005, backoff_max_s=0.02)


def _server_truth(server, since_ms: int, until_ms: int) -> tuple[int, str]:
    s = server.exchange.closed_candles("BTC/USDT", since_ms, until_ms)
    return s.ts.size, candles_checksum(
        s.ts, np.column_stack([s.open, s.high, s.low, s.close, s.volume])
    )


def test_5000_candles_paged_exactly_through_faults(loopback, lake, settings) -> None:
    open_minute = NOW_MS - NOW_MS % MINUTE_MS
    since = open_minute - 5_000 * MINUTE_MS
    server = loopback(faults=FAULTS)
    # The pattern puts four failures in a row; attempts to spare, so one request that a loaded
    # machine stalls past the 700 ms timeout does not exhaust them.
    source = ccxt_source(server, timeout_ms=700, retry=SPARE_RETRY)
    stats = FetchStats()
    batches = list(source.iter_candles("BTC/USDT", "1m", since, None, stats=stats))
    for batch in batches:
        upsert(lake, "candles", batch, settings=settings)

    stored = lake.execute(
        "SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume "
        "FROM candles ORDER BY ts"
    ).fetch_arrow_table()
    count, checksum = _server_truth(server, since, NOW_MS)
    assert count == 5_000
    assert stored.num_rows == 5_000  # 0 lost, 0 duplicated
    assert table_checksum(stored) == checksum
    assert len(set(stored["ts"].to_pylist())) == 5_000
    # the open candle (it holds NOW) was served but is not stored
    assert pa.compute.max(stored["ts"]).as_py().timestamp() * 1000 == open_minute - MINUTE_MS
    assert stats.open_candles_dropped >= 1
    # every kind of fault happened and was survived
    assert stats.retries >= 5
    kinds = " ".join(stats.errors)
    assert (
        "DDoSProtection" in kinds or "RateLimitExceeded" in kinds
    )  # binance maps 429 to DDoSProtection
    for name in ("ExchangeNotAvailable", "RequestTimeout", "MalformedResponse"):
        assert name in kinds, kinds
    assert stats.duplicates_dropped > 0
    assert server.exchange.requests["klines"] == stats.requests - 1  # minus exchangeInfo


def test_gap_is_preserved_not_filled(loopback) -> None:
    open_minute = NOW_MS - NOW_MS % MINUTE_MS
    since = open_minute - 3_000 * MINUTE_MS
    hole = (since + 1_000 * MINUTE_MS, since + 2_200 * MINUTE_MS)  # longer than one page
    server = loopback(
        gaps={"BTC/USDT": [hole]}, faults=FaultPlan(pattern=(Fault.SHUFFLED, Fault.DUPLICATES))
    )
    source = ccxt_source(server, page_limit=500)
    table = pa.concat_tables(list(source.iter_candles("BTC/USDT", "1m", since, open_minute)))
    ts = table["ts"].cast(pa.int64()).to_numpy()
    assert table.num_rows == 3_000 - 1_200
    assert not ((ts >= hole[0]) & (ts < hole[1])).any()
    assert np.all(np.diff(ts) > 0)
    assert table_checksum(table) == _server_truth(server, since, open_minute)[1]


def test_auth_error_fails_fast_with_a_clear_message(loopback) -> None:
    server = loopback(faults=FaultPlan(pattern=(Fault.AUTH,), endpoints=("exchangeInfo", "klines")))
    source = ccxt_source(server)
    with pytest.raises(SourceError, match=r"binance load_markets: authentication failed.*API key"):
        list(source.iter_candles("BTC/USDT", "1m", NOW_MS - 60 * MINUTE_MS, None))
    assert sum(server.exchange.requests.values()) == 1  # no retries


def test_unknown_symbol_fails_fast_naming_exchange_and_symbol(loopback) -> None:
    server = loopback()
    source = ccxt_source(server)
    with pytest.raises(SourceError, match=r"binance has no market 'DOGE/USDT'"):
        list(source.iter_candles("DOGE/USDT", "1m", NOW_MS - 60 * MINUTE_MS, None))


def test_retries_are_bounded_and_honour_retry_after(loopback) -> None:
    server = loopback(faults=FaultPlan(pattern=(Fault.RATE_LIMIT,), retry_after_s=0.25))
    slept: list[float] = []
    source = ccxt_source(server, sleep=slept.append)
    with pytest.raises(
        SourceError, match=r"gave up after 5 attempts.*(DDoSProtection|RateLimitExceeded).*429"
    ):
        list(source.iter_candles("BTC/USDT", "1m", NOW_MS - 60 * MINUTE_MS, None))
    assert server.exchange.requests["klines"] == 5
    assert len(slept) == 4 and min(slept) >= 0.25


def test_order_book_and_trades_through_ccxt(loopback) -> None:
    server = loopback()
    source = ccxt_source(server)
    book = source.fetch_order_book("BTC/USDT", depth=10).to_pylist()[0]
    assert len(book["bid_prices"]) == 10 and len(book["ask_prices"]) == 10
    assert max(book["bid_prices"]) < min(book["ask_prices"])
    trades = source.fetch_trades("BTC/USDT", NOW_MS - 120 * MINUTE_MS, NOW_MS)
    expected = server.exchange.simulated.trade_arrays("BTC/USDT", NOW_MS - 120 * MINUTE_MS, NOW_MS)
    assert trades.num_rows == expected["ts"].size > 1000  # paged past the 1000-trade limit
    assert trades["trade_id"].to_pylist() == [str(i) for i in expected["id"]]
    assert set(trades["side"].to_pylist()) == {"buy", "sell"}


def test_order_endpoints_for_the_broker(loopback) -> None:
    import ccxt

    from pipelines.sources.ccxt_source import BINANCE_SPOT_OPTIONS, rewrite_api_urls

    server = loopback(api_key="key-1")

    def client(key: str) -> ccxt.binance:
        ex = ccxt.binance({"apiKey": key, "secret": "s", "options": dict(BINANCE_SPOT_OPTIONS)})
        ex.urls["api"] = rewrite_api_urls(ex.urls["api"], server.url)
        ex.rateLimit = 1
        return ex

    ex = client("key-1")
    ex.load_markets()
    market = ex.create_order("BTC/USDT", "market", "buy", 0.01)
    assert market["status"] == "closed" and market["filled"] == 0.01
    assert market["average"] == pytest.approx(server.exchange.last_price("BTC/USDT"))
    limit = ex.create_order("BTC/USDT", "limit", "sell", 0.01, 1e9)
    assert limit["status"] == "open"
    assert [o["id"] for o in ex.fetch_open_orders("BTC/USDT")] == [limit["id"]]
    assert ex.cancel_order(limit["id"], "BTC/USDT")["status"] == "canceled"
    assert ex.fetch_balance()["total"]["BTC"] == pytest.approx(0.01)
    intruder = client("wrong-key")
    intruder.markets, intruder.markets_by_id = ex.markets, ex.markets_by_id
    with pytest.raises(ccxt.AuthenticationError):
        intruder.fetch_balance()


def test_other_exchange_errors_fail_fast_naming_the_call(loopback) -> None:
    from functools import partial

    server = loopback()
    source = ccxt_source(server)
    source.load_markets()
    source.exchange.timeframes = {**source.exchange.timeframes, "7m": "7m"}  # the server rejects it
    call = partial(source.exchange.fetch_ohlcv, "BTC/USDT", "7m")
    with pytest.raises(SourceError, match=r"binance fetch_ohlcv BTC/USDT: BadRequest"):
        source._call("fetch_ohlcv", "BTC/USDT", call, None)
    assert server.exchange.requests["klines"] == 1  # not retried


def test_delisted_symbol_bad_symbol_from_the_server_fails_fast(loopback) -> None:
    server = loopback(symbols=("BTC/USDT", "ETH/USDT"))
    source = ccxt_source(server)
    stats = FetchStats()
    source.load_markets(stats)
    # delisted after load_markets: the server answers {"code": -1121, "msg": "Invalid symbol."},
    # which ccxt.binance raises as BadSymbol
    del server.exchange.by_id["ETHUSDT"]
    with pytest.raises(SourceError, match=r"^binance fetch_ohlcv ETH/USDT: BadSymbol: .*-1121"):
        list(source.iter_candles("ETH/USDT", "1m", NOW_MS - 60 * MINUTE_MS, None, stats=stats))
    assert server.exchange.requests["klines"] == 1  # not retried
    assert (stats.requests, stats.retries) == (2, 0)  # exchangeInfo + one klines call


def test_not_supported_by_the_client_fails_fast(loopback) -> None:
    from pipelines.sources import CcxtSource
    from tests.support.loopback import FAST_RETRY

    server = loopback()
    # a ccxt option naming a trades endpoint ccxt.binance does not have: the real client
    # raises NotSupported before sending anything
    source = CcxtSource(
        "binance",
        api_base=server.url,
        config={"rateLimit": 1, "options": {"fetchTradesMethod": "publicGetNoSuchTrades"}},
        retry=FAST_RETRY,
        clock=server.exchange.clock,
        seed=1,
    )
    stats = FetchStats()
    with pytest.raises(SourceError, match=r"^binance fetch_trades BTC/USDT: NotSupported: "):
        source.fetch_trades("BTC/USDT", NOW_MS - 10 * MINUTE_MS, NOW_MS, stats=stats)
    assert (stats.requests, stats.retries) == (2, 0)  # load_markets + one fetch_trades attempt
    assert server.exchange.requests["aggTrades"] == server.exchange.requests["trades"] == 0


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (ccxt.BadSymbol('binance {"code":-1121,"msg":"Invalid symbol."}'), "BadSymbol: "),
        (ccxt.NotSupported("binance fetchOHLCV() does not support it"), "NotSupported: "),
        # ccxt derives these two from AuthenticationError: the message points at the key
        (
            ccxt.PermissionDenied('binance {"code":-1002,"msg":"You are not authorized."}'),
            r"authentication failed \(PermissionDenied\); check the API key",
        ),
        (
            ccxt.AccountSuspended("binance account suspended"),
            r"authentication failed \(AccountSuspended\)",
        ),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else "",
)
def test_fail_fast_errors_stop_after_one_call_naming_exchange_and_symbol(
    loopback, error: Exception, says: str
) -> None:
    # the loopback server answers no code ccxt maps to these, so the wrapper is driven directly
    source = ccxt_source(loopback())
    calls: list[int] = []
    slept: list[float] = []
    source.sleep = slept.append

    def call() -> None:
        calls.append(1)
        raise error

    stats = FetchStats()
    with pytest.raises(SourceError, match=rf"^binance fetch_ohlcv BTC/USDT: {says}") as raised:
        source._call("fetch_ohlcv", "BTC/USDT", call, stats)
    assert raised.value.__cause__ is error
    assert len(calls) == 1 and slept == []
    assert (stats.requests, stats.retries) == (1, 0)


def test_a_timeout_after_a_429_does_not_reuse_its_retry_after(loopback) -> None:
    server = loopback(
        faults=FaultPlan(
            pattern=(Fault.RATE_LIMIT, Fault.SLOW, None),
            retry_after_s=0.25,
            slow_s=1.5,
            repeat=False,
        )
    )
    source = ccxt_source(server, timeout_ms=700, sleep=lambda _s: None)
    stats = FetchStats()
    list(source.iter_candles("BTC/USDT", "1m", NOW_MS - 60 * MINUTE_MS, None, stats=stats))

    def delay(kind: str) -> float:
        entry = next(e for e in stats.errors if e.startswith(kind))
        return float(entry.rsplit("retry in ", 1)[1].removesuffix(" s)"))

    assert delay("DDoSProtection") >= 0.25  # the 429's Retry-After is honoured
    # the timed-out request has no headers; its backoff is the policy's (<= 20 ms), not 0.25 s
    assert delay("RequestTimeout") < 0.25
