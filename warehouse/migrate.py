"""Numbered SQL migrations, applied once each, in order, with their versions recorded.

A migration is ``warehouse/migrations/NNNN_name.sql``. Applied migrations are recorded in
``schema_migrations`` with a checksum; editing an applied migration is an error (write a new
one). Each migration runs in one transaction, so a failed migration leaves nothing behind, and
several processes migrating at once apply each migration exactly once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import duckdb

from warehouse.errors import WarehouseError
from warehouse.retry import run_transaction
from warehouse.schema import forget_schemas

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


def available_migrations() -> list[Migration]:
    folder = resources.files("warehouse") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise WarehouseError(f"two migrations share a version number: {versions}")
    return found


def _ensure_version_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER NOT NULL, name VARCHAR NOT NULL, checksum VARCHAR NOT NULL, "
        "applied_at TIMESTAMPTZ NOT NULL)"
    )


def applied_versions(con: duckdb.DuckDBPyConnection) -> dict[int, str]:
    rows = con.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return {int(version): str(checksum) for version, checksum in rows}


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The highest applied migration (0 for an empty warehouse)."""
    try:
        row = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    except duckdb.CatalogException:
        return 0
    return int(row[0]) if row else 0


def migrate(con: duckdb.DuckDBPyConnection, *, max_attempts: int = 50) -> list[int]:
    """Apply every pending migration; return the versions this call applied."""
    forget_schemas(con)
    run_transaction(con, _ensure_version_table, what="schema_migrations", max_attempts=max_attempts)
    migrations = available_migrations()
    recorded_before = applied_versions(con)
    if all(recorded_before.get(m.version) == m.checksum for m in migrations):
        return []  # all applied, none edited: one query instead of a transaction each
    applied_now: list[int] = []
    for chunk in _transactions(migrations):
        applied_now += _apply(con, chunk, max_attempts)
    return applied_now


_CREATES_VIEW = re.compile(r"\bCREATE\s+(OR\s+REPLACE\s+)?VIEW\b", re.IGNORECASE)


def _transactions(migrations: list[Migration]) -> list[list[Migration]]:
    """Consecutive migrations applied in one transaction each (a fresh warehouse took one
    commit per migration: a second on DuckLake). A migration that creates a view starts a new
    one: DuckLake binds a view only to tables that are committed."""
    chunks: list[list[Migration]] = []
    for m in migrations:
        if not chunks or _CREATES_VIEW.search(m.sql):
            chunks.append([])
        chunks[-1].append(m)
    return chunks


def _apply(con: duckdb.DuckDBPyConnection, chunk: list[Migration], max_attempts: int) -> list[int]:
    """Apply the pending ones of ``chunk`` in one transaction; return their versions. Checked
    and applied together: a check made before BEGIN can be outdated by another process's
    commit ("already exists")."""
    current = [f"migration {chunk[0].version:04d}_{chunk[0].name}"]

    def apply_pending(c: duckdb.DuckDBPyConnection) -> list[int]:
        recorded = applied_versions(c)
        applied: list[int] = []
        for m in chunk:
            current[0] = f"migration {m.version:04d}_{m.name}"
            if m.version not in recorded:
                c.execute(m.sql)
                c.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?, now())",
                    [m.version, m.name, m.checksum],
                )
                applied.append(m.version)
            elif recorded[m.version] != m.checksum:
                raise WarehouseError(
                    f"{current[0]} was edited after it was applied; add a new migration instead"
                )
        return applied

    try:
        return run_transaction(
            con, apply_pending, what="migrations", max_attempts=max_attempts, backoff_initial_s=0.05
        )
    except duckdb.Error as exc:
        raise WarehouseError(f"{current[0]} failed: {exc}") from exc
