"""The data loop's costs (issue 16): the warm collector's cycle, a one-shot collect and an import
as new processes, a backfill beside its engines, and what a new worker process pays to import.

* Warm cycle, simulated exchange: ``BENCH_FOLLOW_SYMBOLS`` (default 10,100,500) symbols of 1m
  with ``BENCH_FOLLOW_HISTORY_DAYS`` (default 0.25) stored, then cycles of one new candle each
  (fetch, one gate call + upsert, one incremental features pass, the ingestion row); the
  minimum and the median of 3 cycles, and a 100-symbol run over 4x the history.
* The same cycle through the real ccxt client against the loopback exchange, 100 symbols: the
  fetch (HTTP + ccxt, 8 clients) apart from our code (gate, write, features, record).
* One-shot ``tradeloop collect`` of 100 symbols x 1 new candle after a backfill, and
  ``tradeloop import`` of a 5,000-row freqtrade file, each as a new process; where an import's
  time goes (``python -X importtime``).
* Backfill of 100 symbols x ``BENCH_FOLLOW_BACKFILL_DAYS`` (default 1) of 1m through the warm
  collector's first cycle, each step beside its engine on the same rows.
* Import cost of a new worker process (what a process worker pays per flow run).
"""

from __future__ import annotations

import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.feather as feather

from benchmarks.results import record
from pipelines.collect import SourceOptions
from pipelines.follow import CycleStats, FetchPool, FollowState, run_cycle
from pipelines.loopback import LoopbackExchange, LoopbackServer
from pipelines.simulated_exchange import (
    DAY_MS,
    DEFAULT_ORIGIN_MS,
    MINUTE_MS,
    SimulatedExchange,
    SimulationConfig,
)
from pipelines.sources import RetryPolicy
from warehouse import Settings, connect, migrate

ROOT = Path(__file__).resolve().parents[1]
ONE_SHOT_SECTION = "Data loop: one-shot collect and import as new processes (issue 16)"
START_MS = DEFAULT_ORIGIN_MS + 40 * 86_400_000 + 37_000


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _cycles(
    n_symbols: int, history_days: float, *, loopback: bool = False, repeats: int = 3
) -> tuple[CycleStats, list[CycleStats]]:
    """The backfill cycle and ``repeats`` one-new-candle cycles, in a fresh warehouse."""
    clock = Clock(START_MS)
    symbols = [f"B{i}/USDT" for i in range(n_symbols)]
    server = None
    options = SourceOptions(kind="simulated")
    if loopback:
        server = LoopbackServer(LoopbackExchange(symbols=symbols, clock=clock)).start()
        options = SourceOptions(
            kind="ccxt", exchange="binance", api_base=server.url,
            ccxt_config={"timeout": 20_000}, retry=RetryPolicy(max_attempts=5),
        )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home")
        con = connect(settings)
        migrate(con)
        pool = FetchPool(options, settings, workers=8, clock=clock)
        state = FollowState.load(con, pool.name, [(s, "1m") for s in symbols])
        since = int(clock() - history_days * 86_400_000)
        run: dict[str, Any] = {"con": con, "settings": settings, "pool": pool, "state": state}
        first = run_cycle(**run, run_id="bench", cycle=1, since_ms=since, source_kind=options.kind)
        later = []
        for cycle in range(2, repeats + 2):
            clock.now += MINUTE_MS
            later.append(
                run_cycle(**run, run_id="bench", cycle=cycle, since_ms=since,
                          source_kind=options.kind)
            )  # fmt: skip
        pool.close()
        con.close()
    if server is not None:
        server.stop()
    for c in [first, *later]:
        if c.error or c.failed:
            raise RuntimeError(c.summary())
    return first, later


def _row(label: str, cycles: list[CycleStats]) -> str:
    best = min(cycles, key=lambda c: c.seconds)
    med = statistics.median(c.seconds for c in cycles)
    ours = best.seconds - best.fetch_s
    return (
        f"| {label} | {best.rows_merged} | {best.seconds:.2f} | {med:.2f} | {best.fetch_s:.2f} "
        f"| {best.gate_s:.2f} | {best.features_s:.2f} | {ours:.2f} |"
    )


@dataclass
class Timed:
    """A command run as a new process: wall time, the child's CPU time (user + sys) and the
    1-minute load average when it started (other sessions share the cores)."""

    wall_s: float
    cpu_s: float
    load: float
    output: str

    def text(self) -> str:
        return f"{self.wall_s:.1f} s wall ({self.cpu_s:.1f} s CPU, load {self.load:.1f})"


def _timed_process(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> Timed:
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode:
        raise RuntimeError(f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return Timed(seconds, cpu, load, done.stdout + done.stderr)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "TRADELOOP"))}
    env.update(TRADELOOP_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def _cli(tree: Path | None = None) -> tuple[list[str], Path]:
    """The command line of ``tradeloop`` from this tree (or from ``tree``, another checkout:
    ``python -m flows.cli`` run there imports that tree's code)."""
    return [sys.executable, "-m", "flows.cli"], tree or ROOT


_SPLIT = re.compile(r"fetched in ([\d.]+) s, gated and written in ([\d.]+) s")


def _split(output: str) -> str:
    """The collect's own account of a run: fetch (the exchange) vs gate + write (ours)."""
    m = _SPLIT.search(output)
    return f"fetch {m[1]} s, gate+write {m[2]} s" if m else "no split logged (older code)"


def _one_shot_collect(
    n_symbols: int = 100, *, loopback: bool = False, tree: Path | None = None
) -> tuple[Timed, Timed]:
    """The backfill and, a minute later, the one-new-candle ``tradeloop collect`` of
    ``n_symbols`` as new processes. ``loopback``: through ccxt against the loopback exchange
    served from this process (a warm exchange, as a real one is), else the simulated source
    in the command's process (which generates each symbol's history from 2024-01-01 in every
    new process: about 0.6 s CPU a symbol at today's date, the exchange's cost, not ours)."""
    cli, cwd = _cli(tree)
    symbols = [f"C{i}/USDT" for i in range(n_symbols)]
    server = None
    extra: list[str] = []
    if loopback:
        # the exchange's history starts two days ago: generating it from 2024-01-01 in the
        # server's threads took minutes and its day cache raced (KeyError answers)
        today = int(time.time() * 1000) // DAY_MS * DAY_MS
        simulated = SimulatedExchange(SimulationConfig(origin_ms=today - 2 * DAY_MS))
        server = LoopbackServer(LoopbackExchange(symbols=symbols, simulated=simulated)).start()
        extra = ["--source", "ccxt", "--exchange", "binance", "--api-base", server.url]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = _env(Path(tmp) / "home")
            args = [*cli, "collect", "-s", ",".join(symbols), "-t", "1m", *extra]
            backfill = _timed_process([*args, "--lookback-days", "0.1"], env, cwd)
            time.sleep(60.5 - time.time() % 60)  # a new minute has closed: one new candle each
            again = _timed_process([*args, "--lookback-days", "0.1"], env, cwd)
            if "merged" not in again.output:
                raise RuntimeError(again.output)
    finally:
        if server is not None:
            server.stop()
    return backfill, again


def _import_file(
    candles_dir: Path, tree: Path | None = None
) -> tuple[Timed, Timed, list[tuple[str, float]]]:
    """``tradeloop import`` of a 5,000-row freqtrade file as a new process: into a new home
    (its first gate builds the GX project) and into a home that has gated before; and the
    biggest self-contained imports of that process (``-X importtime``, cumulative seconds)."""
    cli, cwd = _cli(tree)
    with tempfile.TemporaryDirectory() as tmp:
        source = feather.read_table(candles_dir / "UNITTEST_BTC-1m.feather")
        files = [Path(tmp) / f"IM{letter}_BTC-1m.feather" for letter in "PQRS"]
        for i, path in enumerate(files):  # the name is the symbol: new rows each time
            feather.write_feather(source.slice(min(i, 1) * 5_000, 5_000), path)
        first = files[0]
        # min of 3 each (single runs on the same idle cores varied by up to 1 s): three new
        # homes, then three imports of new rows into a home that has gated before
        fresh = min(
            (
                _timed_process([*cli, "import", str(first)], _env(Path(tmp) / f"new{n}"), cwd)
                for n in range(3)
            ),
            key=lambda timed: timed.wall_s,
        )
        env = _env(Path(tmp) / "new0")
        warm = min(
            (_timed_process([*cli, "import", str(path)], env, cwd) for path in files[1:]),
            key=lambda timed: timed.wall_s,
        )
        env2 = _env(Path(tmp) / "home2")
        log = _timed_process(
            [sys.executable, "-X", "importtime", "-m", "flows.cli", "import", str(first)],
            env2,
            cwd,
        ).output
    top: dict[str, float] = defaultdict(float)
    for line in log.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m[2]) == 1:  # a top-level import of its importer
            top[m[3].split(".")[0]] += int(m[1]) / 1e6
    return fresh, warm, sorted(top.items(), key=lambda kv: -kv[1])[:8]


def _worker_imports() -> list[tuple[str, float]]:
    """Seconds a fresh process spends importing what a flow run needs (min of 2 each)."""
    out = []
    for label, code in (
        ("python alone", "pass"),
        ("prefect", "import prefect"),
        ("polars + pyarrow + duckdb", "import polars, pyarrow, duckdb"),
        ("ccxt", "import ccxt"),
        ("great_expectations", "import great_expectations"),
        ("flows.pipeline (what a minutely run imports)", "import flows.pipeline"),
    ):
        times = []
        for _ in range(2):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
            times.append(time.perf_counter() - started)
        out.append((label, min(times)))
    return out


def _backfill_engines(n_symbols: int, days: float) -> dict[str, float]:
    """The engines alone on the backfill's rows: the simulated exchange, warehouse.upsert,
    build_features_many."""
    from pipelines.features.batch import build_features_many
    from warehouse import upsert

    sim = SimulatedExchange()
    end = START_MS - START_MS % MINUTE_MS
    begin = end - int(days * 86_400_000)
    started = time.perf_counter()
    tables = [sim.candles(f"B{i}/USDT", begin, end, timeframe="1m") for i in range(n_symbols)]
    fetch = time.perf_counter() - started
    batch = pa.concat_tables(tables)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home")
        con = connect(settings)
        migrate(con)
        started = time.perf_counter()
        upsert(con, "candles", batch, settings=settings)
        write = time.perf_counter() - started
        con.close()
    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    frame = frame.sort("exchange", "symbol", "ts")
    started = time.perf_counter()
    build_features_many(frame)
    features = time.perf_counter() - started
    return {"rows": batch.num_rows, "fetch": fetch, "upsert": write, "features": features}


def main() -> None:
    sizes = [int(s) for s in os.environ.get("BENCH_FOLLOW_SYMBOLS", "10,100,500").split(",")]
    history = float(os.environ.get("BENCH_FOLLOW_HISTORY_DAYS", "0.25"))
    backfill_days = float(os.environ.get("BENCH_FOLLOW_BACKFILL_DAYS", "1"))
    parts = os.environ.get("BENCH_FOLLOW_PARTS", "cycle,ccxt,oneshot,import,backfill,worker")
    load = os.getloadavg()[0]
    md = [
        f"Load average when it started: {load:.1f} (other sessions' tests share the 2 cores; "
        "every figure here is wall time under that load).",
        "",
    ]
    if "cycle" in parts or "ccxt" in parts:
        md += [
            "Warm collector, one cycle after the backfill: 1 new 1m candle per symbol through "
            "fetch, ONE gate call + upsert, ONE incremental features pass and the ingestion "
            "row. Best and median of 3 cycles; 'ours' = everything but the fetch.",
            "",
            "| run | new rows | best s | median s | fetch s | gate+write s | features s | ours s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
    if "cycle" in parts:
        for n in sizes:
            _, later = _cycles(n, history)
            md.append(_row(f"simulated, {n} symbols, {history:g} d stored", later))
            print(md[-1], flush=True)
        if 100 in sizes:
            _, later = _cycles(100, 4 * history)
            md.append(_row(f"simulated, 100 symbols, {4 * history:g} d stored", later))
            print(md[-1], flush=True)
    if "ccxt" in parts:
        _, later = _cycles(100, history, loopback=True)
        md.append(_row("ccxt -> loopback (HTTP), 100 symbols, 8 clients", later))
        print(md[-1], flush=True)
    baseline = os.environ.get("BENCH_FOLLOW_BASELINE")  # a checkout of the code before
    base_tree = Path(baseline) if baseline else None
    # which parts also run the code before (a one-shot of it took minutes)
    base_parts = os.environ.get("BENCH_FOLLOW_BASELINE_PARTS", "import")
    one = [
        f"Load average when it started: {os.getloadavg()[0]:.1f} (other sessions share the 2 "
        "cores: each row gives its own load and the child's CPU time beside the wall time).",
    ]
    if "oneshot" in parts:
        one += [
            "",
            "One-shot `tradeloop collect` of 100 symbols (1m) as a new process: the backfill "
            "of 0.1 day, then the same command a minute later (1 new candle each; goal 10 s "
            "wall). CPU = the child's user + sys; load = 1-minute load average at its start; "
            "the split is the command's own log line (fetch = the exchange's side).",
            "",
            "| source | code | backfill | 1 new candle each | split of the second run |",
            "| --- | --- | --- | --- | --- |",
        ]
        kinds = os.environ.get("BENCH_FOLLOW_ONESHOT", "simulated,loopback")
        for loopback in [k == "loopback" for k in ("simulated", "loopback") if k in kinds]:
            label = "ccxt -> loopback (warm server)" if loopback else "simulated (in process)"
            trees: list[tuple[str, Path | None]] = [("this", None)]
            trees += [("before", base_tree)] if base_tree and "oneshot" in base_parts else []
            for name, tree in trees:
                backfill, again = _one_shot_collect(loopback=loopback, tree=tree)
                one.append(
                    f"| {label} | {name} | {backfill.text()} | **{again.text()}** "
                    f"| {_split(again.output)} |"
                )
                print(one[-1], flush=True)
    if "import" in parts:
        one += [
            "",
            "`tradeloop import` of a 5,000-row freqtrade file as a new process (goal 5 s "
            "wall): into a new home (its first gate also builds the GX project: suites, "
            "validation definition, checkpoint) and into a home that has gated before (min "
            "of 3 runs each: three new homes; new rows each time in the other).",
            "",
            "| code | new home | home with its GX project |",
            "| --- | --- | --- |",
        ]
        top: list[tuple[str, float]] = []
        trees = [("this", None)]
        trees += [("before", base_tree)] if base_tree and "import" in base_parts else []
        for name, tree in trees:
            fresh, warm, tops = _import_file(ROOT.parent / "shared" / "data" / "candles", tree)
            top = top or tops
            one.append(f"| {name} | {fresh.text()} | **{warm.text()}** |")
            print(one[-1], flush=True)
        one += [
            "",
            "Biggest top-level imports of that process (`python -X importtime`, cumulative): "
            + ", ".join(f"{name} {s:.2f} s" for name, s in top)
            + ".",
        ]
    if "backfill" in parts:
        first, _ = _cycles(100, backfill_days, repeats=1)
        engines = _backfill_engines(100, backfill_days)
        rows = first.rows_merged
        total = first.seconds
        md += [
            "",
            f"Backfill through the warm collector's first cycle: 100 symbols x "
            f"{backfill_days:g} day of 1m = {rows:,} candles in {total:.1f} s = "
            f"**{rows / total:,.0f} candles/s** end to end (goal 100,000/s for 30 days"
            + ("" if backfill_days >= 30 else f"; {backfill_days:g} day(s) here")
            + ").",
            "",
            "| step | step s | engine alone on the same rows | engine s | step / engine |",
            "| --- | ---: | --- | ---: | ---: |",
            f"| fetch | {first.fetch_s:.2f} | simulated exchange | {engines['fetch']:.2f} "
            f"| {first.fetch_s / engines['fetch']:.1f}x |",
            f"| gate + write (one call) | {first.gate_s:.2f} | warehouse.upsert | "
            f"{engines['upsert']:.2f} | {first.gate_s / engines['upsert']:.1f}x |",
            f"| features (one pass + feature gate + upsert) | {first.features_s:.2f} "
            f"| build_features_many | {engines['features']:.2f} "
            f"| {first.features_s / engines['features']:.1f}x |",
        ]
        print("\n".join(md[-8:]), flush=True)
    if "worker" in parts:
        md += [
            "",
            "Import cost of a fresh Python process (a process worker pays it on every flow "
            "run), min of 2:",
            "",
            "| import | s |",
            "| --- | ---: |",
            *[f"| {label} | {s:.2f} |" for label, s in _worker_imports()],
        ]
        print("\n".join(md[-8:]), flush=True)
    if any(p in parts for p in ("cycle", "ccxt", "backfill", "worker")):
        text = "\n".join(md)
        print(text)
        record("Data loop: warm collector, one-shot commands, backfill (issue 16)", text)
    if "oneshot" in parts or "import" in parts:
        text = "\n".join(one)
        print(text)
        record(ONE_SHOT_SECTION, text)


if __name__ == "__main__":
    main()
