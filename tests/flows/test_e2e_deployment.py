"""End to end: a real Prefect server on loopback, the process work pool, every deployment of
deployments/prefect.yaml, a worker subprocess, one triggered pipeline run; then the warehouse
it filled, the retrain that the serving loop's degradation started through the deployment's
event trigger, and the Prefect UI rendered by headless Chromium.

The stack is built in two shapes:
* ``sqlite``: a SQLite DuckLake catalog and a SQLite Prefect server (a laptop);
* ``postgres``: the production shape of deployments/docker-compose.yml, a PostgreSQL DuckLake
  catalog and a Prefect server whose database is PostgreSQL (two fresh databases on the
  cluster named by TRADELOOP_TEST_PG_URL; skipped without it, failed without it in CI).

Everything runs as separate processes, exactly as on a host: `prefect server start`,
`prefect work-pool create`, `prefect deploy`, `prefect worker start`. The test talks to the
server over its REST API only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.models import TINY
from tests.support.postgres import fresh_pg_database
from tests.support.prefect_stack import (
    POOL,
    Stack,
    deploy_all,
    start_server,
    start_worker,
    stop_all,
    wait_for_runs,
)
from tests.support.webhook import WebhookReceiver
from warehouse import Settings, connect

# The module's stack (server, worker, deploy, one full pipeline run and the retrain it
# triggers) is built in the first test's setup, which pytest-timeout charges to that test.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("e2e-deployment"),
    pytest.mark.timeout(900),
]

SYMBOL = "BTC/USDT"
SHAPES = ("sqlite", "postgres")
# The pipeline's fixed window of the simulated exchange: 2 days up to `until`, every minute.
LOOKBACK_DAYS = 2
EXPECTED_CANDLES = {"1m": LOOKBACK_DAYS * 24 * 60, "5m": LOOKBACK_DAYS * 24 * 12}
# The candles `serve/paper` replays after the pipeline. On this window of a random walk the
# first model's rolling accuracy falls below 0.45 (about 0.26 when it predicts `hold`) for 20
# resolutions once 50 resolved, so the loop reports a degradation within these candles.
SERVE_CANDLES = 240
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
TRADELOOP = str(Path(sys.executable).with_name("tradeloop"))
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def _train_overrides() -> dict[str, Any]:
    return {
        k: v for k, v in TINY.model_dump(mode="json").items() if k not in ("horizon_bars", "epochs")
    } | {"max_samples": None}


def _pipeline_parameters() -> dict[str, Any]:
    return {
        "symbols": [SYMBOL],
        "timeframes": ["1m", "5m"],
        # A fixed window of the simulated exchange: the same candles on every run.
        "until": "2024-03-01T00:00:00",
        "lookback_days": float(LOOKBACK_DAYS),
        "build_docs": False,
        "run_retrain": True,
        "epochs": 2,
        "train_overrides": _train_overrides(),
        "serve_candles": 0,
    }


# The long-running `serve/paper` deployment as a bounded replay: the stored 1m candles of the
# window's end, then it stops (no following).
SERVE_PARAMETERS: dict[str, Any] = {
    "replay": SYMBOL,
    "exchange": "simulated",
    "timeframe": "1m",
    "last_candles": SERVE_CANDLES,
    "max_candles": SERVE_CANDLES,
    "follow_every_s": None,
    "account": "paper",
}


# What `retrain/daily` runs with when its trigger fires in this test: the tiny model on the
# stored symbol (the deployment's own defaults train 3 symbols for 10 epochs). One epoch, not
# the pipeline's two: a different file, so the registry records a new challenger (the same
# file registered twice is the same model).
RETRAIN_PARAMETERS: dict[str, Any] = {
    "symbols": [SYMBOL],
    "timeframe": "1m",
    "days": 30,
    "horizon": 5,
    "epochs": 1,
    "name": "signal",
    "train_overrides": _train_overrides(),
}


@dataclass
class E2E:
    shape: str
    stack: Stack
    settings: Settings  # the warehouse the worker's flows wrote
    flow_run: dict[str, Any]  # the pipeline/full run
    promoted_by_rule: bool  # the promotion rule promoted the pipeline's model (else by hand)
    serve_run: dict[str, Any]  # the serve/paper run
    retrain_run: dict[str, Any]  # the retrain/daily run the degradation event started


@contextlib.contextmanager
def _shape_env(shape: str) -> Iterator[tuple[dict[str, str], str | None]]:
    """(extra environment for server and worker, the lake's catalog URL) of one shape."""
    if shape == "sqlite":
        yield {}, None
        return
    with (
        fresh_pg_database("tl_e2e_prefect") as prefect_db,
        fresh_pg_database("tl_e2e_lake") as lake,
    ):
        asyncpg_url = prefect_db.replace("postgresql://", "postgresql+asyncpg://", 1)
        yield (
            {
                "PREFECT_API_DATABASE_CONNECTION_URL": asyncpg_url,
                "TRADELOOP_CATALOG_URL": lake,
            },
            lake,
        )


@pytest.fixture(scope="module", params=SHAPES)
def e2e(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    alert_hook: WebhookReceiver,
) -> Iterator[E2E]:
    shape = str(request.param)
    root = tmp_path_factory.mktemp(f"e2e-{shape}")
    with _shape_env(shape) as (extra, catalog_url):
        procs: list[subprocess.Popen[bytes]] = []
        try:
            stack = start_server(root, extra=extra, procs=procs)
            deploy_all(stack)
            _setup_alerts(stack, alert_hook)  # alerts (issue 17): see test_alerts_... below
            retrain = stack.get("/deployments/name/retrain/daily")
            stack.patch(f"/deployments/{retrain['id']}", {"parameters": RETRAIN_PARAMETERS})
            worker = start_worker(stack, procs)

            pipeline = stack.get("/deployments/name/pipeline/full")
            run_id = stack.post(
                f"/deployments/{pipeline['id']}/create_flow_run",
                {"parameters": _pipeline_parameters()},
            )["id"]
            [flow_run] = wait_for_runs(stack, worker, {"id": {"any_": [run_id]}}, 1, 420)
            settings = Settings(home=stack.home, catalog_url=catalog_url)
            promoted_by_rule = _champion_by_hand(stack, settings)

            paper = stack.get("/deployments/name/serve/paper")
            serve_id = stack.post(
                f"/deployments/{paper['id']}/create_flow_run", {"parameters": SERVE_PARAMETERS}
            )["id"]
            [serve_run] = wait_for_runs(stack, worker, {"id": {"any_": [serve_id]}}, 1, 300)
            # The loop degraded and emitted the event; the trigger's retrain runs after the
            # serve run (the worker takes one run at a time).
            [retrain_run] = wait_for_runs(
                stack, worker, {"deployment_id": {"any_": [retrain["id"]]}}, 1, 300
            )
            yield E2E(shape, stack, settings, flow_run, promoted_by_rule, serve_run, retrain_run)
        finally:
            stop_all(procs)


def _champion_by_hand(stack: Stack, settings: Settings) -> bool:
    """Make the pipeline's model the champion, as an operator would; True when the promotion
    rule had already promoted it. On a random walk a model has no edge, so the rule (log-loss
    below the training frequencies' over purged folds) refuses it about as often as not."""
    con = connect(settings, read_only=True)
    try:
        [(model_id, status)] = con.execute("SELECT model_id, status FROM models").fetchall()
    finally:
        con.close()
    if status == "champion":
        return True
    env = {k: v for k, v in stack.env.items() if k != "PREFECT_API_URL"}
    done = subprocess.run(
        [TRADELOOP, "models", "promote", model_id, "--force"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return False


def _flow_names(stack: Stack) -> dict[str, str]:
    return {f["id"]: f["name"] for f in stack.post("/flows/filter", {"limit": 50})}


def test_triggered_pipeline_fills_the_warehouse(e2e: E2E) -> None:
    stack = e2e.stack
    # Every flow has a deployment on the process pool.
    deployments = stack.post("/deployments/filter", {"limit": 50})
    assert all(d["work_pool_name"] == POOL for d in deployments)
    flows = _flow_names(stack)
    deployed = {f"{flows[d['flow_id']]}/{d['name']}" for d in deployments}
    assert deployed >= DEPLOYED, f"missing deployments: {DEPLOYED - deployed}"

    # The run's subflows ran, each one Completed; then the serve/paper deployment.
    children = stack.post(
        "/flow_runs/filter",
        {"flow_runs": {"parent_flow_run_id": {"any_": [e2e.flow_run["id"]]}}, "limit": 50},
    )
    states = {flows[c["flow_id"]]: c["state"]["type"] for c in children}
    assert states == dict.fromkeys(("collect", "quality", "features", "retrain"), "COMPLETED")
    assert e2e.serve_run["state"]["type"] == "COMPLETED"
    assert flows[e2e.serve_run["flow_id"]] == "serve"
    sent = {k: e2e.serve_run["parameters"].get(k) for k in SERVE_PARAMETERS}
    assert sent == SERVE_PARAMETERS

    con = connect(e2e.settings, read_only=True)
    try:
        candles = dict(
            con.execute(
                "SELECT timeframe, count(*) FROM candles WHERE symbol = ? GROUP BY 1", [SYMBOL]
            ).fetchall()
        )
        features = dict(
            con.execute(
                "SELECT timeframe, count(*) FROM features WHERE symbol = ? GROUP BY 1", [SYMBOL]
            ).fetchall()
        )
        quality = con.execute(
            "SELECT timeframe, count(*), bool_and(success), min(rows_in), max(rows_in) "
            "FROM quality_results WHERE symbol = ? GROUP BY 1 ORDER BY 1",
            [SYMBOL],
        ).fetchall()
        models = con.execute(
            "SELECT model_id, status, onnx_path, onnx_sha256 FROM models ORDER BY version"
        ).fetchall()
        promoted = con.execute(
            "SELECT model_id FROM model_promotions WHERE action = 'promote' ORDER BY event_at"
        ).fetchall()
        predictions = dict(
            con.execute(
                "SELECT model_id, count(*) FROM predictions WHERE symbol = ? GROUP BY 1", [SYMBOL]
            ).fetchall()
        )
    finally:
        con.close()
    # The window is fixed: exact counts. Each series was gated twice (on collect, and by the
    # quality flow), always on all of its rows.
    assert candles == EXPECTED_CANDLES, candles
    assert features == EXPECTED_CANDLES, features
    assert quality == [(tf, 2, True, n, n) for tf, n in sorted(EXPECTED_CANDLES.items())]

    # One champion at a time, whose file is the registered one and loads in ONNX Runtime.
    champions = [m for m in models if m[1] == "champion"]
    assert len(champions) == 1, models
    for model_id, _, onnx_path, sha256 in models:
        _assert_onnx(model_id, Path(onnx_path), sha256)
    # The pipeline's model was promoted (by the rule or by hand) before serve/paper ran, and
    # made every prediction of the served candles (the triggered retrain's model came after).
    first = models[0][0]
    assert promoted[0] == (first,), (promoted, e2e.promoted_by_rule)
    assert predictions == {first: SERVE_CANDLES}, predictions


def _assert_onnx(model_id: str, path: Path, sha256: str) -> None:
    import onnxruntime as ort

    assert path.is_file(), f"{model_id}: {path} is missing"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256, f"{model_id}: sha256 differs"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities", "confidence"]


def test_degradation_starts_a_retrain_through_the_deployment_trigger(e2e: E2E) -> None:
    """The serve/paper loop's degradation -> the event `tradeloop.model.degraded` -> the trigger of
    `retrain/daily` in prefect.yaml -> a retrain run on the worker -> a new model registered."""
    stack = e2e.stack
    events = stack.post(
        "/events/filter",
        {"filter": {"event": {"name": ["tradeloop.model.degraded"]}}, "limit": 10},
    )["events"]
    assert len(events) == 1, events
    assert events[0]["resource"]["prefect.resource.id"] == "tradeloop.model.signal"
    assert events[0]["payload"]["reason"].startswith("rolling accuracy")

    run = e2e.retrain_run
    # started by the deployment's automation, not by this test or a schedule
    assert (run["created_by"] or {}).get("type") == "AUTOMATION", run["created_by"]
    assert run["parameters"] == RETRAIN_PARAMETERS
    assert run["state"]["type"] == "COMPLETED"

    con = connect(e2e.settings, read_only=True)
    try:
        models = con.execute("SELECT model_id, status FROM models ORDER BY version").fetchall()
    finally:
        con.close()
    # the pipeline's model, then the challenger the triggered retrain registered (promoted or
    # not, by the promotion rule)
    assert len(models) == 2 and models[1][1] in ("challenger", "champion"), models


# ---------------------------------------------------------------- alerts (issue 17, item 6)
# `tradeloop alerts setup` on the stack: the automation `tradeloop-alerts` posts every
# `tradeloop.alert.*` event the worker's flows emit to a loopback webhook receiver.


@pytest.fixture(scope="module")
def alert_hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


def _setup_alerts(stack: Stack, hook: WebhookReceiver) -> None:
    hook.received.clear()  # this shape's alerts only
    env = stack.env | {"TRADELOOP_ALERT_WEBHOOK_URL": hook.url}
    done = subprocess.run(
        [TRADELOOP, "alerts", "setup"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_alerts_reach_the_webhook_once_per_event(e2e: E2E, alert_hook: WebhookReceiver) -> None:
    """Each kill switch firing and degradation the serve/paper loop stored, and each retrain's
    promotion decision (the pipeline's, then the triggered one), is exactly one alert, with the
    account, model and its flow run's page in the Prefect UI."""
    con = connect(e2e.settings, read_only=True)
    try:
        [(kills, degradations)] = con.execute(
            "SELECT count(*) FILTER (message LIKE 'kill switch fired%'), "
            "count(*) FILTER (kind = 'retrain') FROM loop_events WHERE account = 'paper'"
        ).fetchall()
        rows = con.execute("SELECT model_id FROM models ORDER BY version").fetchall()
        models = [str(m) for (m,) in rows]
    finally:
        con.close()
    expected = {"kill_fired": kills, "degraded": degradations, "promotion": len(models)}
    assert degradations == 1 and len(models) == 2, (degradations, models)

    def kinds(got: list[dict[str, Any]]) -> dict[str, int]:
        counts = {k: 0 for k in expected}
        for p in got:
            kind = "promotion" if p["kind"] in ("promoted", "refused") else p["kind"]
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    alert_hook.wait_for(lambda got: kinds(got) == expected, timeout_s=120)
    time.sleep(3.0)  # a second delivery of any of them would have arrived by now
    got = alert_hook.payloads()
    assert kinds(got) == expected, got

    serve_page = f"{e2e.stack.ui}/runs/flow-run/{e2e.serve_run['id']}"
    for p in got:
        if p["kind"] in ("kill_fired", "degraded"):
            assert (p["account"], p["model"], p["run_url"]) == ("paper", models[0], serve_page)
            assert p["symbol"] in (None, SYMBOL)  # the accuracy kill is the account's
    by_model = {p["model"]: p for p in got if p["kind"] in ("promoted", "refused")}
    assert sorted(by_model) == sorted(models)
    triggered = by_model[models[1]]
    assert triggered["run_url"] == f"{e2e.stack.ui}/runs/flow-run/{e2e.retrain_run['id']}"
    for p in by_model.values():
        assert p["symbol"] == SYMBOL and p["message"].startswith("retrain of signal: model")


def test_parameters_survive_the_round_trip(e2e: E2E) -> None:
    # What the worker ran is what we asked for, and the parent flow handed the training
    # overrides on to its retrain subflow unchanged (as stored by the server for that run).
    # (the server merges in the deployment's other defaults)
    sent = _pipeline_parameters()
    assert {k: e2e.flow_run["parameters"].get(k) for k in sent} == sent
    flows = _flow_names(e2e.stack)
    children = e2e.stack.post(
        "/flow_runs/filter",
        {"flow_runs": {"parent_flow_run_id": {"any_": [e2e.flow_run["id"]]}}, "limit": 50},
    )
    retrain = next(c for c in children if flows[c["flow_id"]] == "retrain")
    assert retrain["parameters"]["train_overrides"] == _train_overrides()
    assert retrain["parameters"]["epochs"] == 2


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
    fragment in ``expect`` is missing, the page is loaded again with a longer budget (at most 5
    times); the caller's asserts then judge the last page."""
    page = ""
    for attempt in range(1, 6):
        page = _dump_once(url, profile, budget_ms * attempt)
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
        timeout=180,
        start_new_session=True,
    )
    assert done.returncode == 0, f"chromium failed on {url}:\n{done.stderr[-3000:]}"
    return done.stdout


def test_ui_shows_deployments_and_the_run_artifact(e2e: E2E, tmp_path: Path) -> None:
    stack = e2e.stack
    flows = _flow_names(stack)
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
    # the first page lists a full page (or all of them), each row a real flow/deployment pair
    assert len(rows) == min(len(deployments), UI_PAGE_SIZE), rows
    assert set(rows.values()) <= set(qualified.values()), rows

    run = e2e.flow_run
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
