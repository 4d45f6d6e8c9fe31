"""Alerts (issue 17, item 6): in one in-process run on real candles, a loopback webhook receiver
gets exactly one alert per event -- the kill switch firing, the model's degradation, a refused
promotion, stale data -- each with the account, symbol, model and a link to the run:

* without Prefect: the flows run in ``direct_run`` (no API) and ``trading.alerts.WebhookSink``
  posts to ``TRADELOOP_ALERT_WEBHOOK_URL`` directly;
* with Prefect (the flow tests' temporary server): ``tradeloop alerts setup`` creates the
  automation and its Custom Webhook block, the same code emits ``tradeloop.alert.<kind>``
  events, and the server's automation posts them; the webhook URL is set too, and still no
  alert arrives twice."""

from __future__ import annotations

import math
import re
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from flows.alerts import AUTOMATION_NAME, alerter, promotion_alert, run_link
from flows.cli import app
from flows.orchestration import direct_run
from flows.serve import serve
from models import registry
from tests.support.webhook import WebhookReceiver
from tests.trading.serve_support import (
    SYMBOL,
    constant_model,
    register_champion,
    slice_file,
)
from trading.alerts import Alert
from trading.loop import LoopConfig
from trading.service import heartbeat_file, serve_replay
from warehouse import Settings, connect, migrate, use_settings

ACCOUNT = "alerts"
RUN_PAGE = re.compile(r"http://127\.0\.0\.1:\d+/runs/flow-run/[0-9a-f-]{36}")


def _refused_promotion(
    settings: Settings, tmp_path: Path, champion_id: str
) -> registry.ModelRecord:
    """A challenger that says 1/3 for every class, judged by the real promotion rule against
    the champion: its log-loss, ln 3, cannot beat the training class frequencies' (their
    entropy, below ln 3 whenever the classes are not balanced), so it is refused."""
    con = connect(settings)
    try:
        path = constant_model(tmp_path / "uniform.onnx", (1 / 3, 1 / 3, 1 / 3), 1 / 3)
        record = registry.register_model(
            con,
            settings,
            path,
            feature_set_version=registry.get_model(con, champion_id).feature_set_version,
            training_snapshot_id=None,
            hyperparameters={},
            metrics={},
        )
        freq = (0.5, 0.25, 0.25)
        figures = {
            "log_loss": math.log(3.0),
            "log_loss_train_frequency": -sum(p * math.log(p) for p in freq),
            "ic": 0.0,
        }
        registry.record_metrics(con, settings, record.model_id, "oos_alerts", figures)
        registry.record_metrics(con, settings, champion_id, "oos_alerts", {**figures, "ic": 0.1})
        decision = registry.promote_if_better(con, settings, record.model_id, "oos_alerts")
    finally:
        con.close()
    assert not decision.promote
    promotion_alert(
        settings,
        model_id=record.model_id,
        promoted=decision.promote,
        reason=decision.reason,
        name="signal",
        previous_champion_id=champion_id,
        model_file=record.onnx_path,
        symbols=[SYMBOL],
    )
    return record


def _stale_data(settings: Settings, tmp_path: Path, account: str = "stale") -> None:
    """Follow a file that stops growing: after its candles, two polls find none and the
    candles' age on the wall clock is over the limit -> one stale-data alert."""
    source = tmp_path / "follow" / slice_file(80).name
    source.parent.mkdir()
    source.write_bytes(slice_file(80).read_bytes())
    link = run_link(settings, heartbeat_file(settings.home, account))
    serve_replay(
        settings,
        str(source),
        config=LoopConfig.from_settings(settings, account=account, model_check_every_steps=60),
        follow_every_s=1.0,
        sleep=lambda s: None,
        max_polls=3,
        alerts=alerter(settings, run_url=link),
    )


# about 10 s of CPU (two serving runs on a warehouse); 26 s wall at a load of 35 on 2 cores
@pytest.mark.slow
def test_one_alert_per_event_without_prefect(tmp_path: Path) -> None:
    with WebhookReceiver() as hook:
        settings = Settings(home=tmp_path / "home", alert_webhook_url=SecretStr(hook.url))
        con = connect(settings)
        migrate(con)
        bad = constant_model(tmp_path / "buy.onnx", (0.96, 0.02, 0.02), 0.99)  # always "buy"
        champion_id = register_champion(con, settings, bad)
        con.close()
        with use_settings(settings), direct_run():
            # the serve flow as `tradeloop serve` runs it without Prefect: the always-buy
            # champion's rolling accuracy fires the kill switch, then reads as a degradation
            served = serve(replay=str(slice_file(180)), account=ACCOUNT, max_candles=180)
            challenger = _refused_promotion(settings, tmp_path, champion_id)
            _stale_data(settings, tmp_path)
        assert served["candles"] == 180
        got = hook.wait_for(lambda p: len(p) >= 4, timeout_s=10)

    kinds = Counter(p["kind"] for p in got)
    assert kinds == {"kill_fired": 1, "degraded": 1, "refused": 1, "stale": 1}, got
    by_kind = {p["kind"]: p for p in got}
    loop_link = heartbeat_file(settings.home, ACCOUNT).resolve().as_uri()
    kill, degraded = by_kind["kill_fired"], by_kind["degraded"]
    assert kill["message"].startswith("kill switch fired: rolling accuracy")
    assert degraded["message"].startswith("retraining requested: rolling accuracy")
    for alert in (kill, degraded):
        assert (alert["account"], alert["model"], alert["run_url"]) == (
            ACCOUNT,
            champion_id,
            loop_link,
        )
    # the kill switch is the account's (every symbol); the stale data is one symbol's
    stale = by_kind["stale"]
    assert (stale["account"], stale["symbol"], stale["model"]) == ("stale", SYMBOL, champion_id)
    assert stale["message"].startswith("stale data: no closed candle since")
    assert stale["run_url"] == heartbeat_file(settings.home, "stale").resolve().as_uri()
    refused = by_kind["refused"]
    assert refused["symbol"] == SYMBOL and refused["model"] != champion_id
    assert "log-loss" in refused["message"] and "does not beat" in refused["message"]
    assert refused["model"] == challenger.model_id
    assert refused["run_url"] == challenger.onnx_path.resolve().as_uri()  # the model's file
    for alert in got:
        assert alert["title"].startswith("[tradeloop] ")
        assert "secret-token" not in str(alert)  # the webhook URL's token is never sent
    # each alert is one loop event the warehouse stored too
    con = connect(settings, read_only=True)
    try:
        kinds_stored = con.execute(
            "SELECT kind, count(*) FROM loop_events WHERE account = ? AND (message LIKE "
            "'kill switch fired%' OR message LIKE 'retraining requested%') GROUP BY 1",
            [ACCOUNT],
        ).fetchall()
    finally:
        con.close()
    assert dict(kinds_stored) == {"kill": 1, "retrain": 1}


def test_no_webhook_and_no_prefect_means_no_alerter(tmp_path: Path) -> None:
    with direct_run():
        assert alerter(Settings(home=tmp_path)) is None


@pytest.mark.parametrize("url", ["ftp://example.invalid/hook", "hooks.example/x"])
def test_a_webhook_url_must_be_http(tmp_path: Path, url: str) -> None:
    with direct_run(), pytest.raises(ValueError, match="http:// or https://"):
        alerter(Settings(home=tmp_path, alert_webhook_url=SecretStr(url)))


def _mine(
    payloads: list[dict[str, Any]], accounts: set[str], models: set[str]
) -> list[dict[str, Any]]:
    """The alerts of this test (the session's Prefect server may still deliver another
    test's events while its automation exists)."""
    return [p for p in payloads if p.get("account") in accounts or p.get("model") in models]


# the same, through the flow tests' Prefect server (33 s wall at a load of 35 on 2 cores)
@pytest.mark.slow
def test_one_alert_per_event_with_prefect(prefect_server: None, tmp_path: Path) -> None:
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client

    account, stale_account = "alerts-prefect", "stale-prefect"
    with WebhookReceiver() as hook:
        settings = Settings(home=tmp_path / "home", alert_webhook_url=SecretStr(hook.url))
        con = connect(settings)
        migrate(con)
        bad = constant_model(tmp_path / "buy.onnx", (0.96, 0.02, 0.02), 0.99)
        champion_id = register_champion(con, settings, bad)
        con.close()
        with use_settings(settings):
            done = CliRunner().invoke(app, ["alerts", "setup"])
            assert done.exit_code == 0, done.output
            assert "custom-webhook/tradeloop-alerts" in done.output
            try:
                served = serve(replay=str(slice_file(180)), account=account, max_candles=180)
                challenger = _refused_promotion(settings, tmp_path, champion_id)
                _stale_data(settings, tmp_path, stale_account)
                accounts = {account, stale_account}
                models = {champion_id, challenger.model_id}
                got = hook.wait_for(lambda p: len(_mine(p, accounts, models)) >= 4, timeout_s=60)
                time.sleep(2.0)  # a second delivery of any of them would have arrived by now
                got = _mine(hook.payloads(), accounts, models)
            finally:
                cast(Automation, Automation.read(name=AUTOMATION_NAME)).delete()
    assert served["candles"] == 180
    kinds = Counter(p["kind"] for p in got)
    assert kinds == {"kill_fired": 1, "degraded": 1, "refused": 1, "stale": 1}, got
    by_kind = {p["kind"]: p for p in got}
    # the same JSON as without Prefect (the Custom Webhook block posts the event's payload)
    assert all(set(p) == set(Alert.__dataclass_fields__) | {"title"} for p in got)
    kill, degraded = by_kind["kill_fired"], by_kind["degraded"]
    for alert in (kill, degraded):
        assert (alert["account"], alert["model"]) == (account, champion_id)
        # the link is the serve flow run's page in the Prefect UI
        assert RUN_PAGE.fullmatch(alert["run_url"]), alert["run_url"]
    assert degraded["run_url"] == kill["run_url"]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(kill["run_url"].rsplit("/", 1)[1]))
        assert client.read_flow(run.flow_id).name == "serve"
    assert by_kind["stale"]["symbol"] == SYMBOL and by_kind["stale"]["account"] == stale_account
    assert "does not beat" in by_kind["refused"]["message"]
