"""A collect fanned out over a Dask cluster stores exactly what the thread runner stores."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from flows.collect import collect
from flows.runners import on_runner, task_runner_for
from warehouse import Settings, connect, use_settings

SYMBOLS = [f"SIM{i:02d}/USDT" for i in range(20)]
WINDOW = {"since": "2024-03-01T00:00:00Z", "until": "2024-03-01T12:00:00Z"}  # 720 1m bars

# every stored table a collect writes, with the columns that do not depend on when it ran
CONTENT_SQL = {
    "candles": "SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume "
    "FROM candles ORDER BY exchange, symbol, timeframe, ts",
    "quarantine": "SELECT table_name, exchange, symbol, timeframe, ts, expectation, reason "
    "FROM quarantine ORDER BY ALL",
    "quality_results": "SELECT table_name, suite, exchange, symbol, timeframe, success, rows_in, "
    "rows_merged, rows_quarantined FROM quality_results ORDER BY ALL",
    "ingestion_runs": "SELECT symbol, timeframe, rows_merged, rows_quarantined, status "
    "FROM ingestion_runs ORDER BY symbol, timeframe",
}


def _contents(settings: Settings) -> dict[str, tuple[int, str]]:
    """Per table: (rows, sha256 of every row in key order)."""
    con = connect(settings, read_only=True)
    try:
        out = {}
        for table, sql in CONTENT_SQL.items():
            rows = con.execute(sql).fetchall()
            digest = hashlib.sha256(repr(rows).encode()).hexdigest()
            out[table] = (len(rows), digest)
        return out
    finally:
        con.close()


def test_runner_selection() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert isinstance(task_runner_for(Settings()), ThreadPoolTaskRunner)
    assert task_runner_for(Settings(task_workers=3))._max_workers == 3
    remote = task_runner_for(Settings(task_runner="dask", dask_address="tcp://10.0.0.5:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    local = task_runner_for(Settings(task_runner="dask", task_workers=2))
    assert local.address is None and local.cluster_kwargs["n_workers"] == 2


def test_flows_called_directly_use_a_bounded_thread_pool() -> None:
    """Prefect's default thread runner is unbounded: hundreds of series would all start."""
    from flows.features import features
    from flows.quality import quality
    from flows.runners import DEFAULT_THREADS

    for fl in (collect, quality, features):
        assert fl.task_runner._max_workers == DEFAULT_THREADS, fl.name
        assert on_runner(fl, Settings(task_workers=3)).task_runner._max_workers == 3


@pytest.mark.slow
@pytest.mark.xdist_group("dask")
def test_dask_collect_of_20_symbols_equals_thread_collect(prefect_server, tmp_path: Path) -> None:
    threaded = Settings(home=tmp_path / "threads", task_workers=4)
    dasked = Settings(home=tmp_path / "dask", task_runner="dask", task_workers=2)

    with use_settings(threaded):
        by_threads = on_runner(collect, threaded)(symbols=SYMBOLS, **WINDOW)
    with use_settings(dasked):
        by_dask = on_runner(collect, dasked)(symbols=SYMBOLS, **WINDOW)

    assert by_threads["rows_merged"] == by_dask["rows_merged"] == 20 * 720
    assert by_threads["failed"] == by_dask["failed"] == []
    threads_contents, dask_contents = _contents(threaded), _contents(dasked)
    assert threads_contents["candles"][0] == 20 * 720
    assert threads_contents["ingestion_runs"][0] == 20
    assert dask_contents == threads_contents
