"""A temporary Prefect server (SQLite, loopback) for the flow tests of one test process."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(autouse=True)
def _flows_run_on_the_settings_fixture(request: pytest.FixtureRequest) -> Iterator[None]:
    """A flow reads its settings where it runs (``get_settings()``; it takes none as a
    parameter): a test that uses the ``settings`` fixture runs its flows on those."""
    if "settings" not in request.fixturenames:
        yield
        return
    from warehouse import use_settings

    with use_settings(request.getfixturevalue("settings")):
        yield


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
