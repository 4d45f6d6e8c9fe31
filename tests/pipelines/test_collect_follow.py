"""The warm collector (``pipelines.follow``): several cycles in one process, each fetching every
series' new candles, gating them in one call, writing them once and updating the features.

On the simulated exchange; then through the real ccxt client against the loopback exchange
while it answers a burst of 429/5xx and another process writes to the same table (commit
conflicts): every candle arrives once, none twice, and the features equal a full rebuild.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from pipelines.collect import SourceOptions
from pipelines.features import build_features
from pipelines.follow import CycleStats, follow
from pipelines.loopback import Fault, FaultPlan, LoopbackServer
from pipelines.simulated_exchange import DEFAULT_ORIGIN_MS, MINUTE_MS, SimulatedExchange
from tests.support.features import assert_same_features, stored_features
from tests.support.loopback import FAST_RETRY
from warehouse import Settings

START_MS = DEFAULT_ORIGIN_MS + 3 * 86_400_000 + 37_000  # 37 s into a minute
LOOKBACK_DAYS = 0.05  # 72 minutes before the first cycle


class Clock:
    """The exchange's and the collector's clock; a cycle's sleep moves it one interval on."""

    def __init__(self) -> None:
        self.now = START_MS

    def __call__(self) -> int:
        return self.now

    def sleep(self, _seconds: float) -> None:
        self.now += MINUTE_MS


def _stored(lake: duckdb.DuckDBPyConnection, symbol: str) -> pl.DataFrame:
    return pl.from_arrow(
        lake.execute(
            "SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume FROM candles "
            "WHERE symbol = ? ORDER BY ts",
            [symbol],
        ).fetch_arrow_table()
    )  # type: ignore[return-value]


def _assert_complete(
    lake: duckdb.DuckDBPyConnection, symbol: str, expected_ts: list[int], closes: list[float]
) -> None:
    stored = _stored(lake, symbol)
    assert stored["ts"].dt.epoch("ms").to_list() == expected_ts, symbol  # none lost, none twice
    assert stored["close"].to_list() == closes, symbol
    assert_same_features(stored_features(lake, symbol), build_features(stored))


def test_warm_collector_cycles_on_the_simulated_exchange(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    clock = Clock()
    symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    seen: list[CycleStats] = []
    cycles = follow(
        lake, settings, SourceOptions(kind="simulated"), symbols, ["1m"], every_s=60,
        max_cycles=4, lookback_days=LOOKBACK_DAYS, clock=clock, sleep=clock.sleep,
        on_cycle=seen.append,
    )  # fmt: skip
    assert [c.cycle for c in cycles] == [1, 2, 3, 4] and seen == cycles
    assert all(c.error is None and not c.failed for c in cycles), [c.summary() for c in cycles]
    since = START_MS - int(LOOKBACK_DAYS * 86_400_000)
    first_ts = since + (-since) % MINUTE_MS
    assert cycles[0].rows_merged == 3 * (START_MS // MINUTE_MS * MINUTE_MS - first_ts) // MINUTE_MS
    # after the first cycle each one brings one new closed minute per symbol, and its features
    assert [(c.rows_fetched, c.rows_merged, c.feature_rows) for c in cycles[1:]] == [(3, 3, 3)] * 3
    assert all(c.requests == 3 for c in cycles[1:])  # one request per series, not per page
    last_closed = clock.now // MINUTE_MS * MINUTE_MS
    sim = SimulatedExchange()
    for symbol in symbols:
        want = sim.candles(symbol, first_ts, last_closed, timeframe="1m")
        ts = want["ts"].cast(pa.int64()).to_pylist()
        _assert_complete(lake, symbol, ts, want["close"].to_pylist())
    # each cycle is one ingestion_runs row (symbol '*'), with its wall time and its split
    rows = lake.execute(
        "SELECT cycle, series, rows_merged, seconds, fetch_seconds, gate_seconds, "
        "features_seconds, status FROM ingestion_runs WHERE symbol = '*' ORDER BY cycle"
    ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [(c.cycle, 3, c.rows_merged) for c in cycles]
    assert all(r[3] >= r[4] + r[5] + r[6] > 0 for r in rows)
    # one gate call per cycle: one quality_results row per series per cycle
    per_cycle = lake.execute(
        "SELECT run_id, count(*) FROM quality_results WHERE table_name = 'candles' GROUP BY 1"
    ).fetchall()
    assert sorted(n for _, n in per_cycle) == [3, 3, 3, 3]


WRITER = textwrap.dedent(
    """
    import sys, time, pyarrow as pa
    from pathlib import Path
    from warehouse import Settings, connect, upsert
    settings = Settings(home=Path(sys.argv[1]))
    con = connect(settings)
    stop, n = Path(sys.argv[2]), 0
    while not stop.exists():
        ts = pa.array([1_600_000_000_000 + n * 60_000], pa.timestamp("ms", tz="UTC"))
        row = {"exchange": ["binance"], "symbol": ["OTHER/USDT"], "timeframe": ["1m"], "ts": ts}
        row.update({c: [1.0] for c in ("open", "high", "low", "close", "volume")})
        upsert(con, "candles", pa.table(row), settings=settings)
        n += 1
    print(n)
    """
)


@pytest.mark.slow  # a real HTTP exchange, retries, and a second writing process
def test_warm_collector_survives_a_5xx_burst_and_write_conflicts(
    loopback, lake: duckdb.DuckDBPyConnection, settings: Settings, tmp_path: Path
) -> None:
    clock = Clock()
    symbols = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT")
    # the first cycle's klines requests pass (two a series: the page, then an empty one);
    # then 20 answers in a row are 429 or 5xx: every series in flight spends its 5 attempts
    # and fails that cycle; the next cycle fetches what it missed
    burst = (Fault.RATE_LIMIT, Fault.SERVER_ERROR, Fault.UNAVAILABLE, Fault.SERVER_ERROR) * 5
    server: LoopbackServer = loopback(
        symbols=symbols,
        faults=FaultPlan(pattern=(None,) * 2 * len(symbols) + burst, repeat=False),
        clock=clock,
    )
    options = SourceOptions(
        kind="ccxt", exchange="binance", api_base=server.url,
        ccxt_config={"timeout": 2_000, "rateLimit": 1}, retry=FAST_RETRY,
    )  # fmt: skip
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(settings.home), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        cycles = follow(
            lake, settings, options, list(symbols), ["1m"], every_s=60, max_cycles=4,
            lookback_days=LOOKBACK_DAYS, clock=clock, sleep=clock.sleep, workers=4,
        )  # fmt: skip
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=120)
    commits = int(out.strip() or 0)
    assert commits >= 3, "the other writer barely ran: no conflicts were possible"
    assert sum(c.retries for c in cycles) >= 12  # the burst was met and retried
    assert any(c.failed for c in cycles), [c.summary() for c in cycles]  # one series gave up
    assert not cycles[-1].failed and cycles[-1].error is None
    since = START_MS - int(LOOKBACK_DAYS * 86_400_000)
    first_ts = since + (-since) % MINUTE_MS
    last_closed = clock.now // MINUTE_MS * MINUTE_MS
    for symbol in symbols:
        served = server.exchange.closed_candles(symbol, first_ts, last_closed)
        _assert_complete(
            lake, symbol, [int(t) for t in served.ts], [float(c) for c in served.close]
        )
    assert lake.execute(
        "SELECT count(*) FROM ingestion_runs WHERE symbol = '*' AND status = 'failed'"
    ).fetchone() == (sum(1 for c in cycles if c.failed or c.error),)
