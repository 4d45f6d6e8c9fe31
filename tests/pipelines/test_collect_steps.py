"""The plain collection steps: resume planning, idempotent re-runs, ingestion stats."""

from __future__ import annotations

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipelines.collect import (
    collect_series,
    plan_windows,
    record_ingestion,
    resample_stored,
    stored_range,
    upsert_merge,
)
from pipelines.simulated_exchange import DEFAULT_ORIGIN_MS, MINUTE_MS
from pipelines.sources import SimulatedSource, fetch_candles
from tests.support.loopback import frozen_clock

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
    planned = set()
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
