"""Fixtures used across packages. Fixtures for one package live next to its tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from hypothesis import settings as hypothesis_settings

from tests.support.data import SHARED_CANDLES
from tests.support.settings import SettingsAwareMonkeyPatch
from warehouse import Settings, connect, get_settings, migrate

# CI (.ci/run) selects "ci": the same examples every run, so a red CI is reproducible and a
# green one is not luck; local runs keep drawing new examples to find new failures.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
hypothesis_settings.register_profile("dev", print_blob=True)
hypothesis_settings.load_profile(os.environ.get("TRADELOOP_HYPOTHESIS_PROFILE", "dev"))


# Longest first: xdist hands out work units (a group, or one test) in collection order, and
# a 5-minute group collected late left one worker busy after the others had finished. The
# groups by their time in CI (docs/testing.md), then the other tests marked slow.
LONGEST_GROUPS = (
    "e2e-deployment",
    "e2e-schedule",
    "cli-smoke",
    "warehouse-processes",
    "dask",
    "report-browser",
)


def _longest_first(item: pytest.Item) -> int:
    group = item.get_closest_marker("xdist_group")
    if group is not None and group.args and group.args[0] in LONGEST_GROUPS:
        return LONGEST_GROUPS.index(group.args[0])
    return len(LONGEST_GROUPS) + (0 if item.get_closest_marker("slow") else 1)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` a worker tags each xdist_group test's id with its group; an
    untagged one means this pytest/pytest-xdist pair ignores the groups (pytest 9 with xdist
    3.8 did), and tests that share a process-wide resource would silently run in parallel.
    The longest work is collected first (``LONGEST_GROUPS``); the sort is stable, so every
    worker collects the same order, as xdist requires."""
    if not getattr(config.option, "loadgroup", False):
        return
    items.sort(key=_longest_first)
    ignored = [
        i.nodeid for i in items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid
    ]
    if ignored:
        raise pytest.UsageError(
            f"xdist_group marks are ignored by this pytest/pytest-xdist pair: {ignored[:3]}"
        )


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Every test starts and ends with an empty settings cache (tests/support/settings.py)."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def monkeypatch() -> Iterator[pytest.MonkeyPatch]:
    """pytest's monkeypatch; setting or deleting a TRADELOOP_* variable drops the cached
    settings, so the next get_settings() reads the new environment."""
    patch = SettingsAwareMonkeyPatch()
    yield patch
    patch.undo()


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
