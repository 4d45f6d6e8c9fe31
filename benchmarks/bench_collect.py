"""Collection throughput: loopback exchange -> real ccxt.binance -> our paging -> warehouse.

Measures, in one process:
* end-to-end candles/s into the warehouse (CcxtSource pages merged with warehouse.upsert,
  and through the quality gate), one symbol, and 4 symbols fetched concurrently;
* where the time goes, per page: HTTP round trip (including the loopback server building
  the JSON), ccxt's JSON decoding, ccxt's OHLCV parsing, our code (de-duplication, open
  candle, Arrow), the warehouse write;
* baseline: the same pages fetched with plain ``requests`` + ``json.loads`` + numpy (no
  ccxt), so the ratio shows what the ccxt client costs.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import requests

from benchmarks.results import record
from pipelines.collect import MergeFn, collect_series, upsert_merge
from pipelines.loopback import LoopbackExchange, LoopbackServer
from pipelines.simulated_exchange import DEFAULT_ORIGIN_MS, MINUTE_MS
from pipelines.sources import CcxtSource, RetryPolicy
from warehouse import Settings, connect, migrate

CANDLES = 100_000
NOW_MS = DEFAULT_ORIGIN_MS + 80 * 86_400_000 + 30_000
SINCE_MS = NOW_MS - NOW_MS % MINUTE_MS - CANDLES * MINUTE_MS


def clock() -> int:
    return NOW_MS


class Timers:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds[name] += time.perf_counter() - started

        return timed


def _source(url: str, timers: Timers | None = None) -> CcxtSource:
    source = CcxtSource(
        "binance",
        api_base=url,
        config={"rateLimit": 1, "timeout": 30_000},
        retry=RetryPolicy(max_attempts=3, backoff_initial_s=0.01),
        clock=clock,
    )
    if timers is not None:
        ex = source.exchange
        ex.fetch = timers.wrap("http_and_decode", ex.fetch)  # HTTP + server + JSON decode
        ex.parse_json = timers.wrap("json_decode", ex.parse_json)
        ex.parse_ohlcvs = timers.wrap("ccxt_parse_ohlcv", ex.parse_ohlcvs)
        ex.fetch_ohlcv = timers.wrap("fetch_ohlcv_total", ex.fetch_ohlcv)
    return source


def _settings(tmp: str, name: str) -> Settings:
    return Settings(home=Path(tmp) / name)


def run_pipeline(
    url: str, symbols: list[str], tmp: str, name: str, *, gate: bool
) -> tuple[float, int, Timers]:
    settings = _settings(tmp, name)
    con = connect(settings)
    migrate(con)
    con.close()
    timers = Timers()
    rows = [0] * len(symbols)

    def one(i: int) -> None:
        con = connect(settings)
        source = _source(url, timers)
        merge: MergeFn
        if gate:
            from expectations.gate import gate_and_merge

            def merge_gated(table: str, batch: Any) -> Any:
                return gate_and_merge(con, table, batch, settings=settings)

            merge = merge_gated
        else:
            merge = upsert_merge(con, settings)
        merge = timers.wrap("warehouse_write", merge)
        stats = collect_series(source, merge, symbols[i], "1m", SINCE_MS, None, batch_rows=20_000)
        assert stats.status != "failed", stats.message
        rows[i] = stats.rows_merged
        con.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(symbols))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, sum(rows), timers


def run_baseline(url: str, symbol_id: str) -> tuple[float, int]:
    """Plain requests + json + numpy over the same pages: no ccxt, no warehouse."""
    session = requests.Session()
    started = time.perf_counter()
    cursor, total = SINCE_MS, 0
    end = NOW_MS - NOW_MS % MINUTE_MS
    while cursor < end:
        resp = session.get(
            f"{url}/api/v3/klines",
            params={  # type: ignore[arg-type]
                "symbol": symbol_id,
                "interval": "1m",
                "startTime": cursor,
                "limit": 1000,
                "endTime": end - 1,
            },
            timeout=30,
        )
        rows = np.asarray([r[:6] for r in resp.json()], dtype=np.float64)
        if rows.size == 0:
            break
        total += rows.shape[0]
        cursor = int(rows[-1, 0]) + MINUTE_MS
    return time.perf_counter() - started, total


def measure_simulation() -> str:
    """100 symbols x 30 days of 1m candles from the simulated exchange vs drawing the same
    number of plain normal variates (the floor for any per-minute random model)."""
    from pipelines.simulated_exchange import DAY_MS, SimulatedExchange

    n_symbols, days = 100, 30
    started = time.perf_counter()
    ex = SimulatedExchange()
    total = 0
    for i in range(n_symbols):
        a = ex.candle_arrays(f"SIM{i}/USDT", DEFAULT_ORIGIN_MS, DEFAULT_ORIGIN_MS + days * DAY_MS)
        total += a["ts"].size
    sim_s = time.perf_counter() - started
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for _ in range(n_symbols):
        rng.standard_normal(days * 1440 * 6)  # six draws per candle, like the model's streams
    base_s = time.perf_counter() - started
    return (
        f"Simulated exchange: {n_symbols} symbols x {days} days of 1m = {total:,} candles in "
        f"{sim_s:.2f} s ({total / sim_s:,.0f} candles/s); drawing 6 normal variates per candle "
        f"alone takes {base_s:.2f} s, so the full model costs {sim_s / base_s:.1f}x that floor."
    )


def main() -> None:
    simulation = measure_simulation()
    symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"]
    exchange = LoopbackExchange(symbols=symbols, clock=clock)
    for s in symbols:  # generate the simulated history up front (not part of what we measure)
        exchange.series_1m(s, SINCE_MS, NOW_MS)
    with LoopbackServer(exchange) as server, tempfile.TemporaryDirectory() as tmp:
        run_baseline(server.url, "BTCUSDT")  # warm-up
        base_s, base_n = run_baseline(server.url, "BTCUSDT")
        e2e_s, e2e_n, timers = run_pipeline(server.url, symbols[:1], tmp, "upsert", gate=False)
        gate_s, gate_n, gate_timers = run_pipeline(server.url, symbols[:1], tmp, "gate", gate=True)
        conc_s, conc_n, _ = run_pipeline(server.url, symbols, tmp, "concurrent", gate=False)

    t = timers.seconds
    fetch_total = t["fetch_ohlcv_total"]
    http = t["http_and_decode"] - t["json_decode"]
    parts = {
        "HTTP round trip (incl. loopback server building JSON)": http,
        "ccxt JSON decoding": t["json_decode"],
        "ccxt OHLCV parsing (parse_ohlcvs)": t["ccxt_parse_ohlcv"],
        "other ccxt work in fetch_ohlcv (request building, rate limiter, signing)": fetch_total
        - t["http_and_decode"]
        - t["ccxt_parse_ohlcv"],
        "our code (paging, de-duplication, open candle, Arrow, stats)": e2e_s
        - fetch_total
        - t["warehouse_write"],
        "warehouse write (warehouse.upsert)": t["warehouse_write"],
    }

    def row(part: str, seconds: float) -> str:
        # "other ccxt work" is a residual of separately timed parts; timer overlap can push it
        # a little below zero, which means "too small to measure", not negative time
        if seconds < 0:
            return f"| {part} | ~0 (residual {seconds:+.2f}) | ~0% |"
        return f"| {part} | {seconds:.2f} | {100 * seconds / e2e_s:.1f}% |"

    table = "\n".join(row(k, v) for k, v in parts.items())
    ccxt_share = (t["json_decode"] + t["ccxt_parse_ohlcv"]) / e2e_s
    ours_share = parts["our code (paging, de-duplication, open candle, Arrow, stats)"] / e2e_s
    base_rate = base_n / base_s
    gate_write_s = gate_timers.seconds["warehouse_write"]
    run_rows = [
        ("baseline: requests + json + numpy, no ccxt, no warehouse", base_n, base_s),
        ("ccxt -> CcxtSource -> warehouse.upsert, 1 symbol", e2e_n, e2e_s),
        ("ccxt -> CcxtSource -> quality gate (GX) -> warehouse, 1 symbol", gate_n, gate_s),
        ("ccxt -> CcxtSource -> warehouse.upsert, 4 symbols concurrently", conc_n, conc_s),
    ]
    runs = "\n".join(
        f"| {name} | {n:,} | {sec:.2f} | {n / sec:,.0f} | {(n / sec) / base_rate:.2f} |"
        for name, n, sec in run_rows
    )
    md = f"""
{CANDLES:,} 1m candles per symbol from the loopback exchange (simulated data, Binance REST shape,
1,000 candles per page, no faults) through the real `ccxt.binance` client
(ccxt {__import__("ccxt").__version__}) into a fresh DuckLake warehouse.

| run | candles | seconds | candles/s | vs baseline |
| --- | ---: | ---: | ---: | ---: |
{runs}

Where the time goes (1 symbol, upsert run, {e2e_s:.2f} s):

| part | seconds | share |
| --- | ---: | ---: |
{table}

ccxt parsing (JSON decoding + OHLCV parsing) is {100 * ccxt_share:.1f}% of the end-to-end time;
our code is {100 * ours_share:.1f}%. The gate run spent {gate_write_s:.2f} s in
`gate_and_merge` (validation + quarantine + upsert). The loopback server runs in the same process,
so the HTTP share includes its JSON encoding and competes for the same GIL.

{simulation}
"""
    record("Collection: loopback -> ccxt -> warehouse", md)
    print(md)


if __name__ == "__main__":
    main()
