"""A Prefect stack as on a host, for the end-to-end tests: `prefect server start` on a
loopback port, `prefect worker start` on the process pool, and the `prefect` CLI, each a
separate process; the tests talk to the server over its REST API only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "tradeloop-process"
FINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> bool:
    """SIGTERM the process group we started, SIGKILL it if it does not go; True when it
    stopped on SIGTERM (or had already exited)."""
    if proc.poll() is not None:
        return True
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        return False


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop what a fixture started, newest first; fail if one needed SIGKILL."""
    killed = [" ".join(map(str, p.args)) for p in reversed(procs) if not stop(p)]
    procs.clear()
    assert not killed, f"did not stop on SIGTERM within 30 s (killed): {killed}"


@dataclass
class Stack:
    api: str  # http://127.0.0.1:PORT/api
    ui: str  # http://127.0.0.1:PORT
    env: dict[str, str]  # the environment of server, worker and CLI
    root: Path
    home: Path  # TRADELOOP_HOME of the worker's flow runs
    logs: Path

    def get(self, path: str) -> Any:
        r = _request("GET", f"{self.api}{path}")
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        r = _request("POST", f"{self.api}{path}", body)
        return r.json() if r.content else None

    def patch(self, path: str, body: dict[str, Any]) -> None:
        _request("PATCH", f"{self.api}{path}", body)

    def log(self, name: str, chars: int = 6000) -> str:
        path = self.logs / name
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


RETRYABLE_STATUS = (502, 503)  # what Prefect's own client retries; 503: the database was busy


def _request(method: str, url: str, body: dict[str, Any] | None = None) -> httpx.Response:
    """One API call, retried as Prefect's client retries: the server answers 503 when its
    database is briefly unavailable (a locked SQLite file on a loaded machine), and that
    request changed nothing."""
    for attempt in range(6):
        r = httpx.request(method, url, json=body, timeout=30)
        if r.status_code not in RETRYABLE_STATUS or attempt == 5:
            break
        time.sleep(0.5 * 2**attempt)
    r.raise_for_status()
    return r


def stack_env(root: Path, port: int, extra: Mapping[str, str] = {}) -> dict[str, str]:
    """A clean environment: nothing of the caller's PREFECT_* / TRADELOOP_* / CI settings."""
    api = f"http://127.0.0.1:{port}/api"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TRADELOOP_"))}
    return (
        base
        | {
            "PREFECT_HOME": str(root / "prefect"),
            "PREFECT_API_URL": api,
            "PREFECT_UI_API_URL": api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_LOGGING_LEVEL": "INFO",
            # Runs come only from the test: no scheduled runs of the every-minute deployment
            # unless a test turns the scheduler on (``extra``).
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "TRADELOOP_HOME": str(root / "var"),
            "PYTHONPATH": str(REPO),
        }
        | dict(extra)
    )


def wait_healthy(stack: Stack, server: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"prefect server exited ({server.returncode}):\n{stack.log('server.log')}")
        try:
            if httpx.get(f"{stack.api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"prefect server not healthy after {timeout_s} s:\n{stack.log('server.log')}")


def start_server(
    root: Path,
    *,
    procs: list[subprocess.Popen[bytes]],
    extra: Mapping[str, str] = {},
    port: int | None = None,
    log_name: str = "server.log",
) -> Stack:
    """`prefect server start` on loopback; returns once /health answers."""
    port = port or free_port()
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = stack_env(root, port, extra)
    api = env["PREFECT_API_URL"]
    stack = Stack(api, api.removesuffix("/api"), env, root, root / "var", logs)
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        cwd=root,
        env=env,
        stdout=(logs / log_name).open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    procs.append(server)
    wait_healthy(stack, server, timeout_s=180)
    return stack


def start_worker(
    stack: Stack, procs: list[subprocess.Popen[bytes]], log_name: str = "worker.log"
) -> subprocess.Popen[bytes]:
    """A process worker on the pool, one flow run at a time."""
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", POOL, "--limit", "1"],
        cwd=REPO,
        env=stack.env,
        stdout=(stack.logs / log_name).open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    procs.append(worker)
    return worker


def prefect_cli(env: dict[str, str], *args: str, timeout_s: float = 120) -> str:
    done = subprocess.run(
        [PREFECT, "--no-prompt", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def deploy_all(stack: Stack) -> None:
    """The work pool and every deployment of deployments/prefect.yaml, as `make deploy`."""
    prefect_cli(stack.env, "work-pool", "create", POOL, "--type", "process", "--overwrite")
    prefect_cli(
        stack.env, "deploy", "--all", "--prefect-file", "deployments/prefect.yaml", timeout_s=600
    )


def wait_for_runs(
    stack: Stack,
    worker: subprocess.Popen[bytes],
    flow_runs: dict[str, Any],
    count: int,
    timeout_s: float,
) -> list[dict[str, Any]]:
    """Wait until ``count`` flow runs matching the API filter ``flow_runs`` reached a final
    state; fail unless each of them Completed. Oldest first."""
    deadline = time.monotonic() + timeout_s
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = stack.post(
            "/flow_runs/filter", {"flow_runs": flow_runs, "sort": "EXPECTED_START_TIME_ASC"}
        )
        done = [r for r in runs if r["state"] and r["state"]["type"] in FINAL_STATES]
        if len(done) >= count:
            bad = [r for r in done if r["state"]["type"] != "COMPLETED"]
            assert not bad, (
                f"runs ended {[(r['name'], r['state']['type']) for r in bad]}:\n"
                f"{stack.log('worker.log')}"
            )
            return done[:count]
        if worker.poll() is not None:
            pytest.fail(f"worker exited ({worker.returncode}):\n{stack.log('worker.log')}")
        time.sleep(1)
    states = [(r["name"], (r["state"] or {}).get("type")) for r in runs]
    pytest.fail(
        f"{count} run(s) matching {flow_runs} not done after {timeout_s} s: {states}\n"
        f"{stack.log('worker.log')}"
    )
