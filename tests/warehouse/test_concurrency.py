"""Many processes share the warehouse: writers, readers, the CLI, and a writer killed mid-batch."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.warehouse.catalogs import worker_env
from tests.warehouse.workers import BATCH_ROWS, batch_starts
from warehouse import Settings, connect, migrate

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("warehouse-processes")


def _spawn(settings: Settings, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.warehouse.workers", *args],
        cwd=ROOT,
        env=worker_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def home(settings: Settings) -> Path:
    con = connect(settings)
    migrate(con)
    con.close()
    return settings.home


def test_four_writers_and_a_reader(home: Path, settings: Settings) -> None:
    seeds, batches = [11, 12, 13, 14], 6
    writers = [_spawn(settings, "write", str(home), str(seed), str(batches)) for seed in seeds]
    reader = _spawn(settings, "read", str(home), "8")
    for writer in writers:
        _, err = writer.communicate(timeout=240)
        assert writer.returncode == 0, err
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, f"the reader failed while others wrote: {err}"
    assert int(out) > 10, "the reader should have completed many queries"

    expected = {
        m for seed in seeds for s in batch_starts(seed, batches) for m in range(s, s + BATCH_ROWS)
    }
    con = connect(settings, read_only=True)
    total, distinct = con.execute("SELECT count(*), count(DISTINCT ts) FROM candles").fetchone()
    assert total == distinct == len(expected)


def test_sql_cli_while_another_process_writes(home: Path, settings: Settings) -> None:
    writer = _spawn(settings, "write", str(home), "7", "10")
    env = worker_env(settings)
    counts = []
    try:
        for _ in range(4):
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "flows.cli",
                    "sql",
                    "SELECT count(*) AS n FROM candles",
                    "--format",
                    "json",
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            counts.append(json.loads(done.stdout)[0]["n"])
    finally:
        _, err = writer.communicate(timeout=240)
    assert writer.returncode == 0, err
    assert counts == sorted(counts), "counts seen by successive readers never go back"


@pytest.mark.parametrize("delay_s", [0.05, 0.25, 0.6])
def test_writer_killed_mid_batch_leaves_all_or_nothing(
    home: Path, settings: Settings, delay_s: float
) -> None:
    rows = 300_000
    writer = _spawn(settings, "big", str(home), str(rows))
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "begin"
    time.sleep(delay_s)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)

    con = connect(settings)  # the warehouse opens afterwards
    present = con.execute("SELECT count(*) FROM candles WHERE exchange = 'killme'").fetchone()[0]
    assert present in (0, rows), f"partial batch visible: {present} of {rows} rows"
    # and it still takes writes
    migrate(con)
    assert con.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] >= 2
