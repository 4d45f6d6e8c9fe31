"""Connecting to the DuckLake warehouse.

Extensions are loaded from the files the ``duckdb-ext-*`` packages put in site-packages, never
downloaded. Each connection is an in-memory DuckDB with the lake attached as ``lake`` and
selected with ``USE lake``, so SQL can name tables directly (``SELECT * FROM candles``).
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlparse

import duckdb

from warehouse.errors import WarehouseError, WarehouseNotFound
from warehouse.settings import Settings, get_settings

LAKE = "lake"
_EXTENSION_FILES = {
    "ducklake": "ducklake.duckdb_extension",
    "sqlite": "sqlite_scanner.duckdb_extension",
    "postgres": "postgres_scanner.duckdb_extension",
}


def extension_dir() -> Path:
    """The folder holding the extension files of the installed ``duckdb-ext-*`` packages."""
    version = duckdb.__version__
    platform = "linux_amd64" if sys.platform.startswith("linux") else sys.platform
    roots = {Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])}
    for root in roots:
        candidate = root / "duckdb_ext" / "extensions" / f"v{version}" / platform
        if candidate.is_dir():
            return candidate
    raise WarehouseError(
        f"DuckDB extension files for duckdb {version} not found under site-packages/duckdb_ext; "
        "install duckdb-ext-ducklake and duckdb-ext-sqlite matching the duckdb version"
    )


def extension_path(name: str) -> Path:
    path = extension_dir() / _EXTENSION_FILES[name]
    if not path.exists():
        package = "duckdb-ext-" + name
        raise WarehouseError(f"extension {name!r} missing at {path}: install {package}")
    return path


def _libpq_value(value: str) -> str:
    """A libpq keyword value: quoted (with backslash escapes) when it holds spaces or quotes."""
    if value and not any(c.isspace() or c in "'\\" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def postgres_dsn(url: str) -> str:
    """``postgresql://user:pw@host:port/db?opt=x`` as the libpq keyword string DuckDB expects.

    Percent-escapes are decoded (``%20`` in a database name is a space), values with spaces or
    quotes are quoted, and query parameters (``sslmode=require``) are kept.
    """
    parsed = urlparse(url)
    parts = {
        "dbname": unquote(parsed.path.lstrip("/")) or None,
        "host": parsed.hostname,
        "port": str(parsed.port) if parsed.port else None,
        "user": unquote(parsed.username) if parsed.username else None,
        "password": unquote(parsed.password) if parsed.password else None,
        **dict(parse_qsl(parsed.query)),
    }
    return " ".join(f"{key}={_libpq_value(value)}" for key, value in parts.items() if value)


def _sql_string(value: object) -> str:
    """``value`` as a SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def catalog_target(settings: Settings) -> str:
    """The DuckLake ATTACH target (without options) for the configured catalog."""
    if settings.catalog_kind == "postgres":
        assert settings.catalog_dsn is not None
        return f"ducklake:postgres:{postgres_dsn(settings.catalog_dsn)}"
    return f"ducklake:sqlite:{settings.sqlite_catalog_path.resolve()}"


def _extensions(settings: Settings) -> list[Path]:
    needed = ["ducklake", "postgres" if settings.catalog_kind == "postgres" else "sqlite"]
    return [extension_path(name) for name in needed]


def attach_sql(settings: Settings, *, read_only: bool = False) -> list[str]:
    """The statements that attach the lake: usable from any DuckDB 1.4 client (see README)."""
    statements = [f"LOAD {_sql_string(path)}" for path in _extensions(settings)]
    statements.append("SET TimeZone = 'UTC'")
    options = [f"DATA_PATH {_sql_string(settings.resolved_data_path)}"]
    if read_only:
        options.append("READ_ONLY")
    else:
        options.append(f"DATA_INLINING_ROW_LIMIT {settings.data_inlining_row_limit}")
    target = _sql_string(catalog_target(settings))
    statements.append(f"ATTACH {target} AS {LAKE} ({', '.join(options)})")
    statements.append(f"USE {LAKE}")
    return statements


# DuckDB checks an extension's signature on every LOAD (it hashes the whole file: about 0.2 s
# apiece, 0.4 s of every connection). The first connection of a process loads them checked;
# later ones load the same files, unchanged since (same inode, size and modification time),
# without checking them again. Loading any other extension stays impossible where it matters:
# user queries run on a connection that refuses LOAD and external access (readonly.lock_down).
_VERIFIED_EXTENSIONS: dict[Path, tuple[int, int, int]] = {}


def _file_identity(path: Path) -> tuple[int, int, int]:
    stat = os.stat(path)
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _verified(paths: list[Path]) -> bool:
    return all(_VERIFIED_EXTENSIONS.get(p) == _file_identity(p) for p in paths)


_ATTACH_ATTEMPTS = 8
_INIT_RACE = "Failed to initialize DuckLake"

_WAL_CHECKED: set[Path] = set()
_WAL_LOCK = threading.Lock()


def _ensure_wal(catalog: Path) -> None:
    """Put the SQLite catalog in WAL mode (persistent in the file).

    In SQLite's default rollback-journal mode a reader fails with "database is locked" while
    another process commits; in WAL mode readers never wait on writers.

    Done once per process and catalog, before this process attaches it: Python's ``sqlite3`` is
    a second copy of SQLite in the process, and closing its connection drops the POSIX locks
    that DuckDB's copy holds on the same file (other threads' attached lakes then fail with
    "disk I/O error"; seen with 4 threads collecting 20 symbols).
    """
    key = catalog.resolve()
    with _WAL_LOCK:
        if key in _WAL_CHECKED:
            return
        with contextlib.closing(sqlite3.connect(catalog, timeout=30)) as db:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
        _WAL_CHECKED.add(key)


def _prepare_local_dirs(settings: Settings) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    if settings.catalog_kind == "sqlite":
        settings.sqlite_catalog_path.parent.mkdir(parents=True, exist_ok=True)
        _ensure_wal(settings.sqlite_catalog_path)
    if "://" not in settings.resolved_data_path:
        Path(settings.resolved_data_path).mkdir(parents=True, exist_ok=True)


def connect(
    settings: Settings | None = None, *, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """A new connection with the lake attached and selected.

    ``read_only`` attaches the catalog read-only: for people and dashboards that must never write.
    """
    settings = settings or get_settings()
    if (
        read_only
        and settings.catalog_kind == "sqlite"
        and not settings.sqlite_catalog_path.exists()
    ):
        # a reader must not create an empty catalog (or the data directory) as a side effect
        raise WarehouseNotFound(
            f"no warehouse at {settings.lake_dir}: run `tradeloop init`, "
            "or set TRADELOOP_HOME to the folder that holds one"
        )
    _prepare_local_dirs(settings)
    extensions = _extensions(settings)
    for attempt in range(_ATTACH_ATTEMPTS):
        checked = not _verified(extensions)
        con = duckdb.connect(config={"allow_unsigned_extensions": "false" if checked else "true"})
        try:
            for statement in attach_sql(settings, read_only=read_only):
                con.execute(statement)
            if checked:
                _VERIFIED_EXTENSIONS.update((p, _file_identity(p)) for p in extensions)
            # DuckLake retries a commit that lost a race when the changes do not conflict.
            con.execute("SET ducklake_max_retry_count = 100")
            return con
        except duckdb.Error as exc:
            con.close()
            # Processes opening a new, empty catalog at once all try to create DuckLake's tables
            # in it; the losers fail ("database is locked", "duplicate key") and, retried, find
            # the catalog made.
            if _INIT_RACE in str(exc) and attempt < _ATTACH_ATTEMPTS - 1:
                time.sleep(random.uniform(0.05, 0.15) * (attempt + 1))
                continue
            message = f"cannot attach the warehouse at {catalog_target(settings)}: {exc}"
            password = _catalog_password(settings)
            if password and password in message:
                # the DSN, and DuckDB's message quoting it, hold the catalog password: keep it
                # out of logs and tracebacks (the original exception repeats it)
                raise WarehouseError(message.replace(password, "***")) from None
            raise WarehouseError(message) from exc
    raise AssertionError("unreachable")


def _catalog_password(settings: Settings) -> str | None:
    if settings.catalog_kind != "postgres" or not settings.catalog_dsn:
        return None
    password = urlparse(settings.catalog_dsn).password
    return unquote(password) if password else None


@dataclass
class Warehouse:
    """A settings-bound handle that opens connections on demand (what flows pass around)."""

    settings: Settings

    @classmethod
    def default(cls) -> Warehouse:
        return cls(get_settings())

    def connect(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        return connect(self.settings, read_only=read_only)

    @contextlib.contextmanager
    def session(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.connect(read_only=read_only)
        try:
            yield con
        finally:
            con.close()
