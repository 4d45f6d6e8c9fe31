"""Moved to tests.support.postgres (kept for imports not yet moved)."""

from tests.support.postgres import (
    CATALOGS,
    PG_URL_ENV,
    catalog_settings,
    fresh_pg_database,
    pg_url,
    worker_env,
)

__all__ = [
    "CATALOGS",
    "PG_URL_ENV",
    "catalog_settings",
    "fresh_pg_database",
    "pg_url",
    "worker_env",
]
