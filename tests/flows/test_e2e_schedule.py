"""The scheduled deployments run: a Prefect server on PostgreSQL with its scheduler on, every
deployment of deployments/prefect.yaml, a process worker, and the warehouse on a PostgreSQL
DuckLake catalog (the production shape; skipped without TRADELOOP_TEST_PG_URL, failed without
it in CI).

`pipeline/minutely` (cron `* * * * *`) must complete on its schedule at least twice, the second
run collecting only the candles after the last stored one; then `maintain/daily` runs once
through the worker. Every other deployment is paused, so only these run in the window, and the
every-minute pipeline is given one symbol and two timeframes (through the API) so that a run
fits in its minute.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.postgres import fresh_pg_database
from tests.support.prefect_stack import (
    FINAL_STATES,
    Stack,
    deploy_all,
    start_server,
    start_worker,
    stop_all,
    wait_for_runs,
)
from warehouse import Settings, connect

# its own group: the module's stack is built once, on one worker, beside the other e2e stack
pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("e2e-schedule"),
    pytest.mark.timeout(900),
]

SCHEDULED = "pipeline/minutely"
# Over the deployment's own parameters (3 symbols, 4 timeframes): one symbol, 1m and 5m.
SYMBOL = "BTC/USDT"
MINUTELY_PARAMETERS = {"symbols": [SYMBOL], "timeframes": ["1m", "5m"]}


@dataclass
class Scheduled:
    stack: Stack
    settings: Settings
    minutely: list[dict[str, Any]]  # its first two Completed runs
    maintain: dict[str, Any]


def _wait_completed(
    stack: Stack, worker: subprocess.Popen[bytes], deployment_id: str, count: int, timeout_s: float
) -> list[dict[str, Any]]:
    """The first ``count`` Completed runs of a scheduled deployment. A run that would overlap
    the previous one is cancelled by design (CANCEL_NEW) and skipped here; a failed or crashed
    one fails the test."""
    deadline = time.monotonic() + timeout_s
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = stack.post(
            "/flow_runs/filter",
            {
                "flow_runs": {"deployment_id": {"any_": [deployment_id]}},
                "sort": "EXPECTED_START_TIME_ASC",
            },
        )
        final = [r for r in runs if r["state"] and r["state"]["type"] in FINAL_STATES]
        bad = [r for r in final if r["state"]["type"] in ("FAILED", "CRASHED")]
        assert not bad, f"{[r['state'] for r in bad]}\n{stack.log('worker.log')}"
        done = [r for r in final if r["state"]["type"] == "COMPLETED"]
        if len(done) >= count:
            return done[:count]
        if worker.poll() is not None:
            pytest.fail(f"worker exited:\n{stack.log('worker.log')}")
        time.sleep(2)
    states = [(r["name"], (r["state"] or {}).get("type")) for r in runs]
    pytest.fail(f"{SCHEDULED}: not {count} Completed runs in {timeout_s} s: {states}")


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scheduled]:
    root: Path = tmp_path_factory.mktemp("e2e-schedule")
    with (
        fresh_pg_database("tl_sched_prefect") as prefect_db,
        fresh_pg_database("tl_sched_lake") as lake,
    ):
        extra = {
            "PREFECT_API_DATABASE_CONNECTION_URL": prefect_db.replace(
                "postgresql://", "postgresql+asyncpg://", 1
            ),
            "TRADELOOP_CATALOG_URL": lake,
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true",
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
        }
        procs: list[subprocess.Popen[bytes]] = []
        try:
            stack = start_server(root, extra=extra, procs=procs)
            deploy_all(stack)
            flows = {f["id"]: f["name"] for f in stack.post("/flows/filter", {"limit": 50})}
            deployments = {
                f"{flows[d['flow_id']]}/{d['name']}": d
                for d in stack.post("/deployments/filter", {"limit": 50})
            }
            # everything paused (pausing deletes the runs the scheduler made already); the
            # every-minute pipeline resumed on one symbol, so that a run fits in its minute on
            # a loaded 2-core machine
            for deployment in deployments.values():
                stack.post(f"/deployments/{deployment['id']}/pause_deployment", {})
            minutely_id = deployments[SCHEDULED]["id"]
            parameters = deployments[SCHEDULED]["parameters"] | MINUTELY_PARAMETERS
            stack.patch(f"/deployments/{minutely_id}", {"parameters": parameters})
            stack.post(f"/deployments/{minutely_id}/resume_deployment", {})
            worker = start_worker(stack, procs)
            minutely = _wait_completed(stack, worker, minutely_id, 2, 420)
            maintain_id = deployments["maintain/daily"]["id"]
            stack.post(f"/deployments/{maintain_id}/resume_deployment", {})
            created = stack.post(f"/deployments/{maintain_id}/create_flow_run", {})
            [maintain] = wait_for_runs(stack, worker, {"id": {"any_": [created["id"]]}}, 1, 240)
            yield Scheduled(stack, Settings(home=stack.home, catalog_url=lake), minutely, maintain)
        finally:
            stop_all(procs)


def test_minutely_runs_on_its_schedule(scheduled: Scheduled) -> None:
    first, second = scheduled.minutely
    starts = []
    for run in (first, second):
        # created by the scheduler for a minute boundary of the cron, not by hand
        assert run["auto_scheduled"] is True, run
        assert run["parameters"]["symbols"] == MINUTELY_PARAMETERS["symbols"], run["parameters"]
        start = datetime.fromisoformat(run["expected_start_time"])
        assert (start.second, start.microsecond) == (0, 0), start
        starts.append(start)
    assert (starts[1] - starts[0]).total_seconds() % 60 == 0 and starts[1] > starts[0]


def test_the_second_run_collects_only_new_candles(scheduled: Scheduled) -> None:
    con = connect(scheduled.settings, read_only=True)
    try:
        # one statement: the same snapshot for the runs and the table they wrote
        runs = con.execute(
            """
            WITH firsts AS (
                SELECT run_id, min(started_at) AS started FROM ingestion_runs GROUP BY run_id
            ), r AS (
                SELECT i.*, dense_rank() OVER (ORDER BY f.started, run_id) AS n
                FROM ingestion_runs i JOIN firsts f USING (run_id)
            )
            SELECT n, symbol, timeframe, window_start, first_ts, last_ts, rows_merged,
                   (SELECT count(*) FROM candles c
                    WHERE c.symbol = r.symbol AND c.timeframe = r.timeframe) AS stored,
                   (SELECT count(DISTINCT ts) FROM candles c
                    WHERE c.symbol = r.symbol AND c.timeframe = r.timeframe) AS distinct_ts
            FROM r WHERE n <= 2 ORDER BY n, symbol, timeframe
            """
        ).fetchall()
    finally:
        con.close()
    by_run: dict[int, dict[tuple[str, str], tuple[Any, ...]]] = {}
    for n, symbol, tf, *rest in runs:
        by_run.setdefault(int(n), {})[(symbol, tf)] = tuple(rest)
    assert set(by_run) == {1, 2}, runs
    series = set(by_run[1])
    assert series == {(SYMBOL, "1m"), (SYMBOL, "5m")} and set(by_run[2]) == series
    for key in series:
        # every stored row is there once, after both runs
        stored, distinct_ts = by_run[2][key][4:]
        assert stored == distinct_ts, key
    # The collected series: the second run fetched from after the first run's last candle on,
    # and merged only those. (The 5m series is resampled from the 1m candles of the window the
    # widest timeframe aligns, so it recomputes the candles of that window: not checked here.)
    window_2, first_2, last_2, merged_2, _, _ = by_run[2][(SYMBOL, "1m")]
    _, _, last_1, merged_1, _, _ = by_run[1][(SYMBOL, "1m")]
    assert window_2 > last_1, (window_2, last_1)
    assert first_2 is not None and first_2 > last_1, (first_2, last_1)
    # the first run took the whole lookback (0.02 days, about 28 candles); the second exactly
    # the minutes that closed since (the simulated exchange has no gaps)
    assert merged_1 >= 20, merged_1
    assert merged_2 == (last_2 - last_1) // timedelta(minutes=1) >= 1, (merged_2, last_1, last_2)


def test_maintain_runs_once_through_the_worker(scheduled: Scheduled) -> None:
    run = scheduled.maintain
    assert run["state"]["type"] == "COMPLETED"
    artifacts = scheduled.stack.post(
        "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 10}
    )
    assert [a["key"] for a in artifacts] == ["warehouse-maintenance"], artifacts
    assert "snapshots" in str(artifacts[0]["data"])
