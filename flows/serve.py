"""Flow `serve`: the long-running serving loop (paper trading by default).

* At most one loop per account: the flow holds the Prefect global concurrency limit
  ``serve-<account>`` (limit 1, created when missing) for its whole run. The slot is a lease
  renewed while the flow is alive; a crashed loop stops renewing and its slot is freed when
  the lease expires (``lease_duration_s``).
* Heartbeats: every ``heartbeat_every`` steps the loop writes
  ``TRADELOOP_HOME/serve/<account>.heartbeat`` (and the flow logs it); Prefect's own flow-run
  heartbeats mark a crashed run.
* Degradation calls ``run_deployment(retrain_deployment)`` (no waiting), at most once per the
  feedback cooldown.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.concurrency.sync import concurrency

from trading.loop import LoopConfig, ServingLoop
from trading.service import serve_replay
from warehouse import get_settings


def ensure_limit(name: str, limit: int = 1) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except Exception:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit)
            )


@flow(name="serve", log_prints=True)
def serve(
    replay: str,
    speed: float | None = None,
    max_candles: int | None = None,
    account: str = "paper",
    retrain_deployment: str = "retrain/retrain",
    heartbeat_every: int = 50,
    lease_duration_s: float = 120.0,
) -> dict[str, Any]:
    logger = get_run_logger()
    settings = get_settings()
    limit_name = f"serve-{account}"
    ensure_limit(limit_name)

    def retrain(reason: str) -> None:
        from prefect.deployments import run_deployment

        logger.warning(f"model degraded ({reason}); starting deployment {retrain_deployment}")
        try:
            run_deployment(retrain_deployment, timeout=0, as_subflow=False)
        except Exception as exc:  # no such deployment here: log, keep serving
            logger.error(f"could not start {retrain_deployment}: {exc}")

    def beat(loop: ServingLoop) -> None:
        logger.info(
            f"heartbeat: {loop.steps} steps, model {loop.manager.active_id}, equity "
            f"{loop.state.portfolio.equity():.2f}"
        )

    with concurrency(limit_name, occupy=1, strict=True, lease_duration=lease_duration_s):
        summary = serve_replay(
            settings,
            replay,
            config=LoopConfig(account=account, model_check_every_steps=60),
            speed=speed,
            max_candles=max_candles,
            on_retrain=retrain,
            heartbeat=beat,
            heartbeat_every=heartbeat_every,
        )
    logger.info(f"served {summary.candles} candles; equity {summary.equity:.2f}")
    return {
        "candles": summary.candles,
        "ticks": summary.ticks,
        "equity": summary.equity,
        "positions": summary.positions,
        "resumed_from_ts_ms": summary.resumed_from_ts_ms,
    }
