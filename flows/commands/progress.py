"""Progress bars for the CLI: rich bars (count, rate, ETA) when stdout is a terminal, plain log
lines when it is not, nothing when the command is a Prefect flow run (its logs are the record).

A command wraps its work in ``command_progress(...)``: it opens the command's task and makes it
``pipelines.progress.current()``, which the plain functions report to.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichBars
from rich.text import Text

from pipelines.progress import LogProgress, NoProgress, Progress, reporting


class RateColumn(ProgressColumn):
    """Steps per second (rich's own speed column counts bytes)."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f}/s", style="progress.data.speed")


class RichProgress:
    """``pipelines.progress.Progress`` as rich bars: one line per open task, nested tasks
    indented under the one that opened them; the bars go when the outermost task closes."""

    def __init__(self, console: Console | None = None) -> None:
        self._bars = RichBars(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
            transient=False,
        )
        self._open: list[TaskID] = []
        self._lock = threading.Lock()

    def start(self, task: str, total: int | None = None) -> None:
        with self._lock:
            if not self._open:
                self._bars.start()
            name = "  " * len(self._open) + task
            self._open.append(self._bars.add_task(name, total=total, note=""))

    def advance(self, n: int = 1, *, note: str | None = None) -> None:
        with self._lock:
            if not self._open:
                return
            if note is None:
                self._bars.update(self._open[-1], advance=n)
            else:
                self._bars.update(self._open[-1], advance=n, note=note)

    def done(self) -> None:
        with self._lock:
            if not self._open:
                return
            task_id = self._open.pop()
            if self._open:  # a nested task (an epoch loop): its line goes, the parent stays
                self._bars.remove_task(task_id)
                return
            task = self._bars.tasks[0]
            if task.total is None:  # an unknown total is complete at the end
                self._bars.update(task_id, total=task.completed)
            self._bars.stop()  # prints the finished line; the next task starts a fresh display
            self._bars.remove_task(task_id)

    def close_all(self) -> None:
        """Close every open task (the command failed half-way) and restore the terminal."""
        while self._open:
            self.done()


def for_terminal(console: Console | None = None, *, tty: bool | None = None) -> Progress:
    """Rich bars when stdout is a terminal (``tty`` overrides the check), else log lines."""
    is_tty = sys.stdout.isatty() if tty is None else tty
    return RichProgress(console) if is_tty else LogProgress(top_only=True)


@contextlib.contextmanager
def command_progress(task: str | None = None, total: int | None = None) -> Iterator[Progress]:
    """The command's progress for its block: ``current()`` pointing at it and, when ``task`` is
    given, that task open (without one, the plain functions open their own). A Prefect flow run
    reports nothing here (the UI shows its task runs and logs)."""
    from flows.commands.context import cli_options
    from flows.orchestration import api_configured

    progress: Progress = (
        NoProgress() if cli_options().prefect or api_configured() else for_terminal()
    )
    with reporting(progress):
        if task is not None:
            progress.start(task, total)
        try:
            yield progress
            if task is not None:
                progress.done()
        finally:  # tasks left open by a failure: the bars stop where they were, no 'done' line
            if isinstance(progress, RichProgress | LogProgress):
                progress.close_all()
