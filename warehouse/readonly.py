"""SQL that can only read: what `tradeloop sql` runs for a person.

Two locks, either of which refuses what the other might miss:

* ``read_only_statement``: exactly one statement, and DuckDB's own parser must call it a SELECT
  (which covers WITH, DESCRIBE, SHOW, SUMMARIZE, PRAGMA queries, FROM-first) or an EXPLAIN.
  ATTACH, COPY, SET, LOAD/INSTALL, CALL and every write are refused before they run.
* ``lock_down``: once the lake is attached (read-only), the connection may read files only
  under the lake's data path, loads and installs no extension on its own, and its
  configuration is locked, so no later statement can lift any of it.
"""

from __future__ import annotations

from typing import Any

import duckdb

from warehouse.errors import WarehouseError
from warehouse.settings import Settings

READ_STATEMENTS = (
    duckdb.StatementType.SELECT,  # type: ignore[attr-defined]
    duckdb.StatementType.EXPLAIN,  # type: ignore[attr-defined]
)


class ReadOnlyQueryError(WarehouseError):
    """The query is not one read-only statement."""


def read_only_statement(query: str) -> str:
    """``query`` if it is exactly one SELECT-like or EXPLAIN statement (else the error says
    what was found)."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise ReadOnlyQueryError(f"cannot parse the query: {exc}") from exc
    if len(statements) != 1:
        raise ReadOnlyQueryError(
            f"one statement at a time, found {len(statements)} (separated by ';')"
        )
    kind = statements[0].type
    if kind not in READ_STATEMENTS:
        raise ReadOnlyQueryError(
            f"only reads are allowed (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN); "
            f"this is a {kind.name} statement"
        )
    return query


def lock_down_statements(settings: Settings) -> list[str]:
    """The settings that confine a connection whose lake is already attached."""
    data_path = settings.resolved_data_path.replace("'", "''")
    return [
        f"SET allowed_directories = ['{data_path}']",
        "SET enable_external_access = false",
        "SET autoinstall_known_extensions = false",
        "SET autoload_known_extensions = false",
        "SET lock_configuration = true",
    ]


def lock_down(con: Any, settings: Settings) -> None:
    for statement in lock_down_statements(settings):
        con.execute(statement)
