"""Assemble and run a serving loop from settings (used by the Prefect flow and the CLI).

No Prefect here: the flow passes ``on_retrain`` (calls ``run_deployment``) and ``heartbeat``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

from models.registry import champion
from pipelines.features import FEATURE_SET_VERSION
from trading.fallback import ModelManager
from trading.loop import LoopConfig, RunSummary, ServingLoop, run
from trading.market import ReplayMarket, load_replay_candles
from trading.writer import BufferedWriter
from warehouse import Settings, connect, migrate


def heartbeat_file(home: Path, account: str) -> Path:
    return home / "serve" / f"{account}.heartbeat"


def write_heartbeat(home: Path, loop: ServingLoop) -> None:
    path = heartbeat_file(home, loop.config.account)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "at": dt.datetime.now(dt.UTC).isoformat(),
                "steps": loop.steps,
                "last_candle_ts_ms": loop.last_ts_ms,
                "model": loop.manager.active_id,
                "equity": loop.state.portfolio.equity(),
                "killed": loop.state.risk.killed,
                "kill_reason": loop.state.risk.kill_reason,
                "latency": loop.latency.summary(),
                "rolling_accuracy": loop.feedback.accuracy,
                "rolling_f1": loop.feedback.f1,
                "resolved": loop.feedback.resolved,
                "threshold_mode": loop.thresholds.mode,
            },
            default=str,
        )
    )
    tmp.replace(path)


def serve_replay(
    settings: Settings,
    source: str,
    *,
    config: LoopConfig | None = None,
    speed: float | None = None,
    max_candles: int | None = None,
    resume: bool = True,
    on_retrain: Callable[[str], None] | None = None,
    heartbeat: Callable[[ServingLoop], None] | None = None,
    heartbeat_every: int = 50,
) -> RunSummary:
    """Replay a candle file or a warehouse symbol through the paper-trading loop."""
    config = config or LoopConfig(model_check_every_steps=60)
    con = connect(settings)
    migrate(con)
    try:
        market = ReplayMarket(
            load_replay_candles(source, con=con, exchange=config.exchange), speed=speed
        )
        config = dataclasses.replace(config, timeframe=market.timeframe)
        manager = ModelManager(lambda: champion(con, config.model_name), FEATURE_SET_VERSION)
        writer = BufferedWriter(settings, lambda: connect(settings))
        loop = ServingLoop(
            config, manager=manager, writer=writer, home=settings.home, on_retrain=on_retrain
        )

        def beat(lp: ServingLoop) -> None:
            if lp.steps % heartbeat_every == 0:
                write_heartbeat(settings.home, lp)
                if heartbeat is not None:
                    heartbeat(lp)

        summary = run(
            loop, market, max_candles=max_candles, con=con if resume else None, heartbeat=beat
        )
        write_heartbeat(settings.home, loop)
        writer.close()
        return summary
    finally:
        con.close()
