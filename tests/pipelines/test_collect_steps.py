"""The plain collection steps: resume planning, idempotent re-runs, ingestion stats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.feather as feather
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from expectations.gate import GatePolicy, gate_and_merge, gate_series
from pipelines import follow
from pipelines.collect import (
    SeriesStats,
    SourceOptions,
    collect_series,
    plan_windows,
    record_ingestion,
    resample_stored,
    stored_range,
    upsert_merge,
)
from pipelines.follow import FetchPool
from pipelines.oneshot import collect_batched
from pipelines.simulated_exchange import DEFAULT_ORIGIN_MS, MINUTE_MS
from pipelines.sources import FileSource, SimulatedSource, fetch_candles
from tests.support.batches import candle_rows, to_arrow
from tests.support.loopback import frozen_clock
from warehouse import Settings, connect, migrate

M = MINUTE_MS


@hsettings(max_examples=200, deadline=None)
@given(
    since=st.integers(0, 1000),
    length=st.integers(1, 1000),
    stored=st.one_of(st.none(), st.tuples(st.integers(0, 1500), st.integers(0, 600))),
)
def test_plan_covers_exactly_what_is_missing(since: int, length: int, stored) -> None:
    until = since + length
    rng = None if stored is None else (stored[0] * M, (stored[0] + stored[1]) * M)
    windows = plan_windows(since * M, until * M, M, rng)
    wanted = set(range(since, until))
    have = set() if stored is None else set(range(stored[0], stored[0] + stored[1] + 1))
    planned: set[int] = set()
    for start, end in windows:
        assert end is not None and start < end
        minutes = set(range(start // M, end // M))
        assert not planned & minutes  # windows do not overlap
        planned |= minutes
    assert wanted - have <= planned  # everything missing is fetched
    assert not planned & have  # nothing stored is fetched again


def test_rerun_is_idempotent_and_resumes(lake, settings) -> None:
    source = SimulatedSource(clock=frozen_clock)
    merge = upsert_merge(lake, settings)
    since, until = frozen_clock() - 600 * M, frozen_clock() - frozen_clock() % M
    first = collect_series(source, merge, "BTC/USDT", "1m", since, until - 200 * M)
    stored = stored_range(lake, "simulated", "BTC/USDT", "1m")
    assert stored == (since - since % M + M, until - 201 * M)
    second = collect_series(source, merge, "BTC/USDT", "1m", since, until, stored=stored)
    third = collect_series(
        source,
        merge,
        "BTC/USDT",
        "1m",
        since,
        until,
        stored=stored_range(lake, "simulated", "BTC/USDT", "1m"),
    )
    assert first.rows_merged == 399 and second.fetch.rows == 200 and third.fetch.rows == 0
    assert lake.execute("SELECT count(*), count(DISTINCT ts) FROM candles").fetchone() == (599, 599)
    full = fetch_candles(source, "BTC/USDT", "1m", since, until)
    stored_rows = lake.execute(
        "SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume "
        "FROM candles ORDER BY ts"
    ).fetch_arrow_table()
    assert stored_rows.cast(full.schema).equals(full)
    for run, stats in enumerate((first, second, third)):
        assert record_ingestion(lake, f"run-{run}", [stats], settings=settings) == 1
    assert lake.execute("SELECT sum(rows_fetched) FROM ingestion_runs").fetchone() == (599,)


def test_resample_stored_matches_the_source(lake, settings) -> None:
    source = SimulatedSource(clock=frozen_clock)
    merge = upsert_merge(lake, settings)
    start = DEFAULT_ORIGIN_MS + 86_400_000
    collect_series(source, merge, "ETH/USDT", "1m", start, start + 6 * 3_600_000)
    hourly = resample_stored(lake, "simulated", "ETH/USDT", "1h", start, start + 6 * 3_600_000)
    direct = fetch_candles(source, "ETH/USDT", "1h", start, start + 6 * 3_600_000)
    assert hourly.num_rows == 6
    assert hourly.cast(direct.schema).equals(direct)


def test_resample_stored_never_emits_a_bucket_with_uncollected_minutes(lake, settings) -> None:
    source = SimulatedSource(clock=frozen_clock)
    start = DEFAULT_ORIGIN_MS + 86_400_000 + 17 * M  # mid-hour: 00:17
    collect_series(
        source, upsert_merge(lake, settings), "ETH/USDT", "1m", start, start + 3 * 3_600_000
    )
    hourly = resample_stored(lake, "simulated", "ETH/USDT", "1h", start, start + 3 * 3_600_000)
    first = hourly["ts"].cast("int64").to_pylist()[0]
    assert first == start - 17 * M + 3_600_000  # 00:17..00:59 is not a whole hour
    assert hourly.num_rows == 2  # 01:00 and 02:00; 03:00..03:17 is not closed


def test_make_source_errors_are_clear(settings) -> None:
    import pytest

    from pipelines.collect import SourceOptions, make_source
    from pipelines.sources import SourceError

    with pytest.raises(SourceError, match="needs --exchange"):
        make_source(SourceOptions(kind="ccxt"), settings)
    with pytest.raises(SourceError, match="unknown ccxt exchange 'nosuchex'"):
        make_source(SourceOptions(kind="ccxt", exchange="nosuchex"), settings)
    with pytest.raises(SourceError, match="needs a path"):
        make_source(SourceOptions(kind="file"), settings)


# ---------------------------------------------------------------------------- one-shot, batched


def _candle_files(folder: Path, symbols: list[str], n: int = 200) -> None:
    """One 1m feather file per symbol in freqtrade's layout (PAIR-1m.feather)."""
    for i, symbol in enumerate(symbols):
        rows = candle_rows(n, symbol=symbol)
        if i == 1:  # one inconsistent candle: quarantined within the policy
            rows["high"][20] = rows["low"][20] - 5.0
        if i == 3:  # three negative volumes: over the policy's limit, the series fails
            for row in (5, 6, 7):
                rows["volume"][row] = -1.0
        table = to_arrow(rows).rename_columns(
            ["exchange", "symbol", "timeframe", "date", "open", "high", "low", "close", "volume"]
        )
        feather.write_feather(
            table.drop(["exchange", "symbol", "timeframe"]),
            folder / f"{symbol.replace('/', '_')}-1m.feather",
        )


def _quality_rows(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """quality_results as per-series calls give them (``details.write`` is a call's, and
    ``series_in_call`` / ``elapsed_s`` say how it ran: left out)."""
    rows = con.execute(
        "SELECT validation_id, run_id, table_name, suite, exchange, symbol, timeframe, success, "
        "rows_in, rows_merged, rows_quarantined, warnings_json, details_json "
        "FROM quality_results ORDER BY symbol"
    ).fetchall()
    out = []
    for row in rows:
        details = json.loads(row[-1])
        for key in ("write", "series_in_call", "elapsed_s"):
            details.pop(key, None)
        out.append((*row[:-1], details))
    return out


def _stored(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    return {
        "candles": con.execute(
            "SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume FROM candles "
            "ORDER BY ALL"
        ).fetchall(),
        "quarantine": con.execute(
            "SELECT quarantine_id, run_id, table_name, exchange, symbol, timeframe, ts, "
            "expectation, column_name, reason, row_json FROM quarantine ORDER BY ALL"
        ).fetchall(),
    }


def test_one_shot_gates_every_series_in_one_call_as_per_series_calls_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    symbols = [f"S{i}/USDT" for i in range(6)]
    data = tmp_path / "data"
    data.mkdir()
    _candle_files(data, symbols)
    policy = GatePolicy(max_bad_fraction=0.01)  # 1 bad row of 200 passes, 3 fail
    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:  # the real gate, counted
        calls.append(args[2].num_rows)
        return gate_series(*args, **kwargs)

    monkeypatch.setattr(follow, "gate_series", counted)
    batched_settings = Settings(home=tmp_path / "batched")
    source = FileSource(data, name="binance")
    con = connect(batched_settings)
    migrate(con)
    pool = FetchPool(SourceOptions(kind="file"), batched_settings, sources=[source])
    try:
        batched, results = collect_batched(
            con, batched_settings, pool, source.series, 0, None, run_id="run-1",
            source_kind="file", resume=False, policy=policy,
        )  # fmt: skip
        batched_rows, batched_stored = _quality_rows(con), _stored(con)
    finally:
        pool.close()
        con.close()
    assert calls == [6 * 200]  # ONE gate call for the six series
    assert len(results) == 6 and [r.series for r in results] == [
        ("binance", s, "1m") for s in symbols
    ]

    # the same files, one gate call per series (what one task per symbol did)
    single_settings = Settings(home=tmp_path / "single")
    source = FileSource(data, name="binance")
    con = connect(single_settings)
    migrate(con)
    try:
        single = [
            collect_series(
                source,
                lambda table, batch: gate_and_merge(
                    con, table, batch, settings=single_settings, run_id="run-1", policy=policy
                ),
                symbol,
                timeframe,
                0,
                None,
                resume=False,
                source_kind="file",
            )
            for symbol, timeframe in source.series
        ]
        single_rows, single_stored = _quality_rows(con), _stored(con)
    finally:
        con.close()

    def outcome(s: SeriesStats) -> tuple:
        return (s.symbol, s.fetch.rows, s.rows_merged, s.rows_quarantined, s.gaps, s.status,
                s.message, s.warnings, s.first_ts_ms, s.last_ts_ms)  # fmt: skip

    assert [outcome(s) for s in batched] == [outcome(s) for s in single]
    assert [(s.symbol, s.status) for s in batched if s.status != "ok"] == [("S3/USDT", "failed")]
    assert batched_rows == single_rows and len(batched_rows) == 6
    assert batched_stored == single_stored
    assert len(batched_stored["quarantine"]) == 1 + 3  # the bad candle and the three volumes


def test_one_shot_in_rounds_resumes_and_is_idempotent(tmp_path: Path) -> None:
    """Pieces of 150 candles: a round per piece (one gate result per series each), every
    candle once; a run that stopped half-way resumes after what it stored, counting no gap
    at the seams; a re-run fetches nothing."""
    series = [(f"R{i}/USDT", "1m") for i in range(3)]
    since = frozen_clock() - 600 * M
    half = frozen_clock() - 300 * M

    def run(home: str, until: int | None, **kw: Any) -> tuple[list[SeriesStats], int]:
        settings = Settings(home=tmp_path / home)
        con = connect(settings)
        migrate(con)
        pool = FetchPool(SourceOptions(kind="simulated"), settings, clock=frozen_clock)
        try:
            stats, results = collect_batched(
                con, settings, pool, series, since, until, run_id=f"run-{until}",
                source_kind="simulated", **kw,
            )  # fmt: skip
        finally:
            pool.close()
            con.close()
        return stats, len(results)

    first, calls = run("rounds", half, piece_rows=150)
    assert calls == 2 * 3  # two rounds of 150 candles, one result per series each
    rest, calls = run("rounds", None, piece_rows=150)
    assert calls == 2 * 3  # resumed after the last stored candle: 299 more each
    assert [s.fetch.rows for s in first] == [300] * 3 and [s.fetch.rows for s in rest] == [299] * 3
    assert all(s.gaps == 0 for s in first + rest)
    again, calls = run("rounds", None, piece_rows=150)
    assert calls == 0 and [(s.fetch.requests, s.fetch.rows) for s in again] == [(0, 0)] * 3

    con = connect(Settings(home=tmp_path / "rounds"), read_only=True)
    try:
        stored = con.execute(
            "SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume FROM candles "
            "ORDER BY symbol, ts"
        ).fetch_arrow_table()
    finally:
        con.close()
    source = SimulatedSource(clock=frozen_clock)
    expected = pa.concat_tables(
        [fetch_candles(source, symbol, "1m", since, None) for symbol, _ in series]
    )
    assert expected.num_rows == 3 * 599  # every closed candle of the window, once
    assert stored.cast(expected.schema).equals(expected)
