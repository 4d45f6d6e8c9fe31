"""Per-test PostgreSQL databases for the tests that run on the production shape as well.

``TRADELOOP_TEST_PG_URL`` (set by .ci/setup-postgres.sh) names a PostgreSQL database whose role
may create databases. When it is set, the PostgreSQL variant of a test MUST run: an unusable
server fails the test instead of skipping it. When it is unset, the variant is skipped with the
reason on a laptop, and fails in CI (``CI`` set, as .ci/run does): CI that silently skipped the
production shape would be green without having run it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest

from warehouse import Settings

PG_URL_ENV = "TRADELOOP_TEST_PG_URL"
CATALOGS = ("sqlite", "postgres")


def pg_url() -> str | None:
    return os.environ.get(PG_URL_ENV) or None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def require_pg_url() -> str:
    """The cluster's URL; skip (fail in CI) when none is configured."""
    url = pg_url()
    if url is None:
        why = f"{PG_URL_ENV} is not set: no PostgreSQL server for the production-shape variant"
        if in_ci():
            pytest.fail(f"{why} (CI must run it: .ci/setup-postgres.sh sets it)")
        pytest.skip(why)
    return url


def with_database(url: str, database: str) -> str:
    return urlunparse(urlparse(url)._replace(path="/" + database))


@contextmanager
def fresh_pg_database(prefix: str = "tl_test") -> Iterator[str]:
    """Create an empty database for one test; yield its URL; drop it afterwards."""
    url = require_pg_url()
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def catalog_settings(kind: str, home: Path) -> Iterator[Settings]:
    """Settings on a fresh, empty warehouse with the given catalog kind."""
    if kind == "sqlite":
        yield Settings(home=home)
        return
    with fresh_pg_database() as url:
        yield Settings(home=home, catalog_url=url)


def worker_env(settings: Settings) -> dict[str, str]:
    """Environment for a subprocess that must open the same warehouse as ``settings``."""
    env = {**os.environ, "TRADELOOP_HOME": str(settings.home)}
    env.pop("TRADELOOP_CATALOG_URL", None)
    if settings.catalog_dsn:
        env["TRADELOOP_CATALOG_URL"] = settings.catalog_dsn
    return env
