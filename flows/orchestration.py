"""Prefect, when there is one: the flows' only door to Prefect's decorators, logger and artifacts.

A flow module imports ``flow``, ``task``, ``get_run_logger`` and the artifact functions from
here instead of ``prefect``. They are Prefect's own, with one difference: inside
``direct_run()`` a flow or task call runs its function in this process, with no flow run, no
task run and no API. The CLI uses that when no Prefect API is configured (``PREFECT_API_URL``
unset and no ``--prefect``), so a command never starts Prefect's temporary server (about 8 s)
and still runs exactly the code its deployment runs.

In direct mode:

* ``task.submit`` / ``task.map`` run on a thread pool (``DEFAULT_THREADS`` threads, like the
  flows' default task runner) and return futures with ``result()`` / ``wait()``;
* ``get_run_logger()`` is the ``tradeloop.flows`` logger;
* artifacts are not published (there is no UI to show them); the CLI prints the results.

The objects stay real ``prefect.Flow`` / ``prefect.Task`` instances, so ``prefect deploy``,
workers and served flows see ordinary Prefect flows.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from prefect import Flow, Task
from prefect import get_run_logger as _prefect_run_logger
from prefect.artifacts import create_link_artifact as _prefect_link_artifact
from prefect.artifacts import create_markdown_artifact as _prefect_markdown_artifact
from prefect.artifacts import create_table_artifact as _prefect_table_artifact
from prefect.exceptions import MissingContextError
from prefect.utilities.annotations import BaseAnnotation, unmapped

__all__ = [
    "api_configured",
    "create_link_artifact",
    "create_markdown_artifact",
    "create_table_artifact",
    "direct_run",
    "flow",
    "get_run_logger",
    "in_direct_run",
    "task",
    "unmapped",
]

DEFAULT_THREADS = 8
log = logging.getLogger("tradeloop.flows")

_executor: contextvars.ContextVar[ThreadPoolExecutor | None] = contextvars.ContextVar(
    "tradeloop_direct_executor", default=None
)


def api_configured() -> bool:
    """True when a Prefect API is configured (env var or the active Prefect profile)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def in_direct_run() -> bool:
    return _executor.get() is not None


@contextmanager
def direct_run(threads: int = DEFAULT_THREADS) -> Iterator[None]:
    """Within this block, flows and tasks run as plain function calls (see module docs)."""
    if in_direct_run():
        yield
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tradeloop-task") as pool:
        token = _executor.set(pool)
        try:
            yield
        finally:
            _executor.reset(token)


class _DirectFutures(list[Future[Any]]):
    """What ``map`` returns in direct mode: a list of futures with Prefect's ``result()``."""

    def result(self) -> list[Any]:
        return [f.result() for f in self]

    def wait(self) -> None:
        for f in self:
            f.exception()


def _submit(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
    pool = _executor.get()
    assert pool is not None
    context = contextvars.copy_context()  # the task's thread stays in direct mode
    return pool.submit(context.run, fn, *args, **kwargs)


def _mapped_calls(args: Sequence[Any], kwargs: dict[str, Any]) -> Iterator[tuple[list, dict]]:
    def mapped(value: Any) -> bool:
        return not isinstance(value, BaseAnnotation | str | bytes | dict) and hasattr(
            value, "__len__"
        )

    sizes = {len(v) for v in (*args, *kwargs.values()) if mapped(v)}
    if len(sizes) > 1:
        raise ValueError(f"map: iterables of different lengths {sorted(sizes)}")
    n = sizes.pop() if sizes else 0

    def item(value: Any, i: int) -> Any:
        if isinstance(value, BaseAnnotation):
            return value.value
        return value[i] if mapped(value) else value

    for i in range(n):
        yield [item(a, i) for a in args], {k: item(v, i) for k, v in kwargs.items()}


class DirectTask(Task):
    """A Prefect task that runs as a plain call inside ``direct_run()``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if in_direct_run():
            kwargs.pop("wait_for", None)
            return self.fn(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        if in_direct_run():
            kwargs.pop("wait_for", None)
            return _submit(self.fn, *args, **kwargs)
        return super().submit(*args, **kwargs)

    def map(self, *args: Any, **kwargs: Any) -> Any:
        if in_direct_run():
            kwargs.pop("wait_for", None)
            return _DirectFutures(_submit(self.fn, *a, **k) for a, k in _mapped_calls(args, kwargs))
        return super().map(*args, **kwargs)

    def with_options(self, **options: Any) -> DirectTask:
        new = super().with_options(**options)
        new.__class__ = DirectTask
        return new  # type: ignore[return-value]


class DirectFlow(Flow):
    """A Prefect flow that runs as a plain call inside ``direct_run()``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if in_direct_run():
            kwargs.pop("return_state", None)
            kwargs.pop("wait_for", None)
            log.info("flow %s (direct, no Prefect API)", self.name)
            return self.fn(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def with_options(self, **options: Any) -> DirectFlow:
        new = super().with_options(**options)
        new.__class__ = DirectFlow
        return new  # type: ignore[return-value]


def task(**options: Any) -> Callable[[Callable[..., Any]], DirectTask]:
    """``@prefect.task(**options)``, direct-run aware."""

    def decorate(fn: Callable[..., Any]) -> DirectTask:
        return DirectTask(fn=fn, **options)

    return decorate


def flow(**options: Any) -> Callable[[Callable[..., Any]], DirectFlow]:
    """``@prefect.flow(**options)``, direct-run aware."""

    def decorate(fn: Callable[..., Any]) -> DirectFlow:
        return DirectFlow(fn=fn, **options)

    return decorate


def get_run_logger() -> Any:
    """The run's Prefect logger, or ``tradeloop.flows`` outside a run (direct mode)."""
    try:
        return _prefect_run_logger()
    except MissingContextError:
        return log


def create_markdown_artifact(**kwargs: Any) -> Any:
    if in_direct_run():
        return None
    return _prefect_markdown_artifact(**kwargs)


def create_link_artifact(**kwargs: Any) -> Any:
    if in_direct_run():
        return None
    return _prefect_link_artifact(**kwargs)


def create_table_artifact(**kwargs: Any) -> Any:
    if in_direct_run():
        return None
    return _prefect_table_artifact(**kwargs)
