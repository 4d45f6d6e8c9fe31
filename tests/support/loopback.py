"""A frozen clock and the real ccxt client on a loopback exchange, for the collection tests."""

from __future__ import annotations

from pipelines.loopback import LoopbackServer
from pipelines.simulated_exchange import DEFAULT_ORIGIN_MS, MINUTE_MS
from pipelines.sources import CcxtSource, RetryPolicy

# 10 days after the simulation origin, 37 s into a minute: the candle at NOW_MS - 37 s is open.
NOW_MS = DEFAULT_ORIGIN_MS + 10 * 86_400_000 + 7 * MINUTE_MS + 37_000
FAST_RETRY = RetryPolicy(max_attempts=5, backoff_initial_s=0.005, backoff_max_s=0.02)


def frozen_clock() -> int:
    return NOW_MS


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
