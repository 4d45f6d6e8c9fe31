"""In-memory harness for loop-level tests of the serving loop that need no warehouse: a champion
slot standing in for the registry (real files, real sha256 check, real ONNX Runtime), the real
1m candles as ticks, and the rows the loop queued for the warehouse."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import onnx

from models.registry import ModelRecord
from pipelines.features import FEATURE_SET_VERSION
from tests.trading.serve_support import SYMBOL, replay_market
from trading.domain import Bar
from trading.fallback import ModelManager
from trading.loop import LoopConfig, ServingLoop
from trading.market import Tick

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
    return tuple(replay_market(rows).ticks())


TICKS = real_ticks(600)
INDEX = {t.bars[0].ts_ms: i for i, t in enumerate(TICKS)}  # one symbol: candle index == tick


def run_ticks(
    config: LoopConfig,
    model: Path,
    home: Path,
    ticks: Iterable[Tick] = TICKS,
) -> ServingLoop:
    """A loop from ``build_loop`` whose champion is ``model`` (its id: the file's stem), after
    ``ticks`` (default: the 600 real candles of ``TICKS``)."""
    registry = MemoryRegistry()
    registry.promote(model, model.stem)
    loop = build_loop(config, home, registry)
    for t in ticks:
        loop.on_tick(t)  # never raises
    return loop


def renamed(tick: Tick, symbol: str) -> Bar:
    (bar,) = tick.bars
    return dataclasses.replace(bar, symbol=symbol)


def rows(loop: ServingLoop, table: str, symbol: str = SYMBOL) -> list[dict[str, Any]]:
    """Rows of ``table`` the loop queued for ``symbol``, in time order."""
    got = [r for r in loop.batch.tables.get(table, {}).values() if r.get("symbol") == symbol]
    return sorted(got, key=lambda r: r["ts"])


def signals_by_ts(loop: ServingLoop, symbol: str = SYMBOL) -> dict[int, dict[str, Any]]:
    return {r["ts"]: r for r in rows(loop, "signals", symbol)}


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


def replay_stored(
    con: Any, model: Path, account: str, symbol: str, folder: Path
) -> tuple[ServingLoop, Any, Any, list[dict[str, float | None]]]:
    """Serve ``model`` (the only champion) over ``symbol``'s stored simulated 1m candles with the
    side data stored beside them (order books, trades, funding, headlines), as a serve replay
    does: (the loop, the candles, the side data it was fed, the symbol's online feature values
    per bar)."""
    from trading.market import ReplayMarket, read_replay_candles
    from trading.service import stored_side

    registry = MemoryRegistry()
    registry.promote(model, account)
    loop = build_loop(LoopConfig(account=account, model_check_every_steps=1), folder, registry)
    candles = read_replay_candles(symbol, con=con, exchange="simulated")
    side = stored_side(con, loop.config, candles)
    assert set(side) == {symbol}
    online: list[dict[str, float | None]] = []
    for tick in ReplayMarket([candles], side=side).ticks():
        loop.on_tick(tick)
        online.append(dict(loop.symbols[symbol].engine.last))
    return loop, candles, side, online


def assert_online_equals_batch(
    online: list[dict[str, float | None]], columns: Iterable[str], batch: Any
) -> None:
    """Each bar's online value of ``columns`` equals the batch frame's, to 1e-9."""
    import numpy as np

    for column in columns:
        got = np.array([np.nan if r[column] is None else r[column] for r in online], dtype=float)
        expected = batch[column].cast(float).fill_null(np.nan).to_numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9, err_msg=column)
