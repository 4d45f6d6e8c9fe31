"""A model trained with the funding and sentiment groups serves with them (issue 15 items 2-3).

The simulated perpetual (the underlying's 1m candles under the contract's symbol), its mark
candles, funding rates and open interest, and the simulated exchange's headlines scored by
VADER are stored in a real warehouse; training reads them beside the candles (at the same
snapshot) and the model's inputs hold funding_rate_last, basis, oi_change and the news
columns; its ONNX export equals the trained ensemble; the serving loop, replaying the stored
candles with the stored side data (``trading.service.stored_side``: a funding rate, an open
interest value or a headline handed out at its stamp, a mark candle at its close), computes
every feature the model reads equal to the batch value to 1e-9, and the model (not the
fallback) decides with the probabilities ``backtest --model``'s batch path computes. A new
champion's engine, replaying the kept candles with the kept side data, has the same values.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from models import retraining
from models.data import load_candles
from models.training import train_ensemble
from pipelines.features import build_features
from pipelines.features.spec import SIDE_FEATURES
from tests.support.models import TINY
from tests.support.side import CONTRACT, SimulatedPerpetual, simulated_perpetual, store_futures
from tests.trading.serve_harness import assert_online_equals_batch, replay_stored
from trading.model_backtest import batch_inference
from warehouse import Settings, upsert

BARS = 1_800  # 30 hours of 1m: the 1h features warm up after ~16
READ = ("funding_rate_last", "funding_rate_mean_3", "basis", "oi_change", "news_count_24h")


def _store(lake: duckdb.DuckDBPyConnection, settings: Settings) -> SimulatedPerpetual:
    perp = simulated_perpetual(days=2, timeframe="1m", start_day=2)
    candles = perp.candles.head(BARS)
    upsert(
        lake,
        "candles",
        candles.with_columns(candles["ts"].dt.cast_time_unit("ms")).to_arrow(),
        settings=settings,
    )
    store_futures(lake, settings, perp)
    n = perp.news.height
    keys = {"source": ["simulated"] * n, "id": [f"h{i}" for i in range(n)]}
    upsert(
        lake,
        "news",
        pa.table(
            {
                **keys,
                "ts": perp.news["ts"].to_arrow(),
                "title": ["headline"] * n,
                "body": pa.nulls(n, pa.string()),
                "url": pa.nulls(n, pa.string()),
                "symbols": perp.news["symbols"].to_arrow(),
            }
        ),
        settings=settings,
    )
    upsert(
        lake,
        "news_scores",
        pa.table({**keys, "scorer": ["vader"] * n, "score": perp.news["score"].to_arrow()}),
        settings=settings,
    )
    return perp


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_model_trained_with_funding_and_news_serves_with_them(
    lake: duckdb.DuckDBPyConnection, settings: Settings, tmp_path: Path
) -> None:
    _store(lake, settings)
    # training: the side data comes with the candles, and its columns are model inputs
    batch = load_candles(lake, symbols=[CONTRACT], timeframe="1m", days=None, exchange="simulated")
    assert set(batch.side) == {("simulated", CONTRACT, "1m")}
    config = TINY.model_copy(update={"feature_selection": False, "input_groups": None})
    samples = retraining.prepare_samples(batch, config)
    assert set(SIDE_FEATURES) <= set(samples.feature_columns)
    ensemble = train_ensemble(samples, config)
    assert set(READ) <= set(ensemble.selected_features)
    exported, parity = retraining.export(ensemble, samples, tmp_path)
    assert parity <= retraining.PARITY_MAX_ABS

    # serving: the stored candles replayed with the stored side data
    loop, candles, side, online = replay_stored(lake, exported.path, "side", CONTRACT, tmp_path)
    assert len(online) == BARS
    state = loop.symbols[CONTRACT]
    read = state.engine.columns
    assert set(SIDE_FEATURES) <= set(read)
    # online == batch (the same side data as of each close), to 1e-9
    want = build_features(batch.frame, side=batch.side[("simulated", CONTRACT, "1m")])
    assert_online_equals_batch(online, read, want)
    assert all(np.isfinite(online[-1][c]) for c in READ)  # type: ignore[arg-type]
    served = {
        int(r["ts"]): r["p_buy"]
        for r in loop.batch.tables["predictions"].values()
        if r["model_id"] == "side"
    }
    assert len(served) > 200
    # backtest --model's batch path gives the probabilities the loop served bar by bar
    predictor = loop.manager.predictor
    assert predictor is not None
    inference = batch_inference(candles, predictor, min_feature_quality=0.0, side=side[CONTRACT])
    index = {int(t): i for i, t in enumerate(inference.ts_ms)}
    batch_p = np.array([inference.probabilities[index[t], 0] for t in served])
    np.testing.assert_allclose(batch_p, list(served.values()), rtol=0, atol=1e-5)
    # a new champion reading other columns: its engine replays the kept candles with the kept
    # side data, and its side features equal the batch ones
    other = ("basis", "market_news_decayed", "logret_1")
    assert state.use_features(other, loop.columns)
    window = state.window(12)
    assert window is not None
    for column in ("basis", "market_news_decayed"):
        got = window[:, loop.columns.index(column)].astype(float)
        np.testing.assert_allclose(got, want[column].to_numpy()[-12:], rtol=1e-6, err_msg=column)
