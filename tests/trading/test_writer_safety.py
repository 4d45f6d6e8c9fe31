"""The serving loop's warehouse writer (issue 18, item 9): a bounded queue, a permanent error
sets its rows aside in a dead-letter file instead of blocking every later batch, a transient
one is retried a bounded number of times, and in live mode a backlog over its limit refuses new
rows, which the loop answers by not trading. Real warehouse, real candles, real errors."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import duckdb
import pytest

from pipelines.features import FEATURE_SET_VERSION
from tests.trading.serve_harness import TICKS, build_loop
from trading.fallback import ModelManager
from trading.loop import LoopConfig, ServingLoop
from trading.writer import (
    BufferedWriter,
    WriteBatch,
    WriterBacklogFull,
    dead_letter_file,
    read_dead_letters,
)
from warehouse import Settings, connect


def _batches(settings: Settings, n: int, per: int = 30) -> list[WriteBatch]:
    """``n`` batches of the rows a paper loop queues for ``per`` real candles each."""
    loop = build_loop(LoopConfig(), settings.home)
    out = []
    ticks = iter(TICKS)
    for _ in range(n):
        for _ in range(per):
            loop.on_tick(next(ticks))
        out.append(loop.rows.take())
    return out


def _count(lake: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(lake.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def test_a_permanent_error_sets_its_rows_aside_and_later_batches_are_written(
    settings: Settings, lake: duckdb.DuckDBPyConnection, caplog: pytest.LogCaptureFixture
) -> None:
    first, bad, last = _batches(settings, 3)
    for row in bad.tables["signals"].values():
        row["bogus"] = 1  # a column the table does not have: SchemaError, every time
    writer = BufferedWriter(settings, lambda: connect(settings), initial_backoff_s=0.01)
    with caplog.at_level(logging.ERROR, logger="tradeloop.serve.writer"):
        for batch in (first, bad, last):
            writer.submit(batch)
        assert writer.flush(timeout_s=20)  # it retried forever and flush hung
    writer.close()
    assert _count(lake, "signals") == 60  # the batches before and after it
    assert _count(lake, "equity") == 90  # the bad batch's other tables too
    (entry,) = read_dead_letters(dead_letter_file(settings.home))
    assert entry["table"] == "signals" and entry["permanent"] is True
    assert entry["error"].startswith("SchemaError") and "bogus" in entry["error"]
    assert [r["ts"] for r in entry["rows"]] == sorted(
        r["ts"] for r in bad.tables["signals"].values()
    )
    assert writer.dead_letter_batches == 1 and writer.dead_letter_rows == 30
    # not retried: the batch's one transaction failed once, then the signals table alone once
    assert writer.failures == 2
    assert any("set aside" in r.getMessage() for r in caplog.records)


def test_a_transient_error_is_retried_a_bounded_number_of_times(settings: Settings) -> None:
    (batch,) = _batches(settings, 1)
    attempts = []

    def unreachable() -> duckdb.DuckDBPyConnection:
        attempts.append(1)
        raise OSError("warehouse unreachable")

    writer = BufferedWriter(settings, unreachable, sleep=lambda s: None, max_attempts=3)
    writer.submit(batch)
    assert writer.flush(timeout_s=10)
    writer.close()
    entries = read_dead_letters(dead_letter_file(settings.home))
    assert {e["table"] for e in entries} == set(batch.tables)
    assert all(not e["permanent"] and "OSError" in e["error"] for e in entries)
    assert len(attempts) == 3  # the batch is one transaction, tried max_attempts times
    assert writer.dead_letter_rows == len(batch)


def test_the_queue_is_bounded(settings: Settings, lake: duckdb.DuckDBPyConnection) -> None:
    batches = _batches(settings, 4, per=5)
    gate = threading.Event()

    def slow_connect() -> duckdb.DuckDBPyConnection:
        gate.wait(30)
        return connect(settings)

    writer = BufferedWriter(settings, slow_connect, max_queue=2)
    for b in batches[:2]:  # the queue holds the batch being written (blocked) and one more
        writer.submit(b)
    third = threading.Thread(target=writer.submit, args=(batches[2],))
    third.start()
    time.sleep(0.5)
    assert third.is_alive() and len(writer.queue) == 2  # it waits for room
    gate.set()
    third.join(10)
    assert not third.is_alive()
    writer.submit(batches[3])
    assert writer.close(timeout_s=30)
    assert _count(lake, "equity") == 20


def test_live_backlog_refuses_rows_and_the_loop_does_not_trade_until_it_drains(
    settings: Settings, lake: duckdb.DuckDBPyConnection
) -> None:
    gate = threading.Event()

    def slow_connect() -> duckdb.DuckDBPyConnection:
        gate.wait(30)
        return connect(settings)

    writer = BufferedWriter(settings, slow_connect, refuse_over=2)
    config = dataclasses.replace(LoopConfig(account="live"), flush_every_steps=1)
    manager = ModelManager(lambda: None, FEATURE_SET_VERSION)  # the RSI rule decides every bar
    loop = ServingLoop(config, manager=manager, writer=writer, home=settings.home)
    ts = [t.bars[0].ts_ms for t in TICKS]
    for t in TICKS[:10]:
        loop.on_tick(t)
    assert loop.writes_refused is not None  # the third batch was refused
    with pytest.raises(WriterBacklogFull):
        writer.submit(_batches(settings, 1, per=1)[0])
    gate.set()
    assert writer.flush(timeout_s=30)
    for t in TICKS[10:20]:  # a live candle a minute: the writer keeps up between them
        loop.on_tick(t)
        assert writer.flush(timeout_s=30)
    loop.flush(wait=True)
    writer.close()
    decided = [
        r[0] for r in lake.execute("SELECT epoch_ms(ts) FROM signals ORDER BY ts").fetchall()
    ]
    # candles 0-2 decided before the refusal, none until the writer took rows again after
    # candle 10, then every one
    assert decided == ts[:3] + ts[11:20]
    equity = lake.execute("SELECT epoch_ms(ts) FROM equity ORDER BY ts").fetchall()
    assert [r[0] for r in equity] == ts[:20]  # no row lost: the refused ones were kept
    messages = [e[3] for e in loop.events if e[1] == "alert"]
    assert any(m.startswith("warehouse writes refused") for m in messages)
    assert "warehouse writes accepted again; trading" in messages
