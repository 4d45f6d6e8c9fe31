from __future__ import annotations

import asyncio

import duckdb
import polars as pl

from flows.retrain import retrain
from models import registry
from models.data import load_candles
from pipelines.features import FEATURE_SET_VERSION
from tests.models.conftest import SYMBOL, TINY, candles_arrow, real_candles
from warehouse import Settings, upsert

TINY_OVERRIDES = {k: v for k, v in TINY.model_dump().items() if k not in ("horizon_bars", "epochs")}


def test_retrain_flow_registers_records_provenance_and_publishes_dashboard(
    prefect_server: None, lake: duckdb.DuckDBPyConnection, settings: Settings, candles_dir
) -> None:
    candles = real_candles(candles_dir, rows=2600)
    upsert(lake, "candles", candles_arrow(candles), settings=settings)
    outcome = retrain(
        symbols=[SYMBOL],
        days=30,
        horizon=5,
        epochs=1,
        timeframe="1m",
        train_overrides=TINY_OVERRIDES,
        settings=settings,
    )
    record = registry.get_model(lake, outcome.model_id)
    assert record.feature_set_version == FEATURE_SET_VERSION
    assert record.training_snapshot_id == outcome.snapshot_id
    assert record.onnx_path.is_file() and outcome.parity_max_abs <= 1e-5
    # The decision follows the rule (no champion yet: against the majority baseline).
    expected = registry.decide_promotion(outcome.challenger, None)
    assert outcome.promoted == expected.promote
    assert record.status == ("champion" if outcome.promoted else "challenger")
    metrics = registry.model_metrics(lake, outcome.model_id, "test")
    assert {"accuracy", "f1_macro", "baseline_accuracy", "calibration_error"} <= set(metrics)

    # Older candles are backfilled; the model's snapshot still gives its training data.
    upsert(
        lake,
        "candles",
        candles_arrow(real_candles(candles_dir, rows=3000).head(400)),
        settings=settings,
    )
    again = load_candles(
        lake, symbols=[SYMBOL], timeframe="1m", days=30, snapshot_id=record.training_snapshot_id
    )
    assert again.frame.height == candles.height

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read() -> list:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["model-dashboard-signal"])
                )
            )

    artifacts = asyncio.run(read())
    assert artifacts, "no dashboard artifact published"
    text = str(artifacts[0].data)
    assert "accuracy" in text and "Training samples" in text and outcome.model_id in text
    assert isinstance(candles, pl.DataFrame)
