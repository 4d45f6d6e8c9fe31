"""End to end: a real Prefect server on loopback, the process work pool, every deployment of
deployments/prefect.yaml, a worker subprocess, one triggered pipeline run; then the warehouse
it filled, and the Prefect UI rendered by headless Chromium.

Everything runs as separate processes, exactly as on a host: `prefect server start`,
`prefect work-pool create`, `prefect deploy`, `prefect worker start`. The test talks to the
server over its REST API only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.models.conftest import TINY
from warehouse import Settings, connect

# The module's stack (server, worker, deploy, one full pipeline run) is built in the first
# test's setup, which pytest-timeout charges to that test: more than the default 300 s.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("e2e-deployment"),
    pytest.mark.timeout(900),
]

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "tradeloop-process"
SYMBOL = "BTC/USDT"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
# Every flow's deployment in deployments/prefect.yaml, as flow/deployment.
DEPLOYED = {
    "pipeline/minutely",
    "pipeline/full",
    "collect/backfill",
    "quality/revalidate",
    "features/rebuild",
    "retrain/daily",
    "maintain/daily",
    "serve/paper",
    "backtest/signals",
    "walk-forward-model/ensemble",
}
UI_PAGE_SIZE = 10  # rows per page of the UI's deployments list (its default)
# One row of the UI's deployments list: the deployment link, then its flow's link.
DEPLOYMENT_ROW = re.compile(
    r'class="deployment-list__deployment"><a href="/deployments/deployment/([0-9a-f-]+)"'
    r'.*?<a href="/flows/flow/([0-9a-f-]+)".*?class="flow-popover__link-name" title="([^"]+)"',
    re.DOTALL,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> bool:
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


@dataclass
class Stack:
    api: str  # http://127.0.0.1:PORT/api
    ui: str  # http://127.0.0.1:PORT
    env: dict[str, str]
    home: Path
    logs: Path
    flow_run: dict[str, Any]

    def get(self, path: str) -> Any:
        r = httpx.get(f"{self.api}{path}", timeout=30)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        r = httpx.post(f"{self.api}{path}", json=body, timeout=30)
        r.raise_for_status()
        return r.json()


def _cli(env: dict[str, str], *args: str, timeout_s: float = 120) -> str:
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


def _wait_healthy(api: str, server: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"prefect server exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"prefect server not healthy after {timeout_s} s:\n{log.read_text()[-3000:]}")


def _pipeline_parameters() -> dict[str, Any]:
    overrides = {
        k: v for k, v in TINY.model_dump(mode="json").items() if k not in ("horizon_bars", "epochs")
    } | {"max_samples": None}
    params: dict[str, Any] = {
        "symbols": [SYMBOL],
        "timeframes": ["1m", "5m"],
        # A fixed window of the simulated exchange: the same candles on every run.
        "until": "2024-03-01T00:00:00",
        "lookback_days": 2.0,
        "build_docs": False,
        "run_retrain": True,
        "epochs": 2,
        "train_overrides": overrides,
    }
    if (REPO / "flows" / "serve.py").exists():
        params["serve_candles"] = 30
    return params


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("e2e")
    logs = root / "logs"
    logs.mkdir()
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TRADELOOP_"))} | {
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_UI_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",
        # Runs come only from this test: no scheduled runs of the every-minute deployment.
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "TRADELOOP_HOME": str(root / "var"),
        "PYTHONPATH": str(REPO),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server_log = logs / "server.log"
        server = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            cwd=root,
            env=env,
            stdout=server_log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(server)
        _wait_healthy(api, server, server_log, timeout_s=120)

        _cli(env, "work-pool", "create", POOL, "--type", "process", "--overwrite")
        _cli(env, "deploy", "--all", "--prefect-file", "deployments/prefect.yaml", timeout_s=180)

        worker_log = logs / "worker.log"
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", POOL, "--limit", "1"],
            cwd=REPO,
            env=env,
            stdout=worker_log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(worker)

        deployment = httpx.get(f"{api}/deployments/name/pipeline/full", timeout=30).json()
        created = httpx.post(
            f"{api}/deployments/{deployment['id']}/create_flow_run",
            json={"parameters": _pipeline_parameters()},
            timeout=30,
        )
        created.raise_for_status()
        run_id = created.json()["id"]

        deadline = time.monotonic() + 240
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()
            if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            if worker.poll() is not None:
                pytest.fail(f"worker exited:\n{worker_log.read_text()[-4000:]}")
            time.sleep(1)
        assert run.get("state", {}).get("type") == "COMPLETED", (
            f"pipeline run ended {run.get('state')}:\n{worker_log.read_text()[-6000:]}"
        )
        yield Stack(api, api.removesuffix("/api"), env, root / "var", logs, run)
    finally:
        killed = [" ".join(map(str, p.args)) for p in reversed(procs) if not _stop(p)]
    assert not killed, f"did not stop on SIGTERM within 30 s (killed): {killed}"


def test_triggered_pipeline_fills_the_warehouse(stack: Stack) -> None:
    # Every flow has a deployment on the process pool.
    deployments = stack.post("/deployments/filter", {"limit": 50})
    names = {f"{d['name']}" for d in deployments}
    assert {"minutely", "full", "backfill", "daily"} <= names
    assert all(d["work_pool_name"] == POOL for d in deployments)
    flows = {f["id"]: f["name"] for f in stack.post("/flows/filter", {"limit": 50})}
    deployed = {f"{flows[d['flow_id']]}/{d['name']}" for d in deployments}
    assert deployed >= DEPLOYED, f"missing deployments: {DEPLOYED - deployed}"

    # The run's subflows ran: collect, quality, features, retrain.
    children = stack.post(
        "/flow_runs/filter",
        {"flow_runs": {"parent_flow_run_id": {"any_": [stack.flow_run["id"]]}}, "limit": 50},
    )
    child_flows = {flows.get(c["flow_id"]) for c in children}
    assert {"collect", "quality", "features", "retrain"} <= child_flows
    assert all(c["state"]["type"] == "COMPLETED" for c in children)

    settings = Settings(home=stack.home)
    con = connect(settings, read_only=True)
    try:
        candles = con.execute(
            "SELECT timeframe, count(*) FROM candles WHERE symbol = ? GROUP BY 1", [SYMBOL]
        ).fetchall()
        features = con.execute(
            "SELECT count(*) FROM features WHERE symbol = ?", [SYMBOL]
        ).fetchone()
        champion = con.execute(
            "SELECT model_id, onnx_path FROM models WHERE status = 'champion'"
        ).fetchall()
        predictions = con.execute(
            "SELECT model_id, count(*) FROM predictions WHERE symbol = ? GROUP BY 1", [SYMBOL]
        ).fetchall()
    finally:
        con.close()
    by_tf = dict(candles)
    assert by_tf.get("1m", 0) >= 1000 and by_tf.get("5m", 0) >= 200, by_tf
    assert features is not None and features[0] >= by_tf["1m"]
    assert len(champion) == 1, "no champion model registered and promoted"
    by_model = dict(predictions)
    assert by_model.get(champion[0][0], 0) > 0, f"the champion predicted nothing: {by_model}"


def _chromium() -> str | None:
    found = (
        os.environ.get("TRADELOOP_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    return found or next((c for c in CHROMIUM_CANDIDATES if Path(c).exists()), None)


def _dump_dom(
    url: str, profile: Path, budget_ms: int = 20000, *, expect: tuple[str, ...] = ()
) -> str:
    """The page's DOM after the single-page app rendered it. The UI fills parts of a page from
    later API calls, which a loaded machine may answer after the virtual-time budget: while a
    fragment in ``expect`` is missing, the page is loaded again (at most 3 times); the caller's
    asserts then judge the last page."""
    page = ""
    for _ in range(3):
        page = _dump_once(url, profile, budget_ms)
        if all(fragment in page for fragment in expect):
            break
    return page


def _dump_once(url: str, profile: Path, budget_ms: int) -> str:
    browser = _chromium()
    if browser is None:
        pytest.fail("chromium is not installed (CI installs it with .ci/setup-chromium.sh)")
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            "--window-size=1400,1000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        start_new_session=True,
    )
    assert done.returncode == 0, f"chromium failed on {url}:\n{done.stderr[-3000:]}"
    return done.stdout


def test_ui_shows_deployments_and_the_run_artifact(stack: Stack, tmp_path: Path) -> None:
    flows = {f["id"]: f["name"] for f in stack.post("/flows/filter", {"limit": 50})}
    deployments = {d["id"]: d for d in stack.post("/deployments/filter", {"limit": 50})}
    qualified = {i: f"{flows[d['flow_id']]}/{d['name']}" for i, d in deployments.items()}

    # Each row links its deployment and names the deployment's own flow (flow/name pairs).
    page = _dump_dom(
        f"{stack.ui}/deployments",
        tmp_path / "profile-deployments",
        expect=(f"{len(deployments)} Deployments",),
    )
    rows = {}
    for dep_id, flow_id, flow_name in DEPLOYMENT_ROW.findall(page):
        assert dep_id in deployments, f"unknown deployment {dep_id} on the deployments page"
        assert flow_id == deployments[dep_id]["flow_id"] and flow_name == flows[flow_id]
        rows[dep_id] = f"{flow_name}/{deployments[dep_id]['name']}"
    assert f"{len(deployments)} Deployments" in page
    # one page shows them all; past that this check would need the UI's pagination
    assert len(deployments) <= UI_PAGE_SIZE, "more deployments than one UI page: paginate here"
    assert set(rows.values()) == set(qualified.values()) >= DEPLOYED, rows

    run = stack.flow_run
    page = _dump_dom(
        f"{stack.ui}/runs/flow-run/{run['id']}",
        tmp_path / "profile-run",
        expect=("Subflow Runs", f'href="/deployments/deployment/{run["deployment_id"]}"'),
    )
    assert run["name"] in page, "the flow run page did not render"
    assert "Completed" in page and "Subflow Runs" in page and "Artifacts" in page
    assert f'href="/deployments/deployment/{run["deployment_id"]}"' in page, (
        "the flow run page does not link its deployment"
    )
    assert qualified[run["deployment_id"]] == "pipeline/full"

    # The artifact's key page: its latest version, linked to the run that created it.
    artifacts = stack.post(
        "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 10}
    )
    summary = next(a for a in artifacts if a["key"] == "pipeline-summary")
    page = _dump_dom(
        f"{stack.ui}/artifacts/key/pipeline-summary",
        tmp_path / "profile-key",
        expect=(
            f'href="/artifacts/artifact/{summary["id"]}"',
            f'href="/runs/flow-run/{run["id"]}"',
        ),
    )
    assert "Artifact: pipeline-summary" in page, "the artifact key page did not render"
    assert f'href="/artifacts/artifact/{summary["id"]}"' in page
    assert f'href="/runs/flow-run/{run["id"]}"' in page and run["name"] in page

    page = _dump_dom(
        f"{stack.ui}/artifacts/artifact/{summary['id']}",
        tmp_path / "profile-art",
        expect=("Pipeline run", f'href="/runs/flow-run/{run["id"]}"'),
    )
    assert "pipeline-summary" in page, "the artifact page did not render"
    assert "Pipeline run" in page, "the artifact's markdown is not on the page"
    assert f'href="/runs/flow-run/{run["id"]}"' in page, "the artifact does not link its run"


def test_parameters_survive_the_round_trip(stack: Stack) -> None:
    # What the worker ran is what we asked for (JSON parameters through the API).
    assert stack.flow_run["parameters"]["symbols"] == [SYMBOL]
    assert json.loads(json.dumps(stack.flow_run["parameters"]["train_overrides"]))[
        "window_len"
    ] == (TINY.window_len)
