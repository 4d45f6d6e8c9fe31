"""Settings: TRADELOOP_* environment, tradeloop.toml, precedence, and choosing the catalog."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlparse, urlunparse

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError

from tests.support.postgres import fresh_pg_database
from warehouse import Settings, WarehouseError, connect
from warehouse.connection import attach_sql, catalog_target, postgres_dsn


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """An empty working directory and no TRADELOOP_* settings in the environment."""
    for name in list(os.environ):
        if name.startswith("TRADELOOP_") and name != "TRADELOOP_TEST_PG_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def _toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults(clean: Path) -> None:
    s = Settings()
    assert s.home == Path("var")
    assert s.catalog_url is None and s.catalog_kind == "sqlite"
    assert s.sqlite_catalog_path == Path("var/lake/catalog.sqlite")
    assert s.resolved_data_path == str(clean / "var" / "lake" / "data") + "/"
    assert s.data_inlining_row_limit == 0
    assert s.live_trading is False and s.exchange_api_key is None
    assert s.symbols == ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def test_environment_with_the_tradeloop_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/not/the/data/dir")  # no prefix: not a setting
    monkeypatch.setenv("LIVE_TRADING", "true")
    assert Settings().home == Path("var") and Settings().live_trading is False

    monkeypatch.setenv("TRADELOOP_HOME", "/data/tl")
    monkeypatch.setenv("TRADELOOP_LIVE_TRADING", "true")
    monkeypatch.setenv("TRADELOOP_DATA_INLINING_ROW_LIMIT", "50")
    monkeypatch.setenv("TRADELOOP_SYMBOLS", '["BTC/USDT"]')
    monkeypatch.setenv("TRADELOOP_EXCHANGE_API_SECRET", "s3cret")
    s = Settings()
    assert s.home == Path("/data/tl")
    assert s.sqlite_catalog_path == Path("/data/tl/lake/catalog.sqlite")
    assert s.resolved_data_path == "/data/tl/lake/data/"
    assert s.live_trading is True
    assert s.data_inlining_row_limit == 50
    assert s.symbols == ("BTC/USDT",)
    assert s.exchange_api_secret is not None
    assert s.exchange_api_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s) and "s3cret" not in str(s)

    monkeypatch.setenv("TRADELOOP_DATA_INLINING_ROW_LIMIT", "-1")
    with pytest.raises(ValidationError, match="data_inlining_row_limit"):
        Settings()


def test_tradeloop_toml_in_the_working_directory_or_named_by_tradeloop_config(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _toml(clean / "tradeloop.toml", 'home = "/from/cwd"\nsymbols = ["ETH/USDT", "SOL/USDT"]\n')
    s = Settings()
    assert s.home == Path("/from/cwd") and s.symbols == ("ETH/USDT", "SOL/USDT")

    other = _toml(clean / "elsewhere.toml", 'home = "/from/config"\n')
    monkeypatch.setenv("TRADELOOP_CONFIG", str(other))
    s = Settings()
    assert s.home == Path("/from/config")
    assert s.symbols == ("BTC/USDT", "ETH/USDT", "SOL/USDT"), "the cwd file is not read then"

    monkeypatch.setenv("TRADELOOP_CONFIG", str(clean / "misspelt.toml"))
    with pytest.raises(FileNotFoundError, match="misspelt.toml"):
        Settings()


def test_precedence_kwargs_then_env_then_toml_then_defaults(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _toml(
        clean / "tradeloop.toml",
        'home = "/toml"\nexchange = "toml-ex"\nbase_timeframe = "5m"\n'
        "data_inlining_row_limit = 7\n",
    )
    monkeypatch.setenv("TRADELOOP_HOME", "/env")
    monkeypatch.setenv("TRADELOOP_EXCHANGE", "env-ex")
    s = Settings(home=Path("/kwargs"))
    assert s.home == Path("/kwargs")  # kwargs beat env and toml
    assert s.exchange == "env-ex"  # env beats toml
    assert s.base_timeframe == "5m" and s.data_inlining_row_limit == 7  # toml beats defaults
    assert s.task_runner == "thread"  # default
    assert Settings().home == Path("/env")


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_postgresql_url_selects_the_postgres_catalog(scheme: str) -> None:
    s = Settings(catalog_url=f"{scheme}://alice:pw@db.example:6543/lake")
    assert s.catalog_kind == "postgres"
    target = catalog_target(s)
    assert target.startswith("ducklake:postgres:")
    assert conninfo_to_dict(target.removeprefix("ducklake:postgres:")) == {
        "dbname": "lake",
        "host": "db.example",
        "port": "6543",
        "user": "alice",
        "password": "pw",
    }
    loads = " ".join(line for line in attach_sql(s) if line.startswith("LOAD"))
    assert "postgres_scanner" in loads and "sqlite_scanner" not in loads


def test_sqlite_catalog_urls_and_unknown_ones(clean: Path) -> None:
    s = Settings(catalog_url="sqlite:////abs/catalog.sqlite")
    assert s.catalog_kind == "sqlite" and s.sqlite_catalog_path == Path("/abs/catalog.sqlite")
    assert catalog_target(s) == "ducklake:sqlite:/abs/catalog.sqlite"
    assert "sqlite_scanner" in attach_sql(s)[1]
    assert Settings(catalog_url="").catalog_url is None  # an empty variable means the default
    for url in ("mysql://u:pw@h/db", "postgresql+psycopg://u:pw@h/db", "/path/catalog.sqlite"):
        with pytest.raises(ValidationError, match="catalog_url must be"):
            Settings(catalog_url=url)


def test_the_postgres_url_reaches_libpq_intact() -> None:
    """Percent-escapes, spaces, quotes and backslashes survive; query options are kept."""
    password = "p@ss w'rd\\1:/"
    url = f"postgresql://{quote('bob smith')}:{quote(password, safe='')}@127.0.0.1:5432/"
    url += quote("my lake's db") + "?sslmode=require&application_name=tradeloop"
    assert conninfo_to_dict(postgres_dsn(url)) == {
        "dbname": "my lake's db",
        "host": "127.0.0.1",
        "port": "5432",
        "user": "bob smith",
        "password": password,
        "sslmode": "require",
        "application_name": "tradeloop",
    }


def _pg_tables(url: str) -> set[str]:
    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def test_tradeloop_catalog_url_in_the_environment_puts_the_catalog_in_postgres(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a database name that needs escaping in the URL, in libpq and in the ATTACH statement
    with fresh_pg_database(prefix="tl test's") as raw_url:
        url = raw_url.replace(" ", "%20").replace("'", "%27")
        monkeypatch.setenv("TRADELOOP_HOME", str(clean / "home"))
        monkeypatch.setenv("TRADELOOP_CATALOG_URL", url)
        s = Settings()
        assert s.catalog_kind == "postgres"
        con = connect(s)
        con.execute("CREATE TABLE probe (x INTEGER)")
        con.execute("INSERT INTO probe VALUES (42)")
        con.close()
        assert {"ducklake_metadata", "ducklake_table"} <= _pg_tables(url)
        with psycopg.connect(url) as db:
            names = db.execute("SELECT table_name FROM ducklake_table").fetchall()
        assert ("probe",) in names
        assert not (clean / "home" / "lake" / "catalog.sqlite").exists()
        parquet = list((clean / "home" / "lake" / "data").rglob("*.parquet"))
        assert parquet, "the data files stay under TRADELOOP_HOME"
        assert connect(s, read_only=True).execute("SELECT x FROM probe").fetchall() == [(42,)]

        # a wrong password: a clear error that does not repeat the password
        parsed = urlparse(url)
        netloc = f"{parsed.username}:Wrong-Pw-123@{parsed.hostname}:{parsed.port}"
        bad = urlunparse(parsed._replace(netloc=netloc))
        with pytest.raises(WarehouseError, match="cannot attach") as raised:
            connect(Settings(home=clean / "home", catalog_url=bad))
        assert "password authentication failed" in str(raised.value)
        assert "Wrong-Pw-123" not in str(raised.value)
        assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_without_a_catalog_url_the_catalog_is_a_sqlite_file_under_home(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADELOOP_HOME", str(clean / "home"))
    con = connect(Settings())
    con.execute("CREATE TABLE probe (x INTEGER)")
    con.close()
    assert (clean / "home" / "lake" / "catalog.sqlite").is_file()
