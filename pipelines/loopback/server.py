"""A loopback exchange: the Binance spot REST API shape served from local data, with faults.

It serves what the real ``ccxt.binance`` client calls when its ``urls['api']`` entries point
here: ``/api/v3/exchangeInfo`` (load_markets), ``/api/v3/klines`` (fetch_ohlcv),
``/api/v3/depth`` (fetch_order_book), ``/api/v3/aggTrades`` and ``/api/v3/trades``
(fetch_trades), ``/api/v3/time``, ``/api/v3/ping`` and, for the paper/live broker, the order
endpoints ``POST/GET/DELETE /api/v3/order``, ``GET /api/v3/openOrders`` and
``GET /api/v3/account`` (a market order fills at once at the last price; a limit order rests).

For perpetual contracts (``futures``, ccxt symbols like ``BTC/USDT:USDT``, whose underlying
1m candles are those of ``BTC/USDT``) it serves Binance's USD-M futures shape, what the real
``ccxt.binanceusdm`` client calls: ``/fapi/v1/exchangeInfo`` (load_markets),
``/fapi/v1/markPriceKlines`` (fetch_mark_ohlcv), ``/fapi/v1/fundingRate``
(fetch_funding_rate_history) and ``/futures/data/openInterestHist``
(fetch_open_interest_history), with values from :mod:`pipelines.simulated_futures`.

Data comes from a :class:`~pipelines.simulated_exchange.SimulatedExchange` or from fixed 1m
candle tables (a data file). The server clock (``clock``, epoch ms) decides which candles
exist: closed candles are served as they are, the candle holding "now" is served as a
partial, still-open candle (as a real exchange does), later ones not at all.

Faults (:class:`FaultPlan`) are deterministic: the i-th request to a faulted endpoint gets
``pattern[i % len(pattern)]``. Every request loop in here is bounded and the server runs in
one daemon thread bound to 127.0.0.1 on an ephemeral port; ``stop()`` shuts it down.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pyarrow as pa

from pipelines.resample import timeframe_ms
from pipelines.simulated_exchange import MINUTE_MS, SimulatedExchange
from pipelines.simulated_futures import (
    FUNDING_INTERVAL_MS,
    funding_rate_at,
    funding_times,
    last_close_before,
    mark_from_trade,
    open_interest_at,
    open_interest_times,
)
from pipelines.sources.base import wall_clock_ms

Clock = Callable[[], int]


class Fault(StrEnum):
    RATE_LIMIT = "429"  # 429 with Retry-After
    SERVER_ERROR = "500"
    UNAVAILABLE = "503"
    SLOW = "slow"  # sleep past the client timeout before answering
    TRUNCATED = "truncated"  # a 200 whose JSON body is cut in half
    DUPLICATES = "duplicates"  # klines: every candle twice
    SHUFFLED = "shuffled"  # klines: candles out of order
    AUTH = "auth"  # 401 {"code": -2015}: invalid API key
    APPLIED_SLOW = "applied_slow"  # handle the request (e.g. place the order), answer too late
    # handle the request (the order is placed and fills), then answer Binance's "execution
    # status unknown" error ``FaultPlan.error_code`` (-1000, -1001 or -1006) instead of the order
    APPLIED_ERROR = "applied_error"
    # the same error, but the request did NOT take effect (nothing placed)
    UNAPPLIED_ERROR = "unapplied_error"


# Binance's errors after which "the execution status is UNKNOWN and could have been a success"
UNKNOWN_STATUS_ERRORS = {
    -1000: "An unknown error occurred while processing the request.",
    -1001: "Internal error; unable to process your request. Please try again.",
    -1006: "An unexpected response was received from the message bus. Execution status unknown.",
}


@dataclass(frozen=True)
class FaultPlan:
    pattern: tuple[Fault | None, ...] = ()
    endpoints: tuple[str, ...] = ("klines",)
    retry_after_s: float = 0.01
    slow_s: float = 1.0
    repeat: bool = True
    error_code: int = -1001  # for Fault.APPLIED_ERROR / UNAPPLIED_ERROR

    def fault_for(self, endpoint: str, index: int) -> Fault | None:
        if endpoint not in self.endpoints or not self.pattern:
            return None
        if not self.repeat and index >= len(self.pattern):
            return None
        return self.pattern[index % len(self.pattern)]


@dataclass
class _Series:
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


def _market_id(symbol: str) -> str:
    return symbol.replace("/", "").upper()


@dataclass
class LoopbackExchange:
    """The exchange's state: markets, data, clock, faults, request log, paper orders."""

    symbols: Sequence[str]
    simulated: SimulatedExchange | None = None
    tables: dict[str, pa.Table] | None = None  # symbol -> 1m candles (warehouse schema)
    clock: Clock = wall_clock_ms
    faults: FaultPlan = field(default_factory=FaultPlan)
    gaps: dict[str, list[tuple[int, int]]] = field(
        default_factory=dict
    )  # symbol -> [start, end) ms
    api_key: str | None = None  # when set, signed endpoints require this X-MBX-APIKEY
    requests: Counter[str] = field(default_factory=Counter)
    candles_served: int = 0
    log: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _fault_index: Counter[str] = field(default_factory=Counter)
    _orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    _balances: dict[str, float] = field(default_factory=lambda: {"USDT": 100_000.0})
    futures: Sequence[str] = ()  # perpetual contracts, e.g. BTC/USDT:USDT (USD-M endpoints)

    def __post_init__(self) -> None:
        if self.simulated is None and self.tables is None:
            self.simulated = SimulatedExchange()
        self.by_id = {_market_id(s): s for s in self.symbols}
        self.futures_by_id = {_market_id(s.split(":")[0]): s for s in self.futures}

    # ------------------------------------------------------------- data access
    def series_1m(self, symbol: str, since_ms: int, until_ms: int, mark: bool = False) -> _Series:
        """1m candles with open time in [since_ms, until_ms), gaps removed (no clock applied).
        ``mark``: the mark-price candles of the contract ``symbol`` (no volume)."""
        if mark:
            s = self.series_1m(symbol.split(":")[0], since_ms, until_ms)
            o, h, lo, c = mark_from_trade(s.ts, s.open, s.high, s.low, s.close)
            return _Series(s.ts, o, h, lo, c, np.zeros(s.ts.size))
        if self.tables is not None:
            table = self.tables[symbol]
            ts = table["ts"].cast(pa.int64()).to_numpy()
            cols = {k: table[k].to_numpy() for k in ("open", "high", "low", "close", "volume")}
        else:
            assert self.simulated is not None
            a = self.simulated.candle_arrays(symbol, since_ms, until_ms)
            ts = a["ts"]
            cols = {k: a[k] for k in ("open", "high", "low", "close", "volume")}
        keep = (ts >= since_ms) & (ts < until_ms)
        for start, end in self.gaps.get(symbol, []):
            keep &= ~((ts >= start) & (ts < end))
        return _Series(
            ts[keep], *(cols[k][keep] for k in ("open", "high", "low", "close", "volume"))
        )

    def closed_candles(self, symbol: str, since_ms: int, until_ms: int) -> _Series:
        """The closed 1m candles the exchange has in [since_ms, until_ms) at the current clock."""
        now = self.clock()
        return self.series_1m(symbol, since_ms, min(until_ms, now - now % MINUTE_MS))

    def klines(
        self,
        symbol: str,
        interval: str,
        start: int | None,
        end: int | None,
        limit: int,
        mark: bool = False,
    ) -> list[list[Any]]:
        step = timeframe_ms(interval)
        now = self.clock()
        open_bucket = now - now % step
        lo = start if start is not None else open_bucket - step * limit
        if lo % step:  # like Binance: the first candle opens at or after startTime
            lo += step - lo % step
        if lo > open_bucket:
            return []
        hi = min(open_bucket + step, (end + 1) if end is not None else open_bucket + step)
        hi = min(hi, now - now % MINUTE_MS + MINUTE_MS)  # no minute after the current one
        # read 1m data in bounded chunks until `limit` buckets are found (gaps are skipped)
        parts: list[_Series] = []
        cursor, found = lo, 0
        while cursor < hi and found <= limit:
            chunk_end = min(hi, cursor + step * (limit + 1))
            part = self.series_1m(symbol, cursor, chunk_end, mark)
            parts.append(part)
            found += int(np.unique(part.ts - part.ts % step).size)
            cursor = chunk_end
        s = _Series(
            *(
                np.concatenate([getattr(p, k) for p in parts])
                for k in ("ts", "open", "high", "low", "close", "volume")
            )
        )
        # the bucket holding "now" only has the minutes up to now, the current one partial
        if s.ts.size and s.ts[-1] + MINUTE_MS > now:
            frac = (now - s.ts[-1]) / MINUTE_MS
            s.close[-1] = s.open[-1] + frac * (s.close[-1] - s.open[-1])
            s.high[-1] = max(s.open[-1], s.close[-1]) + frac * (
                s.high[-1] - max(s.open[-1], s.close[-1])
            )
            s.low[-1] = min(s.open[-1], s.close[-1]) - frac * (
                min(s.open[-1], s.close[-1]) - s.low[-1]
            )
            s.volume[-1] = s.volume[-1] * frac
        if s.ts.size == 0:
            return []
        bucket = s.ts - s.ts % step
        starts = np.flatnonzero(np.diff(bucket, prepend=bucket[0] - 1))
        ends = np.append(starts[1:], bucket.size) - 1
        rows = []
        opens, closes = s.open[starts], s.close[ends]
        highs, lows = np.maximum.reduceat(s.high, starts), np.minimum.reduceat(s.low, starts)
        vols = np.add.reduceat(s.volume, starts)
        for i in range(min(starts.size, limit)):
            b = int(bucket[starts[i]])
            rows.append(
                [
                    b,
                    repr(float(opens[i])),
                    repr(float(highs[i])),
                    repr(float(lows[i])),
                    repr(float(closes[i])),
                    repr(float(vols[i])),
                    b + step - 1,
                    repr(float(vols[i] * closes[i])),
                    int(ends[i] - starts[i] + 1),
                    repr(float(vols[i] / 2)),
                    repr(float(vols[i] * closes[i] / 2)),
                    "0",
                ]
            )
        return rows

    def last_price(self, symbol: str) -> float:
        now = self.clock()
        s = self.series_1m(symbol, now - now % MINUTE_MS - 60 * MINUTE_MS, now - now % MINUTE_MS)
        if s.ts.size == 0:
            raise LookupError(f"no price for {symbol} before {now}")
        return float(s.close[-1])

    def order_book(self, symbol: str, limit: int) -> dict[str, Any]:
        now = self.clock()
        if self.simulated is not None:
            book = self.simulated.order_book(symbol, now, depth=limit)
        else:
            mid = self.last_price(symbol)
            steps = np.arange(limit) * mid * 1e-4
            book = {
                "bid_prices": [float(x) for x in mid * (1 - 1e-4) - steps],
                "ask_prices": [float(x) for x in mid * (1 + 1e-4) + steps],
                "bid_sizes": [1.0] * limit,
                "ask_sizes": [1.0] * limit,
            }
        return {
            "lastUpdateId": now,
            "bids": [
                [repr(p), repr(q)]
                for p, q in zip(book["bid_prices"], book["bid_sizes"], strict=True)
            ],
            "asks": [
                [repr(p), repr(q)]
                for p, q in zip(book["ask_prices"], book["ask_sizes"], strict=True)
            ],
        }

    def trades(
        self, symbol: str, start: int | None, end: int | None, limit: int
    ) -> list[dict[str, Any]]:
        now = self.clock()
        if self.simulated is None:
            return []
        hi = min(now, (end + 1) if end is not None else now)
        lo = start if start is not None else hi - MINUTE_MS
        t = self.simulated.trade_arrays(symbol, lo, hi)
        n = min(limit, t["ts"].size)
        # without startTime: the most recent trades
        sl = slice(t["ts"].size - n, t["ts"].size) if start is None else slice(0, n)
        return [
            {
                "a": int(i),
                "p": repr(float(p)),
                "q": repr(float(q)),
                "f": int(i),
                "l": int(i),
                "T": int(ts),
                "m": not bool(b),  # buyer is maker = the taker sold
                "M": True,
            }
            for i, p, q, ts, b in zip(
                t["id"][sl],
                t["price"][sl],
                t["amount"][sl],
                t["ts"][sl],
                t["is_buy"][sl],
                strict=True,
            )
        ]

    # ------------------------------------------------------------- perpetual contracts
    def funding_history(
        self, contract: str, start: int | None, end: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Funding rates stamped in [start, end] up to now: the first ``limit`` from ``start``,
        or without it the most recent ``limit``."""
        hi = min(self.clock(), end if end is not None else self.clock()) + 1
        lo = start if start is not None else hi - (limit + 1) * FUNDING_INTERVAL_MS
        stamps = funding_times(lo, hi)
        stamps = stamps[:limit] if start is not None else stamps[-limit:]
        market_id = _market_id(contract.split(":")[0])
        return [
            {"symbol": market_id, "fundingTime": int(t), "fundingRate": f"{r:.8f}"}
            for t, r in zip(stamps, funding_rate_at(stamps), strict=True)
        ]

    def open_interest_hist(
        self, contract: str, period: str, start: int | None, end: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Open interest at each ``period`` boundary in [start, end] up to now (first ``limit``
        from ``start``, or the most recent ``limit``)."""
        step = timeframe_ms(period)
        hi = min(self.clock(), end if end is not None else self.clock()) + 1
        lo = start if start is not None else hi - (limit + 1) * step
        times = open_interest_times(period, lo, hi)
        times = times[:limit] if start is not None else times[-limit:]
        if times.size == 0:
            return []
        s = self.series_1m(contract.split(":")[0], int(times[0]) - 60 * MINUTE_MS, int(times[-1]))
        amount = open_interest_at(times)
        value = amount * last_close_before(s.ts, s.close, times)
        market_id = _market_id(contract.split(":")[0])
        return [
            {
                "symbol": market_id,
                "sumOpenInterest": f"{a:.8f}",
                "sumOpenInterestValue": f"{v:.8f}",
                "timestamp": int(t),
            }
            for t, a, v in zip(times, amount, value, strict=True)
            if np.isfinite(v)
        ]

    def futures_exchange_info(self) -> dict[str, Any]:
        """``/fapi/v1/exchangeInfo``: one USDT-margined perpetual per contract."""
        symbols = []
        for s in self.futures:
            base, quote = s.split(":")[0].split("/")
            symbols.append(
                {
                    "symbol": _market_id(s.split(":")[0]),
                    "pair": _market_id(s.split(":")[0]),
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": 1569398400000,
                    "status": "TRADING",
                    "baseAsset": base,
                    "quoteAsset": quote,
                    "marginAsset": quote,
                    "pricePrecision": 6,
                    "quantityPrecision": 3,
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "triggerProtect": "0.0500",
                    "orderTypes": ["LIMIT", "MARKET"],
                    "timeInForce": ["GTC"],
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": "0.000001",
                            "maxPrice": "10000000",
                            "tickSize": "0.000001",
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": "0.001",
                            "maxQty": "10000000",
                            "stepSize": "0.001",
                        },
                    ],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": self.clock(),
            "rateLimits": [],
            "exchangeFilters": [],
            "assets": [],
            "symbols": symbols,
        }

    def exchange_info(self) -> dict[str, Any]:
        symbols = []
        for s in self.symbols:
            base, quote = s.split("/")
            symbols.append(
                {
                    "symbol": _market_id(s),
                    "status": "TRADING",
                    "baseAsset": base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "orderTypes": ["LIMIT", "MARKET"],
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "permissions": ["SPOT"],
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": "0.00000001",
                            "maxPrice": "10000000",
                            "tickSize": "0.00000001",
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": "0.00000001",
                            "maxQty": "10000000",
                            "stepSize": "0.00000001",
                        },
                        {
                            "filterType": "NOTIONAL",
                            "minNotional": "1.0",
                            "maxNotional": "100000000",
                        },
                    ],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": self.clock(),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    # ------------------------------------------------------------- paper orders (for the broker)
    def create_order(self, params: dict[str, str]) -> dict[str, Any] | None:
        """Place an order (None: refused, the balance cannot pay for a market order)."""
        symbol = self.by_id[params["symbol"]]
        base, quote = symbol.split("/")
        side, kind = params["side"].upper(), params["type"].upper()
        qty = float(params["quantity"])
        price = float(params["price"]) if "price" in params else self.last_price(symbol)
        with self._lock:
            order_id = len(self._orders) + 1
            filled = kind == "MARKET" or (
                (side == "BUY" and price >= self.last_price(symbol))
                or (side == "SELL" and price <= self.last_price(symbol))
            )
            fill_price = self.last_price(symbol) if filled else price
            if kind == "MARKET":  # like Binance: a market order the balance can't pay is refused
                short = (
                    self._balances.get(base, 0.0) < qty * (1 - 1e-12)
                    if side == "SELL"
                    else self._balances.get(quote, 0.0) < qty * fill_price
                )
                if short:
                    return None
            if filled:
                sign = 1.0 if side == "BUY" else -1.0
                self._balances[base] = self._balances.get(base, 0.0) + sign * qty
                self._balances[quote] = self._balances.get(quote, 0.0) - sign * qty * fill_price
            order = {
                "symbol": params["symbol"],
                "orderId": order_id,
                "clientOrderId": params.get("newClientOrderId", f"loopback-{order_id}"),
                "transactTime": self.clock(),
                "price": repr(price if kind == "LIMIT" else 0.0),
                "origQty": repr(qty),
                "executedQty": repr(qty if filled else 0.0),
                "cummulativeQuoteQty": repr(qty * fill_price if filled else 0.0),
                "status": "FILLED" if filled else "NEW",
                "timeInForce": params.get("timeInForce", "GTC"),
                "type": kind,
                "side": side,
                "fills": [
                    {
                        "price": repr(fill_price),
                        "qty": repr(qty),
                        "commission": "0",
                        "commissionAsset": quote,
                    }
                ]
                if filled
                else [],
            }
            self._orders[order_id] = order
        return order

    def find_order(self, params: dict[str, str]) -> dict[str, Any] | None:
        if "orderId" in params:
            return self._orders.get(int(params["orderId"]))
        cid = params.get("origClientOrderId")
        return next((o for o in self._orders.values() if o["clientOrderId"] == cid), None)

    def orders(self) -> list[dict[str, Any]]:
        """The orders this exchange has accepted (copies), in order of arrival."""
        with self._lock:
            return [dict(o) for o in self._orders.values()]

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.candles_served = 0
            self.log.clear()

    def next_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            index = self._fault_index[endpoint]
            self._fault_index[endpoint] += 1
        return self.faults.fault_for(endpoint, index)


FUTURES_ENDPOINTS = ("markPriceKlines", "fundingRate", "openInterestHist")
# list bodies that the DUPLICATES and SHUFFLED faults double or reverse
PAGED_ENDPOINTS = ("klines", *FUTURES_ENDPOINTS)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _send(
        self,
        status: int,
        body: Any,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # client timed out
            self.wfile.write(data)

    def _params(self) -> dict[str, str]:
        query = parse_qs(urlparse(self.path).query)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            query.update(parse_qs(self.rfile.read(length).decode()))
        return {k: v[-1] for k, v in query.items()}

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        ex = self.server.exchange
        path = urlparse(self.path).path
        endpoint = path.rsplit("/", 1)[-1]
        if path.startswith("/fapi/") and endpoint == "exchangeInfo":
            endpoint = "fapiExchangeInfo"  # the USD-M futures markets, not the spot ones
        params = self._params()
        with ex._lock:
            ex.requests[endpoint] += 1
            ex.log.append((endpoint, params))
        fault = ex.next_fault(endpoint)
        if fault is Fault.AUTH:
            return self._send(
                401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
            )
        if fault is Fault.RATE_LIMIT:
            return self._send(
                429,
                {
                    "code": -1003,
                    "msg": "Too many requests; current limit is 1200 request weight per 1 MINUTE.",
                },
                headers={"Retry-After": f"{ex.faults.retry_after_s:g}"},
            )
        if fault is Fault.SERVER_ERROR:
            return self._send(
                500, None, raw=b"<html><body><h1>500 Internal Server Error</h1></body></html>"
            )
        if fault is Fault.UNAVAILABLE:
            return self._send(
                503, None, raw=b"<html><body><h1>503 Service Unavailable</h1></body></html>"
            )
        if fault is Fault.SLOW:
            time.sleep(ex.faults.slow_s)
        if fault is Fault.UNAPPLIED_ERROR:
            code = ex.faults.error_code
            return self._send(500, {"code": code, "msg": UNKNOWN_STATUS_ERRORS[code]})
        try:
            status, body = self._route(method, endpoint, params)
        except KeyError as exc:
            return self._send(
                400, {"code": -1102, "msg": f"Mandatory parameter {exc} was not sent."}
            )
        except ValueError as exc:  # e.g. an unknown interval or a non-numeric startTime
            return self._send(400, {"code": -1100, "msg": f"Illegal parameter: {exc}"})
        if status == 200 and endpoint in PAGED_ENDPOINTS and isinstance(body, list):
            if fault is Fault.DUPLICATES:
                body = [row for row in body for _ in (0, 1)]
            elif fault is Fault.SHUFFLED:
                body = list(reversed(body))
        data = json.dumps(body).encode()
        if fault is Fault.APPLIED_SLOW:  # the request took effect; the answer comes too late
            time.sleep(ex.faults.slow_s)
        if fault is Fault.APPLIED_ERROR:  # the request took effect; the answer says "error"
            code = ex.faults.error_code
            return self._send(500, {"code": code, "msg": UNKNOWN_STATUS_ERRORS[code]})
        if fault is Fault.TRUNCATED:
            data = data[: max(1, len(data) // 2)]
        elif status == 200 and endpoint == "klines" and isinstance(body, list):
            with ex._lock:
                ex.candles_served += len(body)
        self._send(status, None, raw=data)

    def _route(self, method: str, endpoint: str, p: dict[str, str]) -> tuple[int, Any]:
        ex = self.server.exchange
        if endpoint == "ping":
            return 200, {}
        if endpoint == "time":
            return 200, {"serverTime": ex.clock()}
        if endpoint == "exchangeInfo":
            return 200, ex.exchange_info()
        if endpoint == "fapiExchangeInfo":
            return 200, ex.futures_exchange_info()
        if endpoint in FUTURES_ENDPOINTS:
            return self._route_futures(endpoint, p)
        if (
            endpoint in ("klines", "depth", "aggTrades", "trades", "order", "openOrders")
            and "symbol" in p
        ) and p["symbol"] not in ex.by_id:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if endpoint == "klines":
            limit = min(int(p.get("limit", 500)), 1000)
            start = int(p["startTime"]) if "startTime" in p else None
            end = int(p["endTime"]) if "endTime" in p else None
            return 200, ex.klines(ex.by_id[p["symbol"]], p["interval"], start, end, limit)
        if endpoint == "depth":
            return 200, ex.order_book(ex.by_id[p["symbol"]], min(int(p.get("limit", 100)), 5000))
        if endpoint in ("aggTrades", "trades"):
            limit = min(int(p.get("limit", 500)), 1000)
            start = int(p["startTime"]) if "startTime" in p else None
            end = int(p["endTime"]) if "endTime" in p else None
            rows = ex.trades(ex.by_id[p["symbol"]], start, end, limit)
            if endpoint == "trades":
                rows = [
                    {
                        "id": r["a"],
                        "price": r["p"],
                        "qty": r["q"],
                        "time": r["T"],
                        "isBuyerMaker": r["m"],
                        "isBestMatch": True,
                    }
                    for r in rows
                ]
            return 200, rows
        # signed endpoints
        if endpoint in ("order", "openOrders", "account"):
            if ex.api_key is not None and self.headers.get("X-MBX-APIKEY") != ex.api_key:
                return 401, {
                    "code": -2015,
                    "msg": "Invalid API-key, IP, or permissions for action.",
                }
            if endpoint == "account":
                return 200, {
                    "canTrade": True,
                    "accountType": "SPOT",
                    "balances": [
                        {"asset": a, "free": repr(v), "locked": "0"}
                        for a, v in ex._balances.items()
                    ],
                    "permissions": ["SPOT"],
                }
            if endpoint == "openOrders":
                return 200, [
                    o
                    for o in ex._orders.values()
                    if o["status"] == "NEW" and p.get("symbol", o["symbol"]) == o["symbol"]
                ]
            if method == "POST":
                # like Binance: a signed request older than its recvWindow is rejected
                if (
                    "timestamp" in p
                    and "recvWindow" in p
                    and (time.time() * 1000 > int(p["timestamp"]) + int(p["recvWindow"]))
                ):
                    return 400, {
                        "code": -1021,
                        "msg": "Timestamp for this request is outside of the recvWindow.",
                    }
                placed = ex.create_order(p)
                if placed is None:
                    return 400, {
                        "code": -2010,
                        "msg": "Account has insufficient balance for requested action.",
                    }
                return 200, placed
            order = ex.find_order(p)
            if order is None:
                return 400, {"code": -2013, "msg": "Order does not exist."}
            if method == "DELETE":
                order["status"] = "CANCELED"
            return 200, order
        return 404, {"code": -1, "msg": f"unknown endpoint {endpoint}"}

    def _route_futures(self, endpoint: str, p: dict[str, str]) -> tuple[int, Any]:
        ex = self.server.exchange
        if p.get("symbol") not in ex.futures_by_id:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        contract = ex.futures_by_id[p["symbol"]]
        start = int(p["startTime"]) if "startTime" in p else None
        end = int(p["endTime"]) if "endTime" in p else None
        if endpoint == "markPriceKlines":
            limit = min(int(p.get("limit", 500)), 1500)
            return 200, ex.klines(contract, p["interval"], start, end, limit, mark=True)
        if endpoint == "fundingRate":
            return 200, ex.funding_history(
                contract, start, end, min(int(p.get("limit", 100)), 1000)
            )
        limit = min(int(p.get("limit", 30)), 500)  # openInterestHist
        return 200, ex.open_interest_hist(contract, p["period"], start, end, limit)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    exchange: LoopbackExchange


class LoopbackServer:
    """Runs a :class:`LoopbackExchange` on 127.0.0.1 (ephemeral port) in a background thread."""

    def __init__(
        self, exchange: LoopbackExchange, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.exchange = exchange
        self._server = _Server((host, port), _Handler)
        self._server.exchange = exchange
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="loopback-exchange", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def serve(exchange: LoopbackExchange) -> Iterator[LoopbackServer]:
    server = LoopbackServer(exchange).start()
    try:
        yield server
    finally:
        server.stop()
