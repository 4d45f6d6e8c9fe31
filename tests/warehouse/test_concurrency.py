"""Many processes share the warehouse: writers, readers, the CLI, and a writer killed mid-batch."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.postgres import worker_env
from tests.warehouse.workers import assert_one_writer_per_key, candle_batch
from warehouse import Settings, connect, migrate, upsert

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("warehouse-processes")]


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


def test_four_writers_and_a_reader(home: Path, settings: Settings, tmp_path: Path) -> None:
    seeds, batches = [11, 12, 13, 14], 6
    stop = tmp_path / "stop-reading"
    reader = _spawn(settings, "read", str(home), str(stop))
    # the writers start once the reader has read (a line on its pipe, not a sleep) ...
    assert reader.stdout is not None and reader.stdout.readline().strip() == "reading"
    writers = [_spawn(settings, "write", str(home), str(seed), str(batches)) for seed in seeds]
    for writer in writers:
        _, err = writer.communicate(timeout=240)
        assert writer.returncode == 0, err
    # ... and it stops once they are all done: its reads span every write
    stop.touch()
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, f"the reader failed while others wrote: {err}"
    reads, last_count = map(int, out.split())
    assert reads >= 2
    assert_one_writer_per_key(settings, seeds, batches)
    con = connect(settings, read_only=True)
    try:
        # its last read saw every committed row
        assert con.execute("SELECT count(*) FROM candles").fetchone() == (last_count,)
    finally:
        con.close()


def test_sql_cli_while_another_process_writes(home: Path, settings: Settings) -> None:
    writer = _spawn(settings, "write", str(home), "7", "100")
    env = worker_env(settings)
    counts: list[int] = []
    try:
        while writer.poll() is None and len(counts) < 12:  # each read starts during the writes
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
    assert len(counts) >= 2, f"the writer finished before the CLI read twice: {counts}"
    assert len(set(counts)) > 1, f"every read saw the same state, none between commits: {counts}"
    assert counts == sorted(counts), "counts seen by successive readers never go back"


KILL_SEED = 20261202


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_writer_killed_at_a_random_moment_leaves_all_or_nothing(
    home: Path, settings: Settings
) -> None:
    """Unlike the paused cases below, the kill lands wherever the writer is (INSERT, Parquet
    writes, COMMIT, or after it): whatever it hits, the batch is wholly there or wholly absent."""
    rows = 50_000
    # a seeded moment (the upsert of 50k rows takes about 1.5 s): a failure names its delay
    delay = random.Random(KILL_SEED).uniform(0.0, 1.5)
    writer = _spawn(settings, "big", str(home), str(rows))
    assert writer.stdout is not None
    try:
        assert writer.stdout.readline().strip() == "begin"
        time.sleep(delay)
    finally:
        _kill(writer)
    con = connect(settings)
    present = con.execute("SELECT count(*) FROM candles WHERE exchange = 'killme'").fetchone()[0]
    con.close()
    assert present in (0, rows), (
        f"{present} of {rows} rows: a partial batch survived the kill after {delay:.3f} s"
    )
    if writer.returncode != -signal.SIGKILL:  # it finished first: then all of it is there
        assert writer.returncode == 0 and present == rows


@pytest.mark.parametrize("pause", ["before-commit", "after-commit"])
def test_writer_killed_mid_batch_leaves_all_or_nothing(
    home: Path, settings: Settings, pause: str
) -> None:
    rows = 50_000
    writer = _spawn(settings, "big", str(home), str(rows), pause)
    assert writer.stdout is not None
    try:
        assert writer.stdout.readline().strip() == "begin"
        if pause == "before-commit":
            # the worker stopped inside upsert's transaction: the INSERT is done, COMMIT is next
            line = writer.stdout.readline().strip()
            if line != f"inserted {rows}":
                _kill(writer)
                pytest.fail(f"the worker said {line!r}: {writer.stderr and writer.stderr.read()}")
            # nothing of the open transaction is visible to others
            con = connect(settings, read_only=True)
            seen = con.execute("SELECT count(*) FROM candles WHERE exchange = 'killme'")
            assert seen.fetchone() == (0,)
            con.close()
        else:
            assert writer.stdout.readline().strip() == "committed"
    finally:
        _kill(writer)
    assert writer.returncode == -signal.SIGKILL

    con = connect(settings)  # the warehouse opens afterwards
    present = con.execute("SELECT count(*) FROM candles WHERE exchange = 'killme'").fetchone()[0]
    assert present == (0 if pause == "before-commit" else rows), f"{present} of {rows} rows"
    # and it still takes writes, the killed batch included
    result = upsert(con, "candles", candle_batch(list(range(rows)), exchange="killme"))
    assert result.inserted == rows - present and result.unchanged == present
    assert con.execute("SELECT count(*) FROM candles WHERE exchange = 'killme'").fetchone() == (
        rows,
    )
    con.close()
