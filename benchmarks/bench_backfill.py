"""Backfill throughput (issue 16): 100 symbols x N days of 1m candles, collect -> gate ->
features, end to end through the warm collector's cycle (``pipelines.follow.run_cycle``: one
fetch of every series, ONE gate call and upsert, ONE features pass with the feature gate and
its upsert), each step beside its engine alone on the same rows.

* The collector is warm, as one that has been running is: the process has imported
  everything, validated once with Great Expectations and holds its warehouse connection and
  GX context (a first cycle of 2 other symbols on the same warehouse, timed apart). Then
  ``BENCH_BACKFILL_SYMBOLS`` (default 100) new symbols get ``BENCH_BACKFILL_DAYS`` (default
  30, the issue's goal) days of 1m history in one cycle; ``BENCH_BACKFILL_REPEATS`` (default 3)
  such backfills, each in a new collector and warehouse, and the median one is reported.
* Engines alone, in the same process on the same rows: the simulated exchange generating the
  candles (a fresh one, so it also generates the days from its origin up to the window, as
  the source does); Great Expectations' checkpoint run on the frame the gate hands it;
  ``warehouse.upsert`` of the candles into an empty warehouse; ``build_features_many`` on
  the candles; ``warehouse.upsert`` of the feature rows into an empty warehouse.
* Wall and CPU seconds (this process, all threads) for each; the load average before and
  after (other sessions share the machine's cores).
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

import pipelines.follow as follow
from benchmarks.results import record
from pipelines.collect import SourceOptions
from pipelines.follow import CycleStats, FetchPool, FollowState, run_cycle
from pipelines.simulated_exchange import DEFAULT_ORIGIN_MS, MINUTE_MS, SimulatedExchange
from pipelines.sources.base import CANDLE_SCHEMA
from warehouse import Settings, connect, migrate, upsert

# 40 days after the simulation's origin, 37 s into a minute (as bench_follow)
START_MS = DEFAULT_ORIGIN_MS + 40 * 86_400_000 + 37_000
GOAL_CANDLES_PER_S = 100_000
GOAL_OVERHEAD = 2.0


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass
class Timed:
    wall: float = 0.0
    cpu: float = 0.0


@dataclass
class Steps:
    """Wall and CPU of each step of the cycle, taken around the functions it calls."""

    parts: dict[str, Timed] = field(default_factory=dict)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with measured(self.parts.setdefault(name, Timed())):
                return fn(*args, **kwargs)

        return timed


@contextmanager
def measured(into: Timed) -> Iterator[None]:
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        into.wall += time.perf_counter() - wall
        into.cpu += time.process_time() - cpu


@contextmanager
def step_timers(pool: FetchPool, steps: Steps) -> Iterator[None]:
    """Time the cycle's fetch, gate + write and features calls (wall and CPU) without changing
    what they do: ``run_cycle`` itself only records wall times."""
    names = {"gate_fetched": "gate", "rebuild_features_many": "features"}
    saved = {name: getattr(follow, name) for name in names if hasattr(follow, name)}
    fetch = pool.fetch
    pool.fetch = steps.wrap("fetch", fetch)  # type: ignore[method-assign]
    for name, fn in saved.items():
        setattr(follow, name, steps.wrap(names[name], fn))
    try:
        yield
    finally:
        pool.fetch = fetch  # type: ignore[method-assign]
        for name, fn in saved.items():
            setattr(follow, name, fn)


def _window(days: float) -> tuple[int, int]:
    """[since, until) of the backfill in ms: what the cycle fetches at START_MS."""
    until = START_MS - START_MS % MINUTE_MS  # the minute holding "now" is still open
    since = int(START_MS - days * 86_400_000)
    return since + (-since) % MINUTE_MS, until


@dataclass
class Backfill:
    cycle: CycleStats
    total: Timed
    steps: Steps
    warmup: Timed
    features_rows: int


def _backfill(symbols: list[str], days: float, home: Path) -> Backfill:
    """One warm collector: a first cycle of two other symbols (imports, GX's first
    validation, the warehouse's GX context), then the backfill cycle of ``symbols``."""
    clock = Clock(START_MS)
    settings = Settings(home=home)
    con = connect(settings)
    migrate(con)
    options = SourceOptions(kind="simulated")
    pool = FetchPool(options, settings, clock=clock)
    warmup = Timed()
    with measured(warmup):
        first = FollowState.load(con, pool.name, [("WARM0/USDT", "1m"), ("WARM1/USDT", "1m")])
        run_cycle(con, settings, pool, first, run_id="warm", cycle=1,
                  since_ms=int(START_MS - 0.1 * 86_400_000), source_kind=options.kind)  # fmt: skip
    state = FollowState.load(con, pool.name, [(s, "1m") for s in symbols])
    steps, total = Steps(), Timed()
    with step_timers(pool, steps), measured(total):
        cycle = run_cycle(
            con, settings, pool, state, run_id="backfill", cycle=1,
            since_ms=int(START_MS - days * 86_400_000), source_kind=options.kind,
        )  # fmt: skip
    pool.close()
    con.close()
    if cycle.error or cycle.failed:
        raise RuntimeError(cycle.summary())
    return Backfill(cycle, total, steps, warmup, cycle.feature_rows)


def _engines(symbols: list[str], days: float, home: Path) -> dict[str, Timed]:
    """Each engine alone on the backfill's rows (module docs)."""
    from expectations import engine
    from expectations.gate import gx_input
    from pipelines.features.batch import build_features_many

    out = {name: Timed() for name in ("exchange", "gx", "upsert", "features", "upsert_features")}
    since, until = _window(days)
    sim = SimulatedExchange()
    with measured(out["exchange"]):
        tables = [sim.candles(s, since, until, timeframe="1m") for s in symbols]
    batch = pa.concat_tables(tables).cast(CANDLE_SCHEMA)
    settings = Settings(home=home)
    con = connect(settings)
    migrate(con)
    now = dt.datetime.fromtimestamp(START_MS / 1000, dt.UTC)
    suite, definitions, frame = gx_input("candles", batch, now=now)
    engine.validate(settings, suite, definitions, frame.head(100), run_name="warm", rows=False)
    with measured(out["gx"]):
        engine.validate(settings, suite, definitions, frame, run_name="bench", rows=False)
    del frame
    with measured(out["upsert"]):
        upsert(con, "candles", batch, settings=settings)
    candles = pl.from_arrow(batch)
    assert isinstance(candles, pl.DataFrame)
    candles = candles.sort("exchange", "symbol", "ts")
    with measured(out["features"]):
        features = build_features_many(candles)
    with measured(out["upsert_features"]):
        upsert(con, "features", features.to_arrow(), settings=settings)
    con.close()
    out["rows"] = Timed(wall=batch.num_rows, cpu=features.height)
    return out


def _ratio(step: Timed, engine: Timed) -> str:
    return f"{step.wall / engine.wall:.1f}x wall, {step.cpu / engine.cpu:.1f}x CPU"


def _add(*parts: Timed) -> Timed:
    return Timed(sum(p.wall for p in parts), sum(p.cpu for p in parts))


def main() -> None:
    n_symbols = int(os.environ.get("BENCH_BACKFILL_SYMBOLS", "100"))
    days = float(os.environ.get("BENCH_BACKFILL_DAYS", "30"))
    symbols = [f"B{i}/USDT" for i in range(n_symbols)]
    load_before = os.getloadavg()[0]
    repeats = int(os.environ.get("BENCH_BACKFILL_REPEATS", "3"))
    with tempfile.TemporaryDirectory() as tmp:
        # the same backfill in a new collector and warehouse each time: single runs of the
        # 30-day backfill on the same idle cores took 39 to 53 s; the median run is reported
        runs = [_backfill(symbols, days, Path(tmp) / f"collector{n}") for n in range(repeats)]
        by_wall = sorted(runs, key=lambda r: r.total.wall)
        run = by_wall[len(by_wall) // 2]
        load_mid = os.getloadavg()[0]
        engines = _engines(symbols, days, Path(tmp) / "engines")
    load_after = os.getloadavg()[0]
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    c = run.cycle
    rows = c.rows_merged
    if engines["rows"].wall != c.rows_fetched:
        raise RuntimeError(f"engines saw {engines['rows'].wall:.0f} rows, the cycle {rows}")
    steps = run.steps.parts
    fetch, gate, feats = steps["fetch"], steps["gate"], steps["features"]
    total = run.total
    gate_engines = _add(engines["gx"], engines["upsert"])
    feature_engines = _add(engines["features"], engines["upsert_features"])
    all_engines = _add(engines["exchange"], gate_engines, feature_engines)
    rate = rows / total.wall
    rate_cpu = rows / total.cpu
    met = "met" if rate >= GOAL_CANDLES_PER_S else "not met"
    overhead = total.wall / all_engines.wall
    overhead_cpu = total.cpu / all_engines.cpu
    bound = "met" if max(overhead, overhead_cpu) <= GOAL_OVERHEAD else "not met"

    def row(label: str, s: Timed, engine: str, e: Timed) -> str:
        return (
            f"| {label} | {s.wall:.2f} | {s.cpu:.2f} | {engine} | {e.wall:.2f} | {e.cpu:.2f} "
            f"| {_ratio(s, e)} |"
        )

    md = [
        f"Load average (1 min) before: {load_before:.1f}, after the cycle: {load_mid:.1f}, at "
        f"the end: {load_after:.1f} (other sessions share the 2 cores: wall times carry that "
        "load; CPU seconds are this process's, all threads). Peak memory "
        f"{rss_gb:.1f} GB.",
        "",
        f"Backfill of {n_symbols} symbols x {days:g} days of 1m through the warm collector's "
        f"cycle (`pipelines.follow.run_cycle`): {c.rows_fetched:,} candles fetched, {rows:,} "
        f"merged, {run.features_rows:,} feature rows written, in **{total.wall:.1f} s wall** "
        f"({total.cpu:.1f} s CPU) = **{rate:,.0f} candles/s** end to end ({rate_cpu:,.0f} per "
        f"CPU second), the median of {repeats} runs (each a new collector and warehouse: "
        + ", ".join(
            f"{r.total.wall:.1f} s = {r.cycle.rows_merged / r.total.wall:,.0f}/s" for r in runs
        )
        + f"). Goal {GOAL_CANDLES_PER_S:,}/s on 2 cores: **{met}** at the median; "
        f"{sum(r.cycle.rows_merged / r.total.wall >= GOAL_CANDLES_PER_S for r in runs)} of "
        f"{repeats} runs reached it. The collector's "
        f"warm-up before it (imports, first GX validation, 2 symbols x 0.1 day) took "
        f"{run.warmup.wall:.1f} s wall, {run.warmup.cpu:.1f} s CPU.",
        "",
        "| step | step wall s | step CPU s | engine alone, same rows | engine wall s "
        "| engine CPU s | step / engine |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
        row("fetch", fetch, "simulated exchange", engines["exchange"]),
        row("gate + write (one call)", gate, "GX checkpoint + warehouse.upsert", gate_engines),
        row("", gate, "warehouse.upsert only", engines["upsert"]),
        row(
            "features (one pass, feature gate, upsert)",
            feats,
            "build_features_many + warehouse.upsert of the rows",
            feature_engines,
        ),
        row("", feats, "build_features_many only", engines["features"]),
        row("whole cycle", total, "all engines above", all_engines),
        "",
        f"Engines: GX checkpoint {engines['gx'].wall:.2f} s, upsert of the candles "
        f"{engines['upsert'].wall:.2f} s, of the {engines['rows'].cpu:,.0f} feature rows "
        f"{engines['upsert_features'].wall:.2f} s (wall). Flow overhead above the engines' own "
        f"time: {overhead:.2f}x wall, {overhead_cpu:.2f}x CPU (bound {GOAL_OVERHEAD:g}x): "
        f"**{bound}**.",
    ]
    text = "\n".join(md)
    print(text, flush=True)
    if os.environ.get("BENCH_BACKFILL_RECORD", "1") != "0":
        record("Backfill throughput (issue 16)", text)


if __name__ == "__main__":
    main()
