"""Fixtures for the collection tests: a frozen clock and loopback exchanges."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pipelines.loopback import FaultPlan, LoopbackExchange, LoopbackServer
from pipelines.simulated_exchange import DEFAULT_ORIGIN_MS, MINUTE_MS
from pipelines.sources import CcxtSource, RetryPolicy

# 10 days after the simulation origin, 37 s into a minute: the candle at NOW_MS - 37 s is open.
NOW_MS = DEFAULT_ORIGIN_MS + 10 * 86_400_000 + 7 * MINUTE_MS + 37_000
FAST_RETRY = RetryPolicy(max_attempts=5, backoff_initial_s=0.005, backoff_max_s=0.02)


def frozen_clock() -> int:
    return NOW_MS


@pytest.fixture
def loopback() -> Iterator[Callable[..., LoopbackServer]]:
    """Start loopback exchanges on ephemeral ports; all are stopped at the end of the test."""
    started: list[LoopbackServer] = []

    def start(
        symbols: tuple[str, ...] = ("BTC/USDT",), faults: FaultPlan | None = None, **kw: object
    ) -> LoopbackServer:
        kw.setdefault("clock", frozen_clock)
        exchange = LoopbackExchange(symbols=list(symbols), faults=faults or FaultPlan(), **kw)  # type: ignore[arg-type]
        server = LoopbackServer(exchange).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def ccxt_source(server: LoopbackServer, timeout_ms: int = 2_000, **kw: object) -> CcxtSource:
    """The real ccxt.binance client pointed at the loopback server (short timeout, fast retries)."""
    kw.setdefault("retry", FAST_RETRY)
    kw.setdefault("clock", server.exchange.clock)
    return CcxtSource(
        "binance",
        api_base=server.url,
        config={"timeout": timeout_ms, "rateLimit": 1},
        seed=1,
        **kw,  # type: ignore[arg-type]
    )
