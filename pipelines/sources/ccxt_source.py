"""Any ccxt exchange as a source: paging, retries, the open candle, clear failures.

* Pagination: ``fetch_ohlcv(since=cursor, limit=page_limit, params={'until': ...})`` from
  ``since`` until ``until`` (or now); the cursor moves to the last returned open time + one
  timeframe, so exchange-side gaps are skipped, not filled. Each page is de-duplicated and
  sorted (exchanges and proxies do return both); the number of pages is bounded.
* The still-open candle (open time + timeframe > now) is never returned.
* Retries: ``NetworkError`` and its subclasses (``RateLimitExceeded``, ``DDoSProtection``,
  ``ExchangeNotAvailable``, ``RequestTimeout``) and malformed bodies (truncated JSON) are
  retried with exponential backoff and full jitter, honouring the ``Retry-After`` header,
  at most ``RetryPolicy.max_attempts`` times.
* ``AuthenticationError``, ``PermissionDenied``, ``AccountSuspended``, ``BadSymbol`` and
  ``NotSupported`` fail at once with a :class:`SourceError` naming the exchange and symbol.
* ``api_base`` points every REST host of the exchange (``urls['api']``) at another base URL
  (a testnet, a proxy, the loopback server), keeping each endpoint's path.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlparse

import ccxt
import numpy as np
import pyarrow as pa

from pipelines.redaction import CREDENTIAL_KEYS, register_secrets
from pipelines.resample import timeframe_ms
from pipelines.sources.base import (
    CANDLE_SCHEMA,
    ORDER_BOOK_SCHEMA,
    TRADE_SCHEMA,
    TS,
    FetchStats,
    RetryPolicy,
    SourceError,
    candles_from_rows,
    wall_clock_ms,
)

T = TypeVar("T")

# Options for ccxt.binance so that it only calls the public spot endpoints a collector needs:
# load_markets -> /api/v3/exchangeInfo only (no futures/options exchangeInfo, no sapi margin
# pairs, no sapi capital/config/getall for currencies). --ccxt-config can override them.
BINANCE_SPOT_OPTIONS: dict[str, Any] = {
    "fetchMarkets": {"types": ["spot"]},
    "fetchCurrencies": False,
    "fetchMargins": False,
}

FAIL_FAST = (
    ccxt.AuthenticationError,
    ccxt.PermissionDenied,
    ccxt.AccountSuspended,
    ccxt.BadSymbol,
    ccxt.NotSupported,
)


class MalformedResponse(ccxt.BadResponse):
    """The exchange answered 200 with a body that is not the JSON the call expects."""


def rewrite_api_urls(urls: Any, api_base: str) -> Any:
    """``urls['api']`` with every URL's scheme and host replaced by ``api_base`` (paths kept)."""
    base = api_base.rstrip("/")
    if isinstance(urls, dict):
        return {k: rewrite_api_urls(v, api_base) for k, v in urls.items()}
    if isinstance(urls, str) and "://" in urls:
        return base + urlparse(urls).path
    return urls


def _retry_after_s(exchange: ccxt.Exchange) -> float | None:
    headers = exchange.last_response_headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


class CcxtSource:
    """Market data from a ccxt exchange (spot, public endpoints)."""

    def __init__(
        self,
        exchange_id: str,
        *,
        config: dict[str, Any] | None = None,
        api_base: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        retry: RetryPolicy | None = None,
        page_limit: int = 1000,
        clock: Callable[[], int] = wall_clock_ms,
        sleep: Callable[[float], None] = time.sleep,
        name: str | None = None,
        seed: int | None = None,
    ) -> None:
        if not hasattr(ccxt, exchange_id) or not isinstance(getattr(ccxt, exchange_id), type):
            raise SourceError(f"unknown ccxt exchange {exchange_id!r}")
        user = dict(config or {})
        options = dict(BINANCE_SPOT_OPTIONS) if exchange_id in ("binance", "binanceus") else {}
        options.update(user.pop("options", {}) or {})
        merged: dict[str, Any] = {
            "enableRateLimit": True,
            "timeout": 10_000,
            **user,
            "options": options,
        }
        # keep the last body so a 200 with a cut or non-JSON body is caught and retried
        merged["enableLastJsonResponse"] = True
        merged["enableLastHttpResponse"] = True
        if api_key:
            merged["apiKey"] = api_key
        if api_secret:
            merged["secret"] = api_secret
        # ccxt logs request headers at DEBUG: keep any credential out of this process's logs
        register_secrets(
            *(merged.get(k) for k in CREDENTIAL_KEYS if isinstance(merged.get(k), str))
        )
        self.exchange: ccxt.Exchange = getattr(ccxt, exchange_id)(merged)
        if api_base:
            self.exchange.urls["api"] = rewrite_api_urls(self.exchange.urls["api"], api_base)
        self.exchange_id = exchange_id
        self.name = name or exchange_id
        self.retry = retry or RetryPolicy()
        self.page_limit = page_limit
        self.clock = clock
        self.sleep = sleep
        self._rng = random.Random(seed)
        self._markets_loaded = False

    # ------------------------------------------------------------------ calls with retries
    def _call(
        self, what: str, symbol: str | None, fn: Callable[[], T], stats: FetchStats | None
    ) -> T:
        where = f"{self.exchange_id} {what}" + (f" {symbol}" if symbol else "")
        last: Exception | None = None
        for attempt in range(1, self.retry.max_attempts + 1):
            if stats is not None:
                stats.requests += 1
            self.exchange.last_json_response = None
            self.exchange.last_http_response = None
            # ccxt leaves the previous response's headers in place when a request times out,
            # so a Retry-After from an earlier 429 would otherwise delay the next retry too
            self.exchange.last_response_headers = None
            try:
                result = fn()
                if self.exchange.last_json_response is None and self.exchange.last_http_response:
                    raise MalformedResponse(f"{where}: response is not valid JSON")
                return result
            except ccxt.AuthenticationError as exc:
                raise SourceError(
                    f"{where}: authentication failed ({type(exc).__name__}); check the API key and "
                    f"secret (TRADELOOP_EXCHANGE_API_KEY / _SECRET) and their permissions"
                ) from exc
            except FAIL_FAST as exc:
                raise SourceError(f"{where}: {type(exc).__name__}: {exc}") from exc
            except ccxt.OperationFailed as exc:  # NetworkError and its kin, BadResponse
                last = exc
                if attempt == self.retry.max_attempts:
                    break
                delay = self.retry.delay_s(attempt, _retry_after_s(self.exchange), self._rng)
                if stats is not None:
                    stats.retries += 1
                    stats.errors.append(
                        f"{type(exc).__name__} (attempt {attempt}, retry in {delay:.2f} s)"
                    )
                self.sleep(delay)
            except ccxt.BaseError as exc:  # any other exchange error: retrying will not help
                raise SourceError(f"{where}: {type(exc).__name__}: {exc}") from exc
            except (TypeError, ValueError, KeyError, IndexError) as exc:
                # ccxt parsed a body that was not what the endpoint returns (e.g. cut JSON)
                last = MalformedResponse(f"{where}: unparseable response: {exc}")
                if attempt == self.retry.max_attempts:
                    break
                if stats is not None:
                    stats.retries += 1
                self.sleep(self.retry.delay_s(attempt, None, self._rng))
        raise SourceError(
            f"{where}: gave up after {self.retry.max_attempts} attempts; last error "
            f"{type(last).__name__}: {last}"
        ) from last

    def load_markets(self, stats: FetchStats | None = None) -> None:
        if not self._markets_loaded:
            self._call("load_markets", None, self.exchange.load_markets, stats)
            self._markets_loaded = True

    def _check_symbol(self, symbol: str) -> None:
        if symbol not in self.exchange.markets:
            raise SourceError(f"{self.exchange_id} has no market {symbol!r} (BadSymbol)")

    # ------------------------------------------------------------------ candles
    def iter_candles(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int,
        until_ms: int | None,
        *,
        stats: FetchStats | None = None,
    ) -> Iterator[pa.Table]:
        stats = stats if stats is not None else FetchStats()
        step = timeframe_ms(timeframe)
        if not self.exchange.has.get("fetchOHLCV"):
            raise SourceError(f"{self.exchange_id} has no fetchOHLCV (NotSupported) for {symbol}")
        if self.exchange.timeframes and timeframe not in self.exchange.timeframes:
            raise SourceError(
                f"{self.exchange_id} does not offer timeframe {timeframe!r} for {symbol}"
            )
        self.load_markets(stats)
        self._check_symbol(symbol)
        cursor = since_ms + (-since_ms) % step
        until = until_ms
        # every page moves the cursor by at least one candle (exchanges may cap pages below
        # page_limit), so this bounds the loop even for an exchange that misbehaves
        max_pages = max(0, (until if until is not None else self.clock()) - cursor) // step + 10
        for _ in range(max_pages):
            now = self.clock()
            end = now if until is None else min(until, now)
            if cursor >= end:
                return
            params = {"until": end - 1}
            raw = self._call(
                "fetch_ohlcv",
                symbol,
                partial(
                    self.exchange.fetch_ohlcv,
                    symbol,
                    timeframe,
                    since=cursor,
                    limit=self.page_limit,
                    params=params,
                ),
                stats,
            )
            stats.pages += 1
            if not raw:
                return
            rows = np.asarray([r[:6] for r in raw], dtype=np.float64)
            if np.isnan(rows[:, 0]).any():
                raise SourceError(
                    f"{self.exchange_id} fetch_ohlcv {symbol}: a candle without a timestamp"
                )
            ts = rows[:, 0].astype(np.int64)
            if np.any(np.diff(ts) < 0):
                stats.out_of_order_pages += 1
            uniq_ts, first = np.unique(ts, return_index=True)  # sorted, one per open time
            stats.duplicates_dropped += ts.size - uniq_ts.size
            rows = rows[first]
            ts = uniq_ts
            keep = (ts >= cursor) & (ts < end)
            closed = ts + step <= now
            stats.open_candles_dropped += int((keep & ~closed).sum())
            keep &= closed
            if not keep.any():
                return
            page = candles_from_rows(self.name, symbol, timeframe, rows[keep])
            stats.rows += page.num_rows
            yield page
            next_cursor = int(ts[keep][-1]) + step
            if next_cursor <= cursor:
                return
            cursor = next_cursor
        raise SourceError(
            f"{self.exchange_id} fetch_ohlcv {symbol} {timeframe}: more than {max_pages} pages; "
            f"the exchange is not honouring since/limit"
        )

    # ------------------------------------------------------------------ order book, trades
    def fetch_order_book(self, symbol: str, *, depth: int = 20) -> pa.Table:
        self.load_markets()
        self._check_symbol(symbol)
        book = self._call(
            "fetch_order_book",
            symbol,
            lambda: self.exchange.fetch_order_book(symbol, limit=depth),
            None,
        )
        ts = book.get("timestamp") or self.clock()
        bids, asks = book["bids"][:depth], book["asks"][:depth]
        return pa.table(
            {
                "exchange": [self.name],
                "symbol": [symbol],
                "ts": pa.array([ts], TS),
                "bid_prices": [[float(b[0]) for b in bids]],
                "bid_sizes": [[float(b[1]) for b in bids]],
                "ask_prices": [[float(a[0]) for a in asks]],
                "ask_sizes": [[float(a[1]) for a in asks]],
            },
            schema=ORDER_BOOK_SCHEMA,
        )

    def fetch_trades(
        self, symbol: str, since_ms: int, until_ms: int | None, *, stats: FetchStats | None = None
    ) -> pa.Table:
        """Public trades in [since_ms, until_ms), paged by time; de-duplicated by trade id."""
        stats = stats if stats is not None else FetchStats()
        self.load_markets(stats)
        self._check_symbol(symbol)
        end = self.clock() if until_ms is None else min(until_ms, self.clock())
        seen: dict[str, dict[str, Any]] = {}
        cursor = since_ms
        window_ms = 3_600_000  # ccxt.binance asks for [since, since + 1 h] per call
        for _ in range((max(0, end - since_ms) // 60_000) + 10):
            if cursor >= end:
                break
            page = self._call(
                "fetch_trades",
                symbol,
                partial(
                    self.exchange.fetch_trades,
                    symbol,
                    since=cursor,
                    limit=1000,
                    params={"until": min(end, cursor + window_ms) - 1},
                ),
                stats,
            )
            stats.pages += 1
            page = [
                t for t in page if t.get("timestamp") is not None and cursor <= t["timestamp"] < end
            ]
            for t in page:
                seen.setdefault(str(t["id"]), t)
            cursor = max(t["timestamp"] for t in page) + 1 if page else min(end, cursor + window_ms)
        trades = sorted(seen.values(), key=lambda t: (t["timestamp"], str(t["id"])))
        stats.rows += len(trades)
        return pa.table(
            {
                "exchange": [self.name] * len(trades),
                "symbol": [symbol] * len(trades),
                "trade_id": [str(t["id"]) for t in trades],
                "ts": pa.array([t["timestamp"] for t in trades], TS),
                "side": [t.get("side") for t in trades],
                "price": [float(t["price"]) for t in trades],
                "amount": [float(t["amount"]) for t in trades],
                "cost": [None if t.get("cost") is None else float(t["cost"]) for t in trades],
            },
            schema=TRADE_SCHEMA,
        )

    def close(self) -> None:
        session = getattr(self.exchange, "session", None)
        if session is not None:
            session.close()


__all__ = [
    "BINANCE_SPOT_OPTIONS",
    "CANDLE_SCHEMA",
    "CcxtSource",
    "MalformedResponse",
    "RetryPolicy",
]
