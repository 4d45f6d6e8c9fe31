"""In-memory harness for loop-level tests of the serving loop that need no warehouse: a champion
slot standing in for the registry (real files, real sha256 check, real ONNX Runtime), the real
1m candles as ticks, and the rows the loop queued for the warehouse."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

from models.registry import ModelRecord
from pipelines.features import FEATURE_SET_VERSION, feature_columns
from tests.trading.serve_support import SYMBOL, slice_file
from trading.domain import Bar
from trading.fallback import ModelManager
from trading.loop import LoopConfig, ServingLoop
from trading.market import ReplayMarket, Tick, load_replay_candles

STEP_MS = 60_000
BIG = 10**9  # flush_every_steps: keep every row in the loop's batch (no writer)


class MemoryRegistry:
    """The champion slot of a registry: ``promote`` records a file with its sha256, the way
    ``models.registry`` does, so the loop's ``ModelManager`` verifies and loads it for real."""

    def __init__(self) -> None:
        self.current: ModelRecord | None = None

    def promote(self, path: Path, model_id: str, *, fsv: str = FEATURE_SET_VERSION) -> str:
        self.current = ModelRecord(
            model_id=model_id,
            version=1,
            name="signal",
            created_at=dt.datetime.now(dt.UTC),
            feature_set_version=fsv,
            training_snapshot_id=None,
            hyperparameters={},
            metrics={},
            onnx_path=path,
            onnx_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            status="champion",
            promoted_at=dt.datetime.now(dt.UTC),
        )
        return model_id

    def lookup(self) -> ModelRecord | None:
        return self.current


def build_loop(
    config: LoopConfig,
    home: Path,
    registry: MemoryRegistry | None = None,
    *,
    lookup: Callable[[], ModelRecord | None] | None = None,
    **kwargs: Any,
) -> ServingLoop:
    """A ServingLoop without a writer that keeps every row it would write in ``loop.batch``;
    its champion comes from ``registry`` (default: none) or ``lookup`` (a real registry)."""
    manager = ModelManager(lookup or (registry or MemoryRegistry()).lookup, FEATURE_SET_VERSION)
    cfg = dataclasses.replace(config, flush_every_steps=BIG)
    return ServingLoop(cfg, manager=manager, writer=None, home=home, **kwargs)


@functools.lru_cache(maxsize=4)
def real_ticks(rows: int) -> tuple[Tick, ...]:
    """The last ``rows`` real 1m candles of UNITTEST/BTC as the replay market's ticks."""
    return tuple(ReplayMarket(load_replay_candles(str(slice_file(rows)))).ticks())


def renamed(tick: Tick, symbol: str) -> Bar:
    (bar,) = tick.bars
    return dataclasses.replace(bar, symbol=symbol)


def rows(loop: ServingLoop, table: str, symbol: str = SYMBOL) -> list[dict[str, Any]]:
    """Rows of ``table`` the loop queued for ``symbol``, in time order."""
    got = [r for r in loop.batch.tables.get(table, {}).values() if r.get("symbol") == symbol]
    return sorted(got, key=lambda r: r["ts"])


def signals_by_ts(loop: ServingLoop, symbol: str = SYMBOL) -> dict[int, dict[str, Any]]:
    return {r["ts"]: r for r in rows(loop, "signals", symbol)}


def order_ts(loop: ServingLoop, symbol: str = SYMBOL) -> set[int]:
    """Open times of the bars whose decision sent an order (entries and exits, not brackets)."""
    return {r["ts"] for r in rows(loop, "orders", symbol) if r["order_type"] != "stop"}


def events(loop: ServingLoop, kind: str, text: str = "") -> list[tuple[int, str, str | None, str]]:
    return [e for e in loop.events if e[1] == kind and text in e[3]]


def static_batch_model(path: Path, source: Path) -> Path:
    """``source`` with its input's batch dimension fixed to 1 (a common export mistake): ONNX
    Runtime runs it for one symbol and raises InvalidArgument for a batch of two."""
    model = onnx.load(source)
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_param")
    dim.dim_value = 1
    onnx.save(model, path)
    return path


def momentum_model(
    path: Path, scale: float = 4000.0, hold: float = 0.0, *, window_len: int = 12
) -> Path:
    """A real, input-dependent model in ONNX: logits (s·r, h, −s·r) with r the latest one-bar
    log return (feature ``logret_1``), softmax probabilities, confidence = max probability."""
    cols = feature_columns()
    n = len(cols)
    j = cols.index("logret_1")
    x = helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", window_len, n])
    probs = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])
    conf = helper.make_tensor_value_info("confidence", TensorProto.FLOAT, ["batch"])
    inits = [
        helper.make_tensor("last", TensorProto.INT64, [], [window_len - 1]),
        helper.make_tensor("col", TensorProto.INT64, [1], [j]),
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
    graph = helper.make_graph(nodes, "momentum", [x], [probs, conf], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {
        "tradeloop.feature_set_version": FEATURE_SET_VERSION,
        "tradeloop.feature_columns": json.dumps(cols),
        "tradeloop.selected_features": json.dumps(["logret_1"]),
        "tradeloop.window_len": str(window_len),
        "tradeloop.n_features": str(n),
        "tradeloop.horizon_bars": "5",
    }
    for k, v in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
