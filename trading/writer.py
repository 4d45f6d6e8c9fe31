"""Buffered warehouse writes off the hot path of the serving loop.

The loop appends rows (plain dicts) to a ``WriteBatch`` and hands a finished batch to the
``BufferedWriter``; a background thread writes it with ``warehouse.upsert`` (idempotent by key),
table by table, the ``loop_state`` snapshot LAST. A failing write (warehouse down, commit
conflicts beyond the upsert's own retries) is retried with capped exponential backoff and the
batch stays queued: nothing accepted is dropped. The snapshot is written only after all rows of
its batch, so a restart from it never skips rows; rows written after the last snapshot are
recomputed identically on replay and re-upserted without change.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from warehouse import Settings, upsert

log = logging.getLogger("tradeloop.serve.writer")

TIME_COLUMNS = ("ts", "updated_at", "resolved_at", "last_ts")
TABLE_ORDER = (
    "predictions",
    "signals",
    "orders",
    "fills",
    "equity",
    "loop_events",
    "loop_latency",
    "loop_state",
)


def _arrow(rows: list[dict[str, Any]]) -> pa.Table:
    columns: dict[str, pa.Array] = {}
    for name in rows[0]:
        values = [r.get(name) for r in rows]
        if name in TIME_COLUMNS:
            columns[name] = pa.array(values, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
        else:
            columns[name] = pa.array(values)
    return pa.table(columns)


@dataclass
class WriteBatch:
    tables: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)

    def add(self, table: str, key: tuple[Any, ...], row: dict[str, Any]) -> None:
        """Add or update (same key: the later values win, e.g. a resolved prediction)."""
        rows = self.tables.setdefault(table, {})
        if key in rows:
            rows[key].update(row)
        else:
            rows[key] = row

    def __len__(self) -> int:
        return sum(len(v) for v in self.tables.values())

    def arrow(self) -> list[tuple[str, pa.Table]]:
        out = []
        for t in TABLE_ORDER:
            rows = self.tables.get(t)
            if rows:
                out.append((t, _arrow(list(rows.values()))))
        return out


def now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


class BufferedWriter:
    """Writes ``WriteBatch``es in order from a background thread (or inline with
    ``background=False``), retrying failures forever with backoff (``max_backoff_s``)."""

    def __init__(
        self,
        settings: Settings,
        connect: Callable[[], duckdb.DuckDBPyConnection],
        *,
        background: bool = True,
        initial_backoff_s: float = 0.05,
        max_backoff_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._connect = connect
        self._con: duckdb.DuckDBPyConnection | None = None
        self.queue: deque[WriteBatch] = deque()
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep
        self.failures = 0
        self.rows_written = 0
        self.last_error: str | None = None
        self._cv = threading.Condition()
        self._closing = False
        self._busy = False
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="serve-writer", daemon=True)
            self._thread.start()

    # -- hot path
    def submit(self, batch: WriteBatch) -> None:
        if not len(batch):
            return
        with self._cv:
            self.queue.append(batch)
            self._cv.notify_all()
        if self._thread is None:
            self._drain()

    @property
    def pending_batches(self) -> int:
        return len(self.queue) + (1 if self._busy else 0)

    # -- writing
    def _write(self, batch: WriteBatch) -> None:
        if self._con is None:
            self._con = self._connect()
        tables = batch.arrow()
        for name, table in tables:
            result = upsert(self._con, name, table, settings=self.settings)
            self.rows_written += result.rows_in

    def _write_with_retry(self, batch: WriteBatch) -> None:
        backoff = self.initial_backoff_s
        while True:
            try:
                self._write(batch)
                return
            except Exception as exc:  # warehouse unavailable / conflicts: keep and retry
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "warehouse write failed (%s); retrying in %.2f s", self.last_error, backoff
                )
                if self._con is not None:
                    with contextlib.suppress(Exception):
                        self._con.close()
                    self._con = None
                self.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    def _drain(self) -> None:
        while True:
            with self._cv:
                if not self.queue:
                    return
                batch = self.queue[0]
                self._busy = True
            try:
                self._write_with_retry(batch)
            finally:
                with self._cv:
                    self.queue.popleft()
                    self._busy = False
                    self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self.queue and not self._closing:
                    self._cv.wait()
                if not self.queue and self._closing:
                    return
            self._drain()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every submitted batch is written; False on timeout."""
        if self._thread is None:
            self._drain()
            return True
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cv:
            while self.queue or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self, timeout_s: float | None = None) -> bool:
        ok = self.flush(timeout_s)
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None and ok:
            self._thread.join(timeout=5)
        if self._con is not None:
            self._con.close()
            self._con = None
        return ok
