"""Where a flow's mapped tasks run: the one place that turns Settings into a Prefect task runner.

- ``task_runner = "thread"`` (default): a ``ThreadPoolTaskRunner`` in the flow's process with
  ``task_workers`` threads (8 when unset).
- ``task_runner = "dask"``: a ``prefect_dask.DaskTaskRunner``. With ``dask_address`` set, tasks
  go to that running Dask scheduler (``tcp://scheduler:8786``; production: a Dask cluster whose
  workers can reach the warehouse catalog and data path). Without it, a temporary
  ``distributed.LocalCluster`` of ``task_workers`` worker processes (one per core when unset),
  one thread each, is started for the flow run and stopped after it.

Flows keep their default runner for direct calls; entry points run them with
``on_runner(flow, settings)(...)``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from warehouse import Settings

DEFAULT_THREADS = 8
F = TypeVar("F")


def task_runner_for(settings: Settings) -> Any:
    """The task runner the settings ask for (see the module docstring)."""
    if settings.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:  # pragma: no cover - prefect-dask is a core dependency
            raise RuntimeError("task_runner = 'dask' needs the prefect-dask package") from exc
        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        cluster_kwargs: dict[str, Any] = {
            "processes": True,
            "threads_per_worker": 1,
            "dashboard_address": None,
        }
        if settings.task_workers:
            cluster_kwargs["n_workers"] = settings.task_workers
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster", cluster_kwargs=cluster_kwargs
        )
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=settings.task_workers or DEFAULT_THREADS)


def default_task_runner() -> Any:
    """The runner a flow uses when called directly: a bounded thread pool, so a flow over
    hundreds of series never starts them all at once (Prefect's own default is unbounded)."""
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=DEFAULT_THREADS)


def on_runner(flow: F, settings: Settings) -> F:
    """``flow`` with the task runner the settings ask for (``flow.with_options(task_runner=)``)."""
    return flow.with_options(task_runner=task_runner_for(settings))  # type: ignore[attr-defined]


def describe(settings: Settings) -> str:
    """One line for logs: where this flow run's tasks execute."""
    if settings.task_runner == "dask":
        where = settings.dask_address or f"local cluster ({settings.task_workers or 'all'} cores)"
        return f"dask: {where}"
    return f"threads: {settings.task_workers or DEFAULT_THREADS}"
