"""Every warehouse test runs on both DuckLake catalogs: SQLite and PostgreSQL.

Overrides the shared ``settings`` fixture (and so ``lake``) with a fresh warehouse per test:
a new tmp data path and, for PostgreSQL, a new database (see tests.warehouse.catalogs.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import CATALOGS, catalog_settings
from warehouse import Settings


@pytest.fixture(params=CATALOGS)
def catalog(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(catalog: str, tmp_path: Path) -> Iterator[Settings]:
    with catalog_settings(catalog, tmp_path / "home") as fresh:
        yield fresh
