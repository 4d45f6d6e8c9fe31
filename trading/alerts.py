"""Alerts: the events a person is told about, and where they go.

An ``Alert`` is one event of a kind in ``ALERT_KINDS`` (kill switch fired or reset, model
degraded, retrain promoted or refused, data stale, quality policy failed, live order in an
unknown state), with the account, symbol and model it concerns and a link to the run that
raised it. ``Alerter`` builds them and hands each to ONE sink, at most once per key (a loop
event's id), so a retried or repeated call never gives a second notification.

Sinks (``AlertSink``):

* ``WebhookSink``: POSTs the alert's JSON (``Alert.payload``) to a URL with the standard
  library, from a background thread (the serving loop never waits on the network); a few
  attempts with a short backoff, then the alert is logged as lost and the loop carries on. It
  is the path without Prefect (``TRADELOOP_ALERT_WEBHOOK_URL``).
* With a Prefect API, ``flows.alerts`` passes a sink that emits the Prefect event
  ``tradeloop.alert.<kind>`` instead; an automation's notification block (a webhook by
  default, Slack or e-mail where configured) delivers it. One sink per process: never both.

The payload carries no secrets: messages pass through the redaction of registered exchange
credentials, and the webhook URL (which often embeds a token) is never part of it or of a log
line. No Prefect here.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, get_args

from pipelines.redaction import REDACT

log = logging.getLogger("tradeloop.alerts")

AlertKind = Literal[
    "kill_fired",
    "kill_reset",
    "degraded",
    "promoted",
    "refused",
    "stale",
    "quality_failed",
    "order_unknown",
]
ALERT_KINDS: tuple[AlertKind, ...] = get_args(AlertKind)
TITLES: dict[str, str] = {
    "kill_fired": "kill switch fired",
    "kill_reset": "kill switch reset",
    "degraded": "model degraded",
    "promoted": "retrain promoted",
    "refused": "retrain refused",
    "stale": "data stale",
    "quality_failed": "quality policy failed",
    "order_unknown": "live order in an unknown state",
}
EVENT_PREFIX = "tradeloop.alert."  # the Prefect event of kind k: tradeloop.alert.<k>


def _iso(ts_ms: int | None) -> str:
    when = (
        dt.datetime.now(dt.UTC)
        if ts_ms is None
        else dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
    )
    return when.isoformat()


@dataclass(frozen=True)
class Alert:
    """One notification. ``ts``: when the event happened (ISO 8601, UTC; a loop event's candle
    time); ``id``: stable for the event (``<account>:<loop event id>`` for the serving loop),
    so a receiver can tell a repeat; ``run_url``: the Prefect flow run's page, or without
    Prefect the run's local record (a ``file://`` URI)."""

    kind: AlertKind
    message: str
    id: str
    ts: str
    account: str | None = None
    symbol: str | None = None
    model: str | None = None
    run_url: str | None = None
    source: str = "tradeloop"

    @property
    def title(self) -> str:
        where = " ".join(x for x in (self.account, self.symbol) if x)
        return f"[tradeloop] {TITLES[self.kind]}" + (f" ({where})" if where else "")

    @property
    def event_name(self) -> str:
        return EVENT_PREFIX + self.kind

    def payload(self) -> dict[str, Any]:
        """The JSON a receiver gets (the same with and without Prefect)."""
        return {**asdict(self), "title": self.title}


class AlertSink(Protocol):
    def send(self, alert: Alert) -> None:
        """Deliver (or queue) ``alert``; never raises."""
        ...

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (waiting at most ``timeout_s``)."""
        ...


@dataclass
class Alerter:
    """Builds alerts and hands each to ``sink`` once per ``key``."""

    sink: AlertSink
    run_url: str | None = None
    sent: list[Alert] = field(default_factory=list)
    _keys: set[str] = field(default_factory=set)

    def alert(
        self,
        kind: AlertKind,
        message: str,
        *,
        key: str,
        account: str | None = None,
        symbol: str | None = None,
        model: str | None = None,
        ts_ms: int | None = None,
        run_url: str | None = None,
    ) -> Alert | None:
        """The alert sent (None: this key was sent already); a sink that fails is logged."""
        if kind not in TITLES:
            raise ValueError(f"unknown alert kind {kind!r} (one of {', '.join(ALERT_KINDS)})")
        if key in self._keys:
            return None
        self._keys.add(key)
        alert = Alert(
            kind=kind,
            message=REDACT.scrub(message),
            id=key,
            ts=_iso(ts_ms),
            account=account,
            symbol=symbol,
            model=model,
            run_url=run_url or self.run_url,
        )
        try:
            self.sink.send(alert)
        except Exception:  # noqa: BLE001 - an alert never stops what raised it
            log.exception("alert %s (%s) could not be handed to its sink", key, kind)
        self.sent.append(alert)
        return alert

    def close(self, timeout_s: float = 10.0) -> None:
        self.sink.close(timeout_s)


_STOP = object()


class WebhookSink:
    """POST each alert's JSON to ``url`` from a background thread (see the module docs).

    ``attempts`` tries per alert, ``backoff_s`` x attempt between them, ``timeout_s`` per
    request; an HTTP 4xx other than 408/429 is not retried (the receiver refused it). Failures
    are logged without the URL and counted in ``failed``; ``delivered`` counts the 2xx."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        attempts: int = 3,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("alert webhook URL must start with http:// or https://")
        self._url = url
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self._sleep = sleep
        self.delivered = 0
        self.failed = 0
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # the URL may embed a token: never shown
        return f"WebhookSink(delivered={self.delivered}, failed={self.failed})"

    def send(self, alert: Alert) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="tradeloop-alerts", daemon=True
                )
                self._thread.start()
        self._queue.put(alert)

    def close(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join(timeout_s)
        if thread.is_alive():
            log.error("alert webhook: alerts still queued after %.0f s; not waiting", timeout_s)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, Alert)
            self.post(item)

    def post(self, alert: Alert) -> bool:
        """POST ``alert`` now (in the caller's thread); True when the receiver took it."""
        body = json.dumps(alert.payload()).encode()
        why = ""
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(
                self._url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "tradeloop-alerts"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read()
                self.delivered += 1
                return True
            except urllib.error.HTTPError as exc:
                why = f"HTTP {exc.code}"
                if 400 <= exc.code < 500 and exc.code not in (408, 429):
                    break
            except Exception as exc:  # noqa: BLE001 - timeout, refused, DNS: try again
                why = type(exc).__name__
            if attempt < self.attempts:
                self._sleep(self.backoff_s * attempt)
        self.failed += 1
        log.error(
            "alert %s (%s) not delivered to the webhook after %d attempt(s): %s",
            alert.id,
            alert.kind,
            attempt,
            why,
        )
        return False


def webhook_alerter(url: str | None, run_url: str | None = None) -> Alerter | None:
    """An ``Alerter`` posting to ``url`` (None: no URL, no alerter)."""
    return Alerter(WebhookSink(url), run_url=run_url) if url else None
