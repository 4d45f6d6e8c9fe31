"""Flow `serve`: the long-running serving loop (paper trading by default).

* At most one loop per account: the flow holds the Prefect global concurrency limit
  ``serve-<account>`` (limit 1, created when missing) for its whole run. The slot is a lease
  renewed while the flow is alive; a crashed loop stops renewing and its slot is freed when
  the lease expires (``lease_duration_s``).
* Heartbeats: every ``heartbeat_every`` steps the loop writes
  ``TRADELOOP_HOME/serve/<account>.heartbeat`` (and the flow logs it); Prefect's own flow-run
  heartbeats mark a crashed run.
* Degradation emits the Prefect event ``tradeloop.model.degraded`` on the resource
  ``tradeloop.model.<model name>`` (related: ``tradeloop.account.<account>``), at most once per
  the feedback cooldown (kept in the loop's snapshot). The ``retrain/daily`` deployment in
  deployments/prefect.yaml has an event trigger on it: the event is the only retrain request.
* Alerts (``flows.alerts``): the kill switch firing or reset, a degradation, stale data and a
  live order in an unknown state each give one notification, carrying the account, symbol,
  model and the run's link (this flow run's page; without Prefect the heartbeat file).
* ``follow_every_s``: a long-running paper loop. After the stored candles the flow reads the
  source's new ones every ``follow_every_s`` seconds and serves them
  (``trading.market.FollowMarket``: the loop stays in process, a poll reads only candles after
  the last one served), until cancelled or ``max_candles`` were served.
  ``tradeloop serve --follow-every 60`` runs it (the ``serve`` service of
  deployments/docker-compose.yml).
* Paper trading by default. ``live=True`` trades on ``settings.exchange`` with real orders
  (``trading.live_broker.CcxtBroker``, sandbox first) and needs ``TRADELOOP_LIVE_TRADING=true``
  too; keys come from the environment or from Prefect Secret blocks named by
  ``api_key_block`` / ``api_secret_block`` (resolved here, never logged).
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, cast

from flows.alerts import alerter, run_link
from flows.orchestration import flow, get_run_logger, in_direct_run
from trading.loop import LoopConfig, RunSummary, ServingLoop
from trading.service import heartbeat_file, require_live_opt_in, serve_live, serve_replay
from warehouse import get_settings

if TYPE_CHECKING:
    from prefect.events import Event

DEGRADED_EVENT = "tradeloop.model.degraded"


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


def _secret(block_name: str) -> str:
    """The value of a Prefect Secret block (never logged)."""
    from prefect.blocks.system import Secret

    block = cast(Secret, Secret.load(block_name))
    return str(block.get())


def emit_degraded(model_name: str, account: str, reason: str) -> Event | None:
    """The event the ``retrain/daily`` deployment's trigger waits for (None: no Prefect API)."""
    from prefect.events import emit_event

    return emit_event(
        DEGRADED_EVENT,
        resource={
            "prefect.resource.id": f"tradeloop.model.{model_name}",
            "prefect.resource.name": model_name,
            "tradeloop.account": account,
        },
        related=[
            {
                "prefect.resource.id": f"tradeloop.account.{account}",
                "prefect.resource.role": "account",
                "prefect.resource.name": account,
            }
        ],
        payload={"reason": reason, "account": account, "model": model_name},
    )


@flow(name="serve", log_prints=True)
def serve(
    replay: str | None = None,
    speed: float | None = None,
    max_candles: int | None = None,
    account: str = "paper",
    heartbeat_every: int = 50,
    lease_duration_s: float = 120.0,
    exchange: str | None = None,
    live: bool = False,
    symbols: list[str] | None = None,
    api_key_block: str | None = None,
    api_secret_block: str | None = None,
    last_candles: int | None = None,
    follow_every_s: float | None = None,
    timeframe: str | None = None,
) -> dict[str, Any]:
    """``exchange`` / ``timeframe``: the series of a warehouse symbol (default
    ``settings.exchange``, 1m); ``last_candles``: replay only a warehouse symbol's latest N
    candles; ``follow_every_s``: keep serving the replay source's new candles, checking every
    that many seconds (a long-running paper loop; stops at ``max_candles`` or when cancelled)."""
    logger = get_run_logger()
    settings = get_settings()
    api_key = api_secret = None
    if live:
        if api_key_block or api_secret_block:
            api_key = _secret(api_key_block) if api_key_block else None
            api_secret = _secret(api_secret_block) if api_secret_block else None
        require_live_opt_in(settings, live=True, api_key=api_key, api_secret=api_secret)
        from trading.live_broker import require_client_id_lookup  # imports ccxt: live only

        require_client_id_lookup(settings.exchange)  # only where a lookup by client id is tested
    elif replay is None:
        raise ValueError("paper trading needs replay (a candle file or a warehouse symbol)")
    limit_name = f"serve-{account}"
    direct = in_direct_run()  # no Prefect API: no account lock, no event (the loop logs both)
    if not direct:
        ensure_limit(limit_name)
    config = LoopConfig.from_settings(
        settings,
        account=account,
        model_check_every_steps=60,
        exchange=exchange or settings.exchange,
    )

    def retrain(reason: str) -> None:
        # The loop's feedback calls this at most once per cooldown; the deployment trigger on
        # the event starts `retrain/daily` (no direct run_deployment: one retrain per event).
        logger.warning(f"model {config.model_name} degraded ({reason}); emitting {DEGRADED_EVENT}")
        if direct:
            return  # the loop already stored the degradation as a `retrain` event
        try:
            emit_degraded(config.model_name, account, reason)
        except Exception as exc:  # no events API here: log, keep serving
            logger.error(f"could not emit {DEGRADED_EVENT}: {exc}")

    # kill switch, degradation, stale data, unknown live orders: one notification per event
    # (Prefect events for the `tradeloop-alerts` automation, else TRADELOOP_ALERT_WEBHOOK_URL)
    alerts = alerter(settings, run_url=run_link(settings, heartbeat_file(settings.home, account)))

    def beat(loop: ServingLoop) -> None:
        logger.info(
            f"heartbeat: {loop.steps} steps, model {loop.manager.active_id}, equity "
            f"{loop.state.portfolio.equity():.2f}"
        )

    summary: RunSummary
    lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if not direct:
        from prefect.concurrency.sync import concurrency

        lock = concurrency(limit_name, occupy=1, strict=True, lease_duration=lease_duration_s)
    with lock:
        if live:
            summary = serve_live(
                settings,
                list(symbols or settings.symbols),
                config=config,
                api_key=api_key,
                api_secret=api_secret,
                max_candles=max_candles,
                on_retrain=retrain,
                heartbeat=beat,
                alerts=alerts,
            )
        else:
            assert replay is not None
            summary = serve_replay(
                settings,
                replay,
                config=config,
                speed=speed,
                max_candles=max_candles,
                on_retrain=retrain,
                heartbeat=beat,
                heartbeat_every=heartbeat_every,
                last_candles=last_candles,
                follow_every_s=follow_every_s,
                sleep=time.sleep,
                timeframe=timeframe,
                alerts=alerts,
            )
    logger.info(f"served {summary.candles} candles; equity {summary.equity:.2f}")
    return {
        "candles": summary.candles,
        "ticks": summary.ticks,
        "equity": summary.equity,
        "positions": summary.positions,
        "resumed_from_ts_ms": summary.resumed_from_ts_ms,
        "candles_dropped": summary.candles_dropped,  # failed the candle checks (data events)
    }
