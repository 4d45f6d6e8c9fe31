"""The loopback exchange server (Binance REST shape, fault injection) for tests and the demo."""

from pipelines.loopback.server import (
    Fault,
    FaultPlan,
    LoopbackExchange,
    LoopbackServer,
    serve,
    wall_clock_ms,
)

__all__ = ["Fault", "FaultPlan", "LoopbackExchange", "LoopbackServer", "serve", "wall_clock_ms"]
