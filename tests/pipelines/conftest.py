"""Fixtures for the collection tests: a frozen clock and loopback exchanges."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pipelines.loopback import FaultPlan, LoopbackExchange, LoopbackServer
from tests.support.loopback import frozen_clock


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
