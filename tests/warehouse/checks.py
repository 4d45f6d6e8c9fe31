"""Checks shared by the tests that run worker processes (tests/warehouse/workers.py)."""

from __future__ import annotations

from tests.warehouse.workers import BATCH_ROWS, batch_starts, writer_price
from warehouse import Settings, connect


def assert_one_writer_per_key(
    settings: Settings, seeds: list[int], batches: int, *, exchange: str = "test"
) -> None:
    """Every key some writer wrote is there once, whole, with one of its writers' values."""
    writers_of: dict[int, set[float]] = {}
    for seed in seeds:
        for start in batch_starts(seed, batches):
            for minute in range(start, start + BATCH_ROWS):
                writers_of.setdefault(minute, set()).add(writer_price(seed))
    con = connect(settings, read_only=True)
    rows = con.execute(
        "SELECT CAST((epoch(ts) - epoch(TIMESTAMPTZ '2024-01-01 00:00:00+00')) / 60 AS BIGINT), "
        "open, high, low, close, volume FROM candles WHERE exchange = ?",
        [exchange],
    ).fetchall()
    con.close()
    minutes = [row[0] for row in rows]
    assert len(minutes) == len(set(minutes)), "a key is there twice"
    assert set(minutes) == set(writers_of), "keys are missing or unexpected"
    for minute, open_, high, low, close, volume in rows:
        # one writer's complete row: candle_batch derives every value from the writer's price
        assert open_ in writers_of[minute], f"minute {minute}: price {open_} from no writer"
        assert (high, low, close, volume) == (open_ + 1, open_ - 1, open_ + 0.5, 1.0 + minute), (
            f"minute {minute}: values of different writers mixed in one row"
        )
    overlapping = sum(1 for prices in writers_of.values() if len(prices) > 1)
    assert overlapping > 0, "the test needs keys that several writers write"
