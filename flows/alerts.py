"""Alerts through Prefect when there is one, straight to the webhook when there is not.

``alerter(settings, run_url=...)`` picks ONE route per run (so an event never gives two
notifications):

* a Prefect API is configured and this is a flow run (not ``direct_run``): each alert is the
  Prefect event ``tradeloop.alert.<kind>`` (payload: the alert's JSON, ``Alert.payload``); the
  automation ``tradeloop-alerts`` that ``setup_alerts`` creates (``tradeloop alerts setup``)
  sends it through a notification block: by default the Custom Webhook block
  ``tradeloop-alerts`` (POSTs the same JSON to ``TRADELOOP_ALERT_WEBHOOK_URL``), or any
  notification block named with ``--block`` (Slack, e-mail, ...: a readable text body);
* otherwise, with ``TRADELOOP_ALERT_WEBHOOK_URL`` set: ``trading.alerts.WebhookSink`` POSTs it;
* otherwise: no alerter (the events are still logged and stored in ``loop_events``).

``run_link`` is the link each alert carries: the flow run's page in the Prefect UI, or without
Prefect the run's local record (the serving loop's heartbeat file, the quality report, the
model's file) as a ``file://`` URI, or under ``TRADELOOP_REPORTS_URL`` for a report.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

from flows.orchestration import api_configured, in_direct_run
from trading.alerts import Alert, Alerter, AlertSink, WebhookSink
from warehouse import Settings

log = logging.getLogger("tradeloop.alerts")

AUTOMATION_NAME = "tradeloop-alerts"
WEBHOOK_BLOCK_NAME = "tradeloop-alerts"
EVENT_PATTERN = "tradeloop.alert.*"
# the Custom Webhook block posts this body as is: the alert's JSON, as without Prefect
JSON_BODY = "{{ event.payload | tojson }}"
# any other notification block (Slack, e-mail, ...): a text a person reads
TEXT_BODY = (
    "{{ event.payload.message }}\n"
    "account: {{ event.payload.account }}, symbol: {{ event.payload.symbol }}, "
    "model: {{ event.payload.model }}\n"
    "at {{ event.payload.ts }}; run: {{ event.payload.run_url }}"
)
SUBJECT = "{{ event.payload.title }}"
_NAMESPACE = uuid.UUID("5f1b9c3e-8d2a-4b7e-9f10-7a2c4d6e8b01")  # alert id -> Prefect event id


def _use_prefect() -> bool:
    return not in_direct_run() and api_configured()


def run_link(settings: Settings, local: Path | None = None) -> str | None:
    """The current flow run's page in the Prefect UI; without one, ``local`` (the run's own
    record) as a link a browser opens (``Settings.report_link``)."""
    if _use_prefect():
        from prefect.runtime import flow_run
        from prefect.settings import PREFECT_UI_URL

        run_id = flow_run.get_id()
        ui = PREFECT_UI_URL.value()
        if run_id and ui:
            return f"{str(ui).rstrip('/')}/runs/flow-run/{run_id}"
    return settings.report_link(local) if local is not None else None


class PrefectEventSink:
    """Each alert as the Prefect event ``tradeloop.alert.<kind>`` (see the module docs). Its
    event id is derived from the alert's id, so a repeat is the same event. When the events
    client is not available (``emit_event`` returns None), ``fallback`` delivers it."""

    def __init__(self, fallback: AlertSink | None = None) -> None:
        self.fallback = fallback
        self.emitted = 0

    def send(self, alert: Alert) -> None:
        from prefect.events import emit_event

        related = [
            {
                "prefect.resource.id": f"tradeloop.{role}.{value}",
                "prefect.resource.role": role,
                "prefect.resource.name": value,
            }
            for role, value in (
                ("account", alert.account),
                ("symbol", alert.symbol),
                ("model", alert.model),
            )
            if value
        ]
        try:
            event = emit_event(
                alert.event_name,
                resource={
                    "prefect.resource.id": f"tradeloop.alert.{alert.id}",
                    "prefect.resource.name": alert.title,
                },
                related=related,
                payload=alert.payload(),
                id=uuid.uuid5(_NAMESPACE, alert.id),
            )
        except Exception:  # noqa: BLE001 - no events API: the fallback, else logged
            log.exception("alert %s: the Prefect event could not be emitted", alert.id)
            event = None
        if event is not None:
            self.emitted += 1
        elif self.fallback is not None:
            self.fallback.send(alert)

    def close(self, timeout_s: float = 10.0) -> None:
        """Outside a flow run, wait for the events client to send what it queued (a flow run's
        engine does that itself when the run ends)."""
        from prefect.context import FlowRunContext
        from prefect.events.worker import EventsWorker

        if self.emitted and FlowRunContext.get() is None:
            try:
                EventsWorker.drain_all(timeout=timeout_s)
            except Exception:  # noqa: BLE001
                log.exception("alerts: the Prefect events client did not drain")
        if self.fallback is not None:
            self.fallback.close(timeout_s)


def _webhook(settings: Settings) -> WebhookSink | None:
    url = settings.alert_webhook_url
    return WebhookSink(url.get_secret_value()) if url is not None else None


def alerter(settings: Settings, *, run_url: str | None = None) -> Alerter | None:
    """The run's alerter: Prefect events in a flow run with an API, else the webhook, else None
    (see the module docs)."""
    webhook = _webhook(settings)
    if _use_prefect():
        return Alerter(PrefectEventSink(fallback=webhook), run_url=run_url)
    return Alerter(webhook, run_url=run_url) if webhook is not None else None


# ---------------------------------------------------------------- alerts raised by flows


def promotion_alert(
    settings: Settings,
    *,
    model_id: str,
    promoted: bool,
    reason: str,
    name: str,
    previous_champion_id: str | None,
    model_file: Path | None,
    symbols: Sequence[str] = (),
) -> Alert | None:
    """One alert for a retrain's promotion decision: ``promoted`` or ``refused`` (with the
    rule's reason). Its link: the flow run's page, or without Prefect the model's file."""
    sender = alerter(settings, run_url=run_link(settings, model_file))
    if sender is None:
        return None
    verdict = "promoted to champion" if promoted else "refused (stays a challenger)"
    was = f"; champion before: {previous_champion_id}" if previous_champion_id else ""
    try:
        return sender.alert(
            "promoted" if promoted else "refused",
            f"retrain of {name}: model {model_id} {verdict}: {reason}{was}",
            key=f"promotion:{model_id}",
            symbol=",".join(symbols) or None,
            model=model_id,
        )
    finally:
        sender.close()


def quality_alerts(
    settings: Settings, results: Iterable[Any], run_id: str, report: Path | None = None
) -> list[Alert]:
    """One alert per batch or series that failed the quality policy (``GateResult``s whose
    ``success`` is False) in run ``run_id``."""
    failed = [r for r in results if not r.success]
    if not failed:
        return []
    sender = alerter(settings, run_url=run_link(settings, report))
    if sender is None:
        return []
    sent = []
    try:
        for i, r in enumerate(failed):
            series = tuple(r.series or ())
            symbol = next((str(x) for x in series if isinstance(x, str) and "/" in x), None)
            alert = sender.alert(
                "quality_failed",
                f"{r.table}: {r.message} (run {run_id})",
                key=f"quality:{run_id}:{r.validation_id or i}",
                symbol=symbol,
            )
            if alert is not None:
                sent.append(alert)
    finally:
        sender.close()
    return sent


# ---------------------------------------------------------------- Prefect automation


def setup_alerts(settings: Settings, block: str | None = None) -> dict[str, str]:
    """Create (or replace) the automation ``tradeloop-alerts``: on every ``tradeloop.alert.*``
    event, send a notification through ``block`` (a saved notification block,
    ``<block-type-slug>/<name>``, e.g. ``slack-webhook/ops``), or by default through the Custom
    Webhook block ``tradeloop-alerts``, created (or replaced) here with
    ``TRADELOOP_ALERT_WEBHOOK_URL`` (kept in the block's secrets, not in its visible URL).
    Needs a Prefect API. Returns the block and automation ids."""
    from prefect.automations import Automation, EventTrigger, SendNotification
    from prefect.blocks.core import Block
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.events.schemas.automations import Posture

    if not api_configured():
        raise RuntimeError(
            "tradeloop alerts setup needs a Prefect API (PREFECT_API_URL); without Prefect the "
            "loop posts to TRADELOOP_ALERT_WEBHOOK_URL directly and needs no setup"
        )
    if block is None:
        url = settings.alert_webhook_url
        if url is None:
            raise RuntimeError(
                "no notification block given and TRADELOOP_ALERT_WEBHOOK_URL is not set: set "
                "it (the default Custom Webhook block posts there) or pass --block"
            )
        hook = CustomWebhookNotificationBlock(
            name=WEBHOOK_BLOCK_NAME,
            url="{{alert_webhook_url}}",
            method="POST",
            form_data="{{body}}",
            headers={"Content-Type": "application/json"},
            secrets={"alert_webhook_url": url.get_secret_value()},  # type: ignore[arg-type]
            cookies=None,
        )
        block_id = cast(uuid.UUID, hook.save(WEBHOOK_BLOCK_NAME, overwrite=True))
        body, block_name = JSON_BODY, f"custom-webhook/{WEBHOOK_BLOCK_NAME}"
    else:
        if "/" not in block:
            raise ValueError(f"--block {block!r}: name it as <block-type-slug>/<name>")
        loaded = cast(Block, Block.load(block))
        if "notify" not in loaded.get_block_capabilities():
            raise ValueError(f"block {block!r} is not a notification block")
        saved = loaded._block_document_id
        if saved is None:
            raise ValueError(f"block {block!r} has no saved document")
        block_id = saved
        is_webhook = isinstance(loaded, CustomWebhookNotificationBlock)
        body, block_name = (JSON_BODY if is_webhook else TEXT_BODY), block
    with contextlib.suppress(ValueError):  # ValueError: none yet
        cast(Automation, Automation.read(name=AUTOMATION_NAME)).delete()
    automation = Automation(
        name=AUTOMATION_NAME,
        description="tradeloop alerts (kill switch, degradation, promotion, stale data, "
        "quality, unknown live orders) -> " + block_name,
        trigger=EventTrigger(
            expect={EVENT_PATTERN},
            match={"prefect.resource.id": "tradeloop.alert.*"},
            posture=Posture.Reactive,
            threshold=1,
            within=dt.timedelta(0),
        ),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=body)],
    )
    automation = cast(Automation, automation.create())
    return {"block": block_name, "block_id": str(block_id), "automation_id": str(automation.id)}
