"""Two processes write to a warehouse on the PostgreSQL catalog at the same time: nothing lost."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import catalog_settings, worker_env
from tests.warehouse.workers import assert_one_writer_per_key
from warehouse import Settings, connect, migrate

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("warehouse-processes")]


@pytest.fixture
def pg_settings(tmp_path: Path) -> Iterator[Settings]:
    with catalog_settings("postgres", tmp_path / "home") as settings:
        con = connect(settings)
        migrate(con)
        con.close()
        yield settings


def test_two_processes_on_postgres_write_at_once_and_nothing_is_lost(
    pg_settings: Settings,
) -> None:
    assert pg_settings.catalog_kind == "postgres"
    seeds, batches = [21, 22], 8
    writers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.warehouse.workers", "write"]
            + [str(pg_settings.home), str(seed), str(batches)],
            cwd=ROOT,
            env=worker_env(pg_settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in seeds
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=240)
        assert writer.returncode == 0, err

    # the writers' batches overlap, with different values: every key once, whole, from one writer
    assert_one_writer_per_key(pg_settings, seeds, batches)
    con = connect(pg_settings, read_only=True)
    # both processes' commits are snapshots in the PostgreSQL catalog
    commits = con.execute(
        "SELECT count(*) FROM lake.snapshots() WHERE changes['tables_inserted_into'] IS NOT NULL"
    ).fetchone()[0]
    assert commits >= 2
