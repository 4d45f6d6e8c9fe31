"""Alerts without Prefect (issue 17, item 6): in one in-process run on real candles, a loopback
webhook receiver gets exactly one alert per event -- the kill switch firing, the model's
degradation, a refused promotion, stale data -- each with the account, symbol, model and a
link to the run. The flows run in ``direct_run`` (no Prefect API), so the alerts are posted
to ``TRADELOOP_ALERT_WEBHOOK_URL`` directly by ``trading.alerts.WebhookSink``."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
from pydantic import SecretStr

from flows.alerts import alerter, promotion_alert, run_link
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
from trading.loop import LoopConfig
from trading.service import heartbeat_file, serve_replay
from warehouse import Settings, connect, migrate, use_settings

ACCOUNT = "alerts"


def _refused_promotion(settings: Settings, tmp_path: Path, champion_id: str) -> Path:
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
        model_dir=record.onnx_path.parent,
        symbols=[SYMBOL],
    )
    return record.onnx_path.parent


def _stale_data(settings: Settings, tmp_path: Path) -> None:
    """Follow a file that stops growing: after its candles, two polls find none and the
    candles' age on the wall clock is over the limit -> one stale-data alert."""
    source = tmp_path / "follow" / slice_file(80).name
    source.parent.mkdir()
    source.write_bytes(slice_file(80).read_bytes())
    link = run_link(settings, heartbeat_file(settings.home, "stale"))
    serve_replay(
        settings,
        str(source),
        config=LoopConfig.from_settings(settings, account="stale", model_check_every_steps=60),
        follow_every_s=1.0,
        sleep=lambda s: None,
        max_polls=3,
        alerts=alerter(settings, run_url=link),
    )


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
            model_dir = _refused_promotion(settings, tmp_path, champion_id)
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
    assert refused["run_url"] == model_dir.resolve().as_uri()  # the model's folder
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
