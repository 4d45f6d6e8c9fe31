"""Progress of long work, as a tiny interface the plain packages report to.

A long loop in ``pipelines``, ``models`` or ``trading`` takes ``progress: Progress | None`` and
calls ``advance`` in the loop it already has; it never knows how progress is shown. The CLI
chooses: rich bars with counts, rate and ETA when stdout is a terminal
(``flows.commands.progress``), plain log lines when it is not (``LogProgress``), nothing under
a Prefect run or in tests (``NoProgress``, the default). Without an explicit argument a function
reports to ``current()``, which the CLI sets for the command (``reporting``): the flows between
the command and the loop need no new parameter (a flow parameter would be serialized by Prefect).

Tasks nest as a stack: ``start`` opens a task under the open one (retrain: members, then each
member's epochs), ``advance`` moves the innermost, ``done`` closes it. Work spread over threads
only calls ``advance`` on a task the caller opened.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")


class Progress(Protocol):
    def start(self, task: str, total: int | None = None) -> None:
        """Open ``task`` (``total`` steps, or None when unknown) under the open one."""

    def advance(self, n: int = 1, *, note: str | None = None) -> None:
        """``n`` more steps of the innermost task; ``note`` is a short status (e.g. a loss)."""

    def done(self) -> None:
        """Close the innermost task."""


class NoProgress:
    """Reports nothing: the default for library calls, tests and Prefect runs."""

    def start(self, task: str, total: int | None = None) -> None:
        pass

    def advance(self, n: int = 1, *, note: str | None = None) -> None:
        pass

    def done(self) -> None:
        pass


@dataclass
class _Task:
    name: str
    total: int | None
    started: float = field(default_factory=time.monotonic)
    completed: int = 0
    logged: float = field(default_factory=time.monotonic)


class LogProgress:
    """Plain log lines (for a log file or a pipe, where a bar's control codes are noise): one when
    a task starts, at most one per ``every_s`` seconds while it runs, and one when it ends, each
    with the count, the rate and, when the total is known, the time left."""

    def __init__(
        self, logger: logging.Logger | None = None, *, every_s: float = 10.0, top_only: bool = False
    ) -> None:
        self.logger = logger or logging.getLogger("tradeloop.progress")
        self.every_s = every_s
        self.top_only = top_only  # log only the outermost task (nested ones are too chatty)
        self._tasks: list[_Task] = []
        self._lock = threading.Lock()

    def start(self, task: str, total: int | None = None) -> None:
        with self._lock:
            self._tasks.append(_Task(task, total))
            if self._logs(len(self._tasks) - 1):
                size = f" ({total} steps)" if total is not None else ""
                self.logger.info(f"{task}: started{size}")

    def advance(self, n: int = 1, *, note: str | None = None) -> None:
        with self._lock:
            if not self._tasks:
                return
            t = self._tasks[-1]
            t.completed += n
            now = time.monotonic()
            if now - t.logged >= self.every_s and self._logs(len(self._tasks) - 1):
                t.logged = now
                self.logger.info(status_line(t.name, t.completed, t.total, now - t.started, note))

    def done(self) -> None:
        with self._lock:
            if not self._tasks:
                return
            t = self._tasks.pop()
            if self._logs(len(self._tasks)):
                elapsed = time.monotonic() - t.started
                self.logger.info(status_line(t.name, t.completed, t.total, elapsed) + ", done")

    def close_all(self) -> None:
        """Drop every open task without a line (the work failed half-way: its error says so)."""
        with self._lock:
            self._tasks.clear()

    def _logs(self, depth: int) -> bool:
        return depth == 0 or not self.top_only


def status_line(
    name: str, completed: int, total: int | None, elapsed_s: float, note: str | None = None
) -> str:
    """``features: 3/10 (1.5/s, 5 s left)``: the count, the rate and the time left."""
    rate = completed / elapsed_s if elapsed_s > 0 else 0.0
    count = f"{completed}/{total}" if total is not None else f"{completed}"
    parts = [f"{rate:,.1f}/s"]
    if total is not None and rate > 0:
        parts.append(f"{max(total - completed, 0) / rate:,.0f} s left")
    extra = f" {note}" if note else ""
    return f"{name}: {count} ({', '.join(parts)}){extra}"


_current: Progress = NoProgress()


def current() -> Progress:
    """Where a function reports when its caller passed no ``progress``."""
    return _current


@contextlib.contextmanager
def reporting(progress: Progress) -> Iterator[Progress]:
    """Make ``progress`` the process's ``current()`` for the block (the CLI, around a command)."""
    global _current
    before, _current = _current, progress
    try:
        yield progress
    finally:
        _current = before


@contextlib.contextmanager
def task(
    name: str, total: int | None = None, progress: Progress | None = None
) -> Iterator[Progress]:
    """``start`` and, however the block ends, ``done``."""
    p = progress if progress is not None else current()
    p.start(name, total)
    try:
        yield p
    finally:
        p.done()


def each(items: Sequence[T], name: str, progress: Progress | None = None) -> Iterator[T]:
    """The items of an existing ``for`` loop, as a task of ``len(items)`` steps: one step per
    item the loop finished (``continue`` included); closed when the loop ends or breaks."""
    with task(name, len(items), progress) as p:
        for item in items:
            yield item
            p.advance()
