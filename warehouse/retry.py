"""Retrying transactions that lost a race with another writer."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from typing import TypeVar

import duckdb

from warehouse.errors import WriteConflictError

T = TypeVar("T")

_CONFLICT_MARKERS = (
    "conflict",
    "database is locked",
    "failed to commit",
    "snapshot_id",
    "busy",
)


def is_conflict(exc: BaseException) -> bool:
    """True for errors that another writer caused and a retry can resolve."""
    if not isinstance(exc, duckdb.Error):
        return False
    message = str(exc).lower()
    return any(marker in message for marker in _CONFLICT_MARKERS)


def rollback_quietly(con: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):  # no transaction was open
        con.execute("ROLLBACK")


def run_transaction(
    con: duckdb.DuckDBPyConnection,
    body: Callable[[duckdb.DuckDBPyConnection], T],
    *,
    what: str,
    max_attempts: int = 30,
    backoff_initial_s: float = 0.02,
    backoff_max_s: float = 1.0,
) -> T:
    """Run ``body`` inside BEGIN/COMMIT, retrying with jittered exponential backoff on conflicts.

    Any other error rolls back and propagates: a transaction is either wholly committed or absent.
    """
    delay = backoff_initial_s
    last: BaseException | None = None
    for _ in range(max_attempts):
        try:
            con.execute("BEGIN TRANSACTION")
            result = body(con)
            con.execute("COMMIT")
            return result
        except duckdb.Error as exc:
            rollback_quietly(con)
            if not is_conflict(exc):
                raise
            last = exc
            time.sleep(random.uniform(0.5, 1.0) * delay)
            delay = min(delay * 2, backoff_max_s)
        except BaseException:
            rollback_quietly(con)
            raise
    raise WriteConflictError(f"{what}: still conflicting after {max_attempts} attempts: {last}")
