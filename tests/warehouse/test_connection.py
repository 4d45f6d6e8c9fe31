"""Connecting: the extensions' signatures are checked once per process and file, and a
connection that runs a person's query still cannot load anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from warehouse import Settings, connect
from warehouse import connection as connection_module
from warehouse.readonly import lock_down


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ``allow_unsigned_extensions`` value of every DuckDB the warehouse opens."""
    opened: list[str] = []
    real = duckdb.connect

    def spy(*args: Any, **kwargs: Any) -> duckdb.DuckDBPyConnection:
        opened.append(kwargs["config"]["allow_unsigned_extensions"])
        return real(*args, **kwargs)

    monkeypatch.setattr(connection_module.duckdb, "connect", spy)
    monkeypatch.setattr(connection_module, "_VERIFIED_EXTENSIONS", {})
    return opened


def test_signatures_are_checked_once_and_again_when_a_file_changes(
    checked: list[str], tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home")
    for _ in range(3):
        connect(settings).close()
    assert checked == ["false", "true", "true"]  # checked by the first connection only
    verified = connection_module._VERIFIED_EXTENSIONS
    assert set(verified) == {connection_module.extension_path(n) for n in ("ducklake", "sqlite")}
    # a file that is not the one checked (another install, same path) is checked again
    path = next(iter(verified))
    inode, size, mtime_ns = verified[path]
    verified[path] = (inode, size, mtime_ns - 1)
    connect(settings).close()
    assert checked[-1] == "false"


def test_a_locked_down_connection_loads_no_extension(checked: list[str], tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    connect(settings).close()
    con = connect(settings, read_only=True)  # loaded without a second check
    assert checked == ["false", "true"]
    other = connection_module.extension_path("postgres")  # a real extension not loaded here
    lock_down(con, settings)
    with pytest.raises(duckdb.Error, match="(?i)external access|disabled|permission"):
        con.execute(f"LOAD '{other}'")
    con.close()
