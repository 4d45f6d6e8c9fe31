"""Helpers for the serving-loop tests: one tiny real model trained and exported per session
(torch only here, never in the serving path), constant and momentum models built directly in
ONNX, the real candles as a replay market, a migrated warehouse with a champion."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import onnx
import polars as pl
import pyarrow as pa
from onnx import TensorProto, helper

from models.registry import promote, register_model
from pipelines.features import FEATURE_SET_VERSION, feature_columns
from trading.backtest import Candles
from trading.market import ReplayMarket, read_replay_candles
from warehouse import Settings

CANDLE_FILE = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "candles" / "UNITTEST_BTC-1m.feather"
)
SYMBOL = "UNITTEST/BTC"
_TMP = Path(tempfile.mkdtemp(prefix="serve-tests-"))
atexit.register(shutil.rmtree, _TMP, True)


def real_frame(rows: int) -> pl.DataFrame:
    frame = pl.read_ipc(CANDLE_FILE).rename({"date": "ts"})
    return frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC")).tail(rows)


def candle_table(frame: pl.DataFrame, exchange: str = "binance") -> pa.Table:
    """``frame`` (from ``real_frame``) as warehouse candle rows of SYMBOL 1m on ``exchange``."""
    table = (
        frame.with_columns(exchange=pl.lit(exchange), symbol=pl.lit(SYMBOL), timeframe=pl.lit("1m"))
        .select("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
        .to_arrow()
    )
    return table.set_column(3, "ts", table["ts"].cast(pa.timestamp("ms", tz="UTC")))


def slice_file(rows: int) -> Path:
    """The last ``rows`` real candles as a Feather file named like the shared data."""
    path = _TMP / f"slice{rows}" / "UNITTEST_BTC-1m.feather"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        real_frame(rows).rename({"ts": "date"}).write_ipc(path)
    return path


def replay_market(rows: int) -> ReplayMarket:
    """The last ``rows`` real 1m candles of UNITTEST/BTC as a replay market."""
    return ReplayMarket([read_replay_candles(str(slice_file(rows)))])


def candles(rows: int) -> Candles:
    return Candles.from_frame(real_frame(rows), SYMBOL, "1m")


@functools.lru_cache(maxsize=1)
def tiny_model() -> Path:
    """A real hybrid model (LSTM + Transformer) trained 1 epoch on real candles, in ONNX."""
    import torch

    from models.data import build_samples
    from models.export import export_onnx
    from models.training import TrainConfig, label_config, train_ensemble

    torch.set_num_threads(1)
    frame = (
        real_frame(4000)
        .head(2600)
        .with_columns(exchange=pl.lit("binance"), symbol=pl.lit(SYMBOL), timeframe=pl.lit("1m"))
    )
    cfg = TrainConfig(
        window_len=12,
        horizon_bars=5,
        epochs=1,
        batch_size=64,
        d_model=8,
        lstm_hidden=8,
        n_heads=2,
        conv_channels=8,
        max_samples=500,
        importance_repeats=0,
        progress=False,
        threads=1,
        members=("hybrid",),
    )
    samples = build_samples(frame, window_len=12, label_config=label_config(cfg))
    ensemble = train_ensemble(samples, cfg)
    path = _TMP / "tiny.onnx"
    export_onnx(ensemble, path)
    return path


def _tradeloop_onnx(
    path: Path,
    name: str,
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    *,
    feature_set_version: str,
    window_len: int,
    selected: list[str],
    forward_returns: tuple[float, float, float] | None = None,
) -> Path:
    """Save a tradeloop-shaped ONNX model: input ``window`` (batch, window_len, n_features),
    outputs ``probabilities`` (batch, 3) and ``confidence`` (batch), tradeloop metadata
    (``forward_returns``: the per-class expected returns, ``tradeloop.class_forward_returns``)."""
    cols = feature_columns()
    n = len(cols)
    x = helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", window_len, n])
    probs = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])
    conf = helper.make_tensor_value_info("confidence", TensorProto.FLOAT, ["batch"])
    graph = helper.make_graph(nodes, name, [x], [probs, conf], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {
        "tradeloop.feature_set_version": feature_set_version,
        "tradeloop.feature_columns": json.dumps(cols),
        "tradeloop.selected_features": json.dumps(selected),
        "tradeloop.window_len": str(window_len),
        "tradeloop.n_features": str(n),
        "tradeloop.horizon_bars": "5",
    }
    if forward_returns is not None:
        meta["tradeloop.class_forward_returns"] = json.dumps(list(forward_returns))
    for k, v in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def constant_model(
    path: Path,
    probabilities: tuple[float, float, float],
    confidence: float,
    *,
    feature_set_version: str = FEATURE_SET_VERSION,
    window_len: int = 12,
    forward_returns: tuple[float, float, float] | None = None,
    selected: list[str] | None = None,
) -> Path:
    """A tradeloop-shaped ONNX model that ignores its input and always says the same thing;
    ``selected``: the feature columns it says it reads (default: the first five)."""
    inits = [
        helper.make_tensor("p", TensorProto.FLOAT, [1, 3], list(probabilities)),
        helper.make_tensor("c", TensorProto.FLOAT, [1], [confidence]),
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("three", TensorProto.INT64, [1], [3]),
    ]
    nodes = [
        helper.make_node("Shape", ["window"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Concat", ["batch", "three"], ["pshape"], axis=0),
        helper.make_node("Expand", ["p", "pshape"], ["probabilities"]),
        helper.make_node("Expand", ["c", "batch"], ["confidence"]),
    ]
    return _tradeloop_onnx(
        path,
        "constant",
        nodes,
        inits,
        feature_set_version=feature_set_version,
        window_len=window_len,
        selected=feature_columns()[:5] if selected is None else selected,
        forward_returns=forward_returns,
    )


def momentum_model(
    path: Path,
    scale: float = 4000.0,
    hold: float = 0.0,
    *,
    window_len: int = 12,
    forward_returns: tuple[float, float, float] | None = None,
) -> Path:
    """A real, input-dependent model in ONNX: logits (s·r, h, −s·r) with r the latest one-bar
    log return (feature ``logret_1``), softmax probabilities, confidence = max probability."""
    inits = [
        helper.make_tensor("last", TensorProto.INT64, [], [window_len - 1]),
        helper.make_tensor("col", TensorProto.INT64, [1], [feature_columns().index("logret_1")]),
        helper.make_tensor("w", TensorProto.FLOAT, [1, 3], [scale, 0.0, -scale]),
        helper.make_tensor("b", TensorProto.FLOAT, [1, 3], [0.0, hold, 0.0]),
    ]
    nodes = [
        helper.make_node("Gather", ["window", "last"], ["row"], axis=1),  # (batch, n)
        helper.make_node("Gather", ["row", "col"], ["r"], axis=1),  # (batch, 1)
        helper.make_node("Mul", ["r", "w"], ["scaled"]),  # (batch, 3)
        helper.make_node("Add", ["scaled", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        helper.make_node("ReduceMax", ["probabilities"], ["confidence"], axes=[1], keepdims=0),
    ]
    return _tradeloop_onnx(
        path,
        "momentum",
        nodes,
        inits,
        feature_set_version=FEATURE_SET_VERSION,
        window_len=window_len,
        selected=["logret_1"],
        forward_returns=forward_returns,
    )


def register_champion(
    con, settings: Settings, path: Path, *, fsv: str = FEATURE_SET_VERSION
) -> str:  # type: ignore[no-untyped-def]
    rec = register_model(
        con,
        settings,
        path,
        feature_set_version=fsv,
        training_snapshot_id=None,
        hyperparameters={},
        metrics={},
    )
    promote(con, settings, rec.model_id)
    return rec.model_id


def table_rows(con, table: str, order: str) -> list[tuple]:  # type: ignore[no-untyped-def]
    cols = [
        r[0]
        for r in con.execute(f"DESCRIBE {table}").fetchall()
        if r[0] not in ("ingested_at", "updated_at")
    ]
    return con.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}").fetchall()


def make_loop(settings: Settings, config, *, background: bool = False, lookup_con=None):  # type: ignore[no-untyped-def]
    """A ServingLoop on the warehouse of ``settings`` (registry lookups on ``lookup_con``)."""
    from models.registry import champion
    from trading.fallback import ModelManager
    from trading.loop import ServingLoop
    from trading.writer import BufferedWriter
    from warehouse import connect

    con = lookup_con or connect(settings)
    manager = ModelManager(lambda: champion(con, config.model_name), FEATURE_SET_VERSION)
    writer = BufferedWriter(settings, lambda: connect(settings), background=background)
    return ServingLoop(config, manager=manager, writer=writer, home=settings.home), con
