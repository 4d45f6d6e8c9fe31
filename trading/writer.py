"""Buffered warehouse writes off the hot path of the serving loop.

The loop appends rows (plain dicts) to a ``WriteBatch`` and hands a finished batch to the
``BufferedWriter``; a background thread writes it with ``warehouse.upsert_many`` (idempotent by
key): every table of the batch and its ``loop_state`` snapshot in one transaction. When that
fails, the batch is written again table by table, the snapshot LAST, so that one bad table
sets aside only its own rows (below).

* The queue is bounded (``max_queue`` batches): a full queue makes ``submit`` wait for the
  writer (back-pressure on a replay, nothing dropped). With ``refuse_over`` (live mode) a
  backlog of that many batches makes ``submit`` raise ``WriterBacklogFull`` instead: the loop
  keeps the rows and does not trade while the warehouse cannot record what it would do.
* A transient failure (warehouse unreachable, commit conflicts beyond the upsert's own
  retries, I/O) is retried with capped exponential backoff, ``max_attempts`` times in all.
* A permanent failure (``SchemaError``, a constraint or conversion error: the same rows would
  fail forever) is not retried. That table's rows, and the batch's ``loop_state`` snapshot, are
  set aside in a dead-letter file (JSON lines under ``home/deadletter/``), logged and counted;
  the writer goes on with the next batch, so ``flush`` never hangs on one bad batch. A batch
  that exhausts its transient retries is set aside the same way. The snapshot is written only
  when every row of its batch was, so a restart from it never skips rows; rows written after
  the last snapshot are recomputed identically on replay and re-upserted without change.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from warehouse import SchemaError, Settings, upsert, upsert_many

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


class WriterBacklogFull(RuntimeError):
    """Live mode: the writer holds ``refuse_over`` unwritten batches and takes no more."""


# Errors that the same rows raise again whatever the retry: the batch is set aside at once.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    SchemaError,
    duckdb.ConstraintException,
    duckdb.ConversionException,
    duckdb.BinderException,
    duckdb.TypeMismatchException,
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    TypeError,
    KeyError,
)


def is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, PERMANENT_ERRORS)


def dead_letter_file(home: Path) -> Path:
    return home / "deadletter" / "writer.jsonl"


def read_dead_letters(path: Path) -> list[dict[str, Any]]:
    """The entries of a dead-letter file: {"at", "table", "error", "permanent", "rows"}."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class BufferedWriter:
    """Writes ``WriteBatch``es in order from a background thread (or inline with
    ``background=False``); see the module docstring for the queue bound, the retries and the
    dead-letter file."""

    def __init__(
        self,
        settings: Settings,
        connect: Callable[[], duckdb.DuckDBPyConnection],
        *,
        background: bool = True,
        initial_backoff_s: float = 0.05,
        max_backoff_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 10,
        max_queue: int = 256,
        refuse_over: int | None = None,
        dead_letter_path: Path | None = None,
    ) -> None:
        if max_attempts < 1 or max_queue < 1 or (refuse_over is not None and refuse_over < 1):
            raise ValueError("BufferedWriter: max_attempts, max_queue and refuse_over must be >= 1")
        self.settings = settings
        self._connect = connect
        self._con: duckdb.DuckDBPyConnection | None = None
        self.queue: deque[WriteBatch] = deque()
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep
        self.max_attempts = max_attempts
        self.max_queue = max_queue
        self.refuse_over = refuse_over
        self.dead_letter_path = dead_letter_path or dead_letter_file(settings.home)
        self.failures = 0
        self.rows_written = 0
        self.dead_letter_batches = 0
        self.dead_letter_rows = 0
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
        """Queue ``batch``. Raises ``WriterBacklogFull`` (live: ``refuse_over`` batches are
        unwritten; the caller keeps the rows); waits while the queue is full (``max_queue``)."""
        if not len(batch):
            return
        with self._cv:
            if self.refuse_over is not None and self.pending_batches >= self.refuse_over:
                raise WriterBacklogFull(
                    f"{self.pending_batches} batches not yet written (limit {self.refuse_over}); "
                    f"last error: {self.last_error}"
                )
            while self._thread is not None and len(self.queue) >= self.max_queue:
                self._cv.wait()
            self.queue.append(batch)
            self._cv.notify_all()
        if self._thread is None:
            self._drain()

    @property
    def pending_batches(self) -> int:
        """Batches not yet written or set aside (the one being written stays in ``queue``
        until it is: counting ``_busy`` too counted it twice, and a refusal came one batch
        early whenever the writer thread had already picked it up)."""
        return len(self.queue)

    def stats(self) -> dict[str, Any]:
        """For heartbeats and reports."""
        return {
            "pending_batches": self.pending_batches,
            "rows_written": self.rows_written,
            "failures": self.failures,
            "dead_letter_batches": self.dead_letter_batches,
            "dead_letter_rows": self.dead_letter_rows,
            "last_error": self.last_error,
        }

    # -- writing
    def _write_table(self, name: str, table: pa.Table) -> None:
        if self._con is None:
            self._con = self._connect()
        result = upsert(self._con, name, table, settings=self.settings)
        self.rows_written += result.rows_in

    def _write_tables(self, tables: list[tuple[str, pa.Table]]) -> None:
        if self._con is None:
            self._con = self._connect()
        results = upsert_many(self._con, tables, settings=self.settings)
        self.rows_written += sum(r.rows_in for r in results)

    def _write_with_retry(self, name: str, table: pa.Table) -> BaseException | None:
        """None when written; else the error that set it aside (permanent, or transient after
        ``max_attempts``)."""
        return self._retrying(name, lambda: self._write_table(name, table))

    def _retrying(self, name: str, write: Callable[[], None]) -> BaseException | None:
        backoff = self.initial_backoff_s
        for attempt in range(1, self.max_attempts + 1):
            try:
                write()
                return None
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if is_permanent(exc):
                    return exc
                if self._con is not None:  # a broken session is reopened on the next attempt
                    with contextlib.suppress(Exception):
                        self._con.close()
                    self._con = None
                if attempt == self.max_attempts:
                    return exc
                log.warning(
                    "warehouse write of %s failed (%s); attempt %d/%d, retrying in %.2f s",
                    name,
                    self.last_error,
                    attempt,
                    self.max_attempts,
                    backoff,
                )
                self.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
        return None  # pragma: no cover - the loop returns on its last attempt

    def _write(self, batch: WriteBatch) -> None:
        try:
            tables = batch.arrow()
        except Exception:  # rows that cannot become a table: found and set aside table by table
            tables = []
        if tables:
            batch_error = self._retrying("its batch", lambda: self._write_tables(tables))
            if batch_error is None:
                return
            if not is_permanent(batch_error):  # transient to the end: all of it is set aside
                why = f"{type(batch_error).__name__}: {batch_error}"
                for name, table_rows in batch.tables.items():
                    self._set_aside(name, list(table_rows.values()), why, batch_error)
                return
        self._write_table_by_table(batch)

    def _write_table_by_table(self, batch: WriteBatch) -> None:
        """After a permanent error: only the bad table's rows (and the snapshot) are set aside."""
        failed = False
        for name in TABLE_ORDER:
            rows = batch.tables.get(name)
            if not rows:
                continue
            if name == "loop_state" and failed:
                # the snapshot only after every row of its batch: a restart recomputes them
                self._set_aside(name, list(rows.values()), "rows of its batch were set aside")
                continue
            try:
                table = _arrow(list(rows.values()))
            except Exception as exc:  # rows that cannot even become a table: permanent
                error: BaseException | None = exc
            else:
                error = self._write_with_retry(name, table)
            if error is not None:
                failed = True
                self._set_aside(
                    name, list(rows.values()), f"{type(error).__name__}: {error}", error
                )

    def _set_aside(
        self,
        table: str,
        rows: list[dict[str, Any]],
        why: str,
        error: BaseException | None = None,
    ) -> None:
        entry = {
            "at": dt.datetime.now(dt.UTC).isoformat(),
            "table": table,
            "error": why,
            "permanent": error is None or is_permanent(error),
            "rows": rows,
        }
        self.dead_letter_batches += 1
        self.dead_letter_rows += len(rows)
        try:
            self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
            with self.dead_letter_path.open("a") as f:
                f.write(json.dumps(entry, default=str) + "\n")
        except OSError as exc:  # nowhere to keep them: say so loudly, with the rows
            log.error("could not write the dead-letter file (%s); rows of %s: %s", exc, table, rows)
            return
        log.error(
            "warehouse write of %d %s rows set aside in %s: %s",
            len(rows),
            table,
            self.dead_letter_path,
            why,
        )

    def _drain(self) -> None:
        while True:
            with self._cv:
                if not self.queue:
                    return
                batch = self.queue[0]
                self._busy = True
            try:
                self._write(batch)
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
            try:
                self._drain()
            except Exception:  # never let the thread die with batches queued (flush would hang)
                log.exception("serve writer: unexpected error")

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every submitted batch is written or set aside; False on timeout."""
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
