"""Fixtures used across packages. Fixtures for one package live next to its tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from hypothesis import settings as hypothesis_settings

from warehouse import Settings, connect, migrate

# CI (.ci/run) selects "ci": the same examples every run, so a red CI is reproducible and a
# green one is not luck; local runs keep drawing new examples to find new failures.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
hypothesis_settings.register_profile("dev", print_blob=True)
hypothesis_settings.load_profile(os.environ.get("TRADELOOP_HYPOTHESIS_PROFILE", "dev"))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` a worker tags each xdist_group test's id with its group; an
    untagged one means this pytest/pytest-xdist pair ignores the groups (pytest 9 with xdist
    3.8 did), and tests that share a process-wide resource would silently run in parallel."""
    if not getattr(config.option, "loadgroup", False):
        return
    ignored = [
        i.nodeid for i in items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid
    ]
    if ignored:
        raise pytest.UsageError(
            f"xdist_group marks are ignored by this pytest/pytest-xdist pair: {ignored[:3]}"
        )


SHARED_CANDLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "candles"
# every real candle file ("<PAIR>-<timeframe>.feather"; trades files excluded), from the directory
REAL_CANDLE_FILES = sorted(p.name for p in SHARED_CANDLES.glob("*-[0-9]*.feather"))


@pytest.fixture(scope="session")
def candles_dir() -> Path:
    """The real exchange data in ../shared/data/candles (read in place, never copied)."""
    if not SHARED_CANDLES.is_dir():
        pytest.fail(f"real test data missing at {SHARED_CANDLES}")
    return SHARED_CANDLES


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a fresh, empty data directory."""
    return Settings(home=tmp_path / "home")


@pytest.fixture
def lake(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """A migrated warehouse in a temporary directory."""
    con = connect(settings)
    migrate(con)
    yield con
    con.close()
