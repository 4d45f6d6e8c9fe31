"""Collection (source -> quality gate -> warehouse) on both DuckLake catalogs: SQLite and
PostgreSQL (the PostgreSQL variant runs whenever TRADELOOP_TEST_PG_URL is set, as in CI)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from expectations.gate import gate_and_merge
from pipelines.collect import collect_series, record_ingestion, stored_range
from pipelines.sources import SimulatedSource
from tests.support.postgres import CATALOGS, catalog_settings
from warehouse import Settings, connect, migrate

MINUTE = 60_000
SINCE = 1_709_251_200_000  # 2024-03-01T00:00Z


@pytest.fixture(params=CATALOGS)
def catalog_settings_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    with catalog_settings(str(request.param), tmp_path / "home") as settings:
        yield settings


def test_collect_resume_and_rerun_on_each_catalog(catalog_settings_fixture: Settings) -> None:
    settings = catalog_settings_fixture
    con = connect(settings)
    migrate(con)
    source = SimulatedSource()

    def merge(table, batch):  # type: ignore[no-untyped-def]
        return gate_and_merge(con, table, batch, settings=settings, run_id="catalogs")

    def run(until_ms: int):  # type: ignore[no-untyped-def]
        stored = stored_range(con, source.name, "BTC/USDT", "1m")
        return collect_series(
            source,
            merge,
            "BTC/USDT",
            "1m",
            SINCE,
            until_ms,
            stored=stored,
            resume=True,
            source_kind="simulated",
        )

    first = run(SINCE + 300 * MINUTE)
    assert (first.fetch.rows, first.rows_merged) == (300, 300)
    second = run(SINCE + 500 * MINUTE)  # resumes after the last stored candle
    assert second.rows_merged == 200
    again = run(SINCE + 500 * MINUTE)
    assert again.rows_merged == 0
    for number, stats in enumerate([first, second, again]):
        assert record_ingestion(con, f"run{number}", [stats], settings=settings) == 1
    rows, distinct, first_ts, last_ts = con.execute(
        "SELECT count(*), count(DISTINCT ts), min(epoch_ms(ts)), max(epoch_ms(ts)) FROM candles"
    ).fetchone()
    assert rows == distinct == 500
    assert (first_ts, last_ts) == (SINCE, SINCE + 499 * MINUTE)
    assert con.execute("SELECT count(*) FROM ingestion_runs").fetchone()[0] == 3
    con.close()
