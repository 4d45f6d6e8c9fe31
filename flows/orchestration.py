"""Prefect, when there is one: the flows' only door to Prefect's decorators, logger and artifacts.

A flow module imports ``flow``, ``task``, ``unmapped``, ``get_run_logger`` and the artifact
functions from here instead of ``prefect``. Inside ``direct_run()`` a flow or task call runs its
function in this process, with no flow run, no task run and no API. The CLI uses that when no
Prefect API is configured (``PREFECT_API_URL`` unset and no ``--prefect``), so a command never
starts Prefect's temporary server (about 8 s) and still runs exactly the code its deployment
runs.

In direct mode:

* ``task.submit`` / ``task.map`` run on a thread pool (``DEFAULT_THREADS`` threads, like the
  flows' default task runner) and return futures with ``result()`` / ``wait()``;
* ``get_run_logger()`` is the ``tradeloop.flows`` logger;
* artifacts are not published (there is no UI to show them); the CLI prints the results.

Prefect itself is imported only when something needs it (its import costs about a second of
CPU, paid by every CLI command otherwise). A module decorated before Prefect was imported (a
direct CLI run) gets :class:`LazyFlow` / :class:`LazyTask` objects, which become real Prefect
objects on first use outside ``direct_run()``. A module imported by Prefect (``prefect
deploy``, a worker, ``flow.serve``), which has imported Prefect first, gets real
``prefect.Flow`` / ``prefect.Task`` instances, as Prefect's loader requires. Options that
would import Prefect at decoration time are written as sentinels (``NO_CACHE`` for
``cache_policy=NONE``, ``DEFAULT_TASK_RUNNER``) and resolved when the Prefect object is made.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_TASK_RUNNER",
    "NO_CACHE",
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
NO_CACHE = "tradeloop:no-cache"  # cache_policy: prefect.cache_policies.NONE
DEFAULT_TASK_RUNNER = "tradeloop:default-task-runner"  # task_runner: flows.runners.default
log = logging.getLogger("tradeloop.flows")

_executor: contextvars.ContextVar[ThreadPoolExecutor | None] = contextvars.ContextVar(
    "tradeloop_direct_executor", default=None
)


def _prefect_imported() -> bool:
    return "prefect" in sys.modules


def _mentions_api_url(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return "PREFECT_API_URL" in text or "[api]" in text or "tool.prefect" in text


def _api_config_files() -> list[Path]:
    """Where Prefect's settings can come from besides the environment: the profiles file and
    the working directory's ``.env``, ``prefect.toml`` and ``pyproject.toml``."""
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    profiles = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml")
    return [profiles.expanduser(), Path(".env"), Path("prefect.toml"), Path("pyproject.toml")]


def api_configured() -> bool:
    """True when a Prefect API is configured (env var or the active Prefect profile).

    Prefect's settings are imported only when a settings file could configure the API; when
    none mentions it, the answer is known without importing Prefect."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    if not _prefect_imported() and not any(_mentions_api_url(p) for p in _api_config_files()):
        return False  # (once Prefect is imported, its settings may also be set in code)
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


class unmapped:  # noqa: N801 - named like Prefect's, which it stands for
    """A ``map`` argument passed whole to every call (Prefect's ``unmapped``)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def to_prefect(self) -> Any:
        from prefect.utilities.annotations import unmapped as prefect_unmapped

        return prefect_unmapped(self.value)


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


def _is_annotation(value: Any) -> bool:
    if isinstance(value, unmapped):
        return True
    if not _prefect_imported():
        return False
    from prefect.utilities.annotations import BaseAnnotation

    return isinstance(value, BaseAnnotation)


def _mapped_calls(args: Sequence[Any], kwargs: dict[str, Any]) -> Iterator[tuple[list, dict]]:
    def mapped(value: Any) -> bool:
        return not isinstance(value, str | bytes | dict) and (
            not _is_annotation(value) and hasattr(value, "__len__")
        )

    sizes = {len(v) for v in (*args, *kwargs.values()) if mapped(v)}
    if len(sizes) > 1:
        raise ValueError(f"map: iterables of different lengths {sorted(sizes)}")
    n = sizes.pop() if sizes else 0

    def item(value: Any, i: int) -> Any:
        if _is_annotation(value):
            return value.value
        return value[i] if mapped(value) else value

    for i in range(n):
        yield [item(a, i) for a in args], {k: item(v, i) for k, v in kwargs.items()}


def _call_directly(
    fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], flow: str | None = None
) -> Any:
    """A task's (or, with ``flow`` its name, a flow's) call inside ``direct_run()``: the
    function itself, without the options only Prefect understands."""
    kwargs.pop("wait_for", None)
    if flow is not None:
        kwargs.pop("return_state", None)
        log.info("flow %s (direct, no Prefect API)", flow)
    return fn(*args, **kwargs)


def _submit_directly(fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    kwargs.pop("wait_for", None)
    return _submit(fn, *args, **kwargs)


def _direct_map(fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    kwargs.pop("wait_for", None)
    return _DirectFutures(_submit(fn, *a, **k) for a, k in _mapped_calls(args, kwargs))


def _prefect_args(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[list, dict]:
    """Our ``unmapped`` as Prefect's, for a real ``Task.map``."""

    def convert(value: Any) -> Any:
        return value.to_prefect() if isinstance(value, unmapped) else value

    return [convert(a) for a in args], {k: convert(v) for k, v in kwargs.items()}


def _resolved(options: dict[str, Any]) -> dict[str, Any]:
    """Decorator options with the sentinels replaced by Prefect's objects."""
    out = dict(options)
    if out.get("cache_policy") == NO_CACHE:
        from prefect.cache_policies import NONE

        out["cache_policy"] = NONE
    if out.get("task_runner") == DEFAULT_TASK_RUNNER:
        from flows.runners import default_task_runner

        out["task_runner"] = default_task_runner()
    return out


@functools.cache
def _prefect_classes() -> tuple[type, type]:
    """``DirectTask`` and ``DirectFlow``: Prefect's classes, direct-run aware (made on first
    need, since defining them imports Prefect)."""
    from prefect import Flow, Task

    class DirectTask(Task):
        """A Prefect task that runs as a plain call inside ``direct_run()``."""

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            if in_direct_run():
                return _call_directly(self.fn, args, kwargs)
            return super().__call__(*args, **kwargs)

        def submit(self, *args: Any, **kwargs: Any) -> Any:
            if in_direct_run():
                return _submit_directly(self.fn, args, kwargs)
            return super().submit(*args, **kwargs)

        def map(self, *args: Any, **kwargs: Any) -> Any:
            if in_direct_run():
                return _direct_map(self.fn, args, kwargs)
            prefect_args, prefect_kwargs = _prefect_args(args, kwargs)
            return super().map(*prefect_args, **prefect_kwargs)

        def with_options(self, **options: Any) -> Any:
            new = super().with_options(**_resolved(options))
            new.__class__ = DirectTask
            return new

    class DirectFlow(Flow):
        """A Prefect flow that runs as a plain call inside ``direct_run()``."""

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            if in_direct_run():
                return _call_directly(self.fn, args, kwargs, flow=self.name)
            return super().__call__(*args, **kwargs)

        def with_options(self, **options: Any) -> Any:
            new = super().with_options(**_resolved(options))
            new.__class__ = DirectFlow
            return new

    return DirectTask, DirectFlow


class _Lazy:
    """A decorated function whose Prefect object is made on first use outside direct runs."""

    _kind = 0  # index into _prefect_classes()

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        self.fn = fn
        self._options = options
        self._real: Any = None
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        return str(self._options.get("name") or self.fn.__name__)

    def prefect_object(self) -> Any:
        if self._real is None:
            cls = _prefect_classes()[self._kind]
            self._real = cls(fn=self.fn, **_resolved(self._options))
        return self._real

    def with_options(self, **options: Any) -> Any:
        return self.prefect_object().with_options(**options)

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__") or attribute in ("fn", "_options", "_real"):
            raise AttributeError(attribute)
        return getattr(self.prefect_object(), attribute)


class LazyTask(_Lazy):
    """``@task`` made before Prefect was imported (see module docs)."""

    _kind = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if in_direct_run():
            return _call_directly(self.fn, args, kwargs)
        return self.prefect_object()(*args, **kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        if in_direct_run():
            return _submit_directly(self.fn, args, kwargs)
        return self.prefect_object().submit(*args, **kwargs)

    def map(self, *args: Any, **kwargs: Any) -> Any:
        if in_direct_run():
            return _direct_map(self.fn, args, kwargs)
        return self.prefect_object().map(*args, **kwargs)


class LazyFlow(_Lazy):
    """``@flow`` made before Prefect was imported (see module docs)."""

    _kind = 1

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if in_direct_run():
            return _call_directly(self.fn, args, kwargs, flow=self.name)
        return self.prefect_object()(*args, **kwargs)


def task(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``@prefect.task(**options)``, direct-run aware."""

    def decorate(fn: Callable[..., Any]) -> Any:
        if _prefect_imported():
            return _prefect_classes()[0](fn=fn, **_resolved(options))
        return LazyTask(fn, options)

    return decorate


def flow(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``@prefect.flow(**options)``, direct-run aware."""

    def decorate(fn: Callable[..., Any]) -> Any:
        if _prefect_imported():
            return _prefect_classes()[1](fn=fn, **_resolved(options))
        return LazyFlow(fn, options)

    return decorate


def get_run_logger() -> Any:
    """The run's Prefect logger, or ``tradeloop.flows`` outside a run (direct mode)."""
    if in_direct_run() or not _prefect_imported():
        return log
    from prefect import get_run_logger as prefect_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return prefect_run_logger()
    except MissingContextError:
        return log


def create_markdown_artifact(**kwargs: Any) -> Any:
    if in_direct_run():
        return None
    from prefect.artifacts import create_markdown_artifact as prefect_markdown_artifact

    return prefect_markdown_artifact(**kwargs)


def create_link_artifact(**kwargs: Any) -> Any:
    if in_direct_run():
        return None
    from prefect.artifacts import create_link_artifact as prefect_link_artifact

    return prefect_link_artifact(**kwargs)


def create_table_artifact(**kwargs: Any) -> Any:
    if in_direct_run():
        return None
    from prefect.artifacts import create_table_artifact as prefect_table_artifact

    return prefect_table_artifact(**kwargs)
