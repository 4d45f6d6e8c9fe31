"""How a CLI command runs its flow: as a Prefect flow run when an API is configured, else directly.

``--prefect`` (a global option) or ``PREFECT_API_URL`` (environment or Prefect profile) makes the
command a recorded flow run that shows in the UI. Without either, the same flow body runs in
this process with no flow run and no temporary server (``flows.orchestration.direct_run``).
"""

from __future__ import annotations

from typing import Any

from flows.commands.context import cli_options


def run_flow(flow_obj: Any, **kwargs: Any) -> Any:
    """Call ``flow_obj(**kwargs)`` on the task runner the settings ask for (see module docs)."""
    from flows.orchestration import DEFAULT_THREADS, api_configured, direct_run
    from flows.runners import on_runner
    from warehouse import get_settings

    settings = get_settings()
    if cli_options().prefect or api_configured():
        return on_runner(flow_obj, settings)(**kwargs)
    with direct_run(threads=settings.task_workers or DEFAULT_THREADS):
        return flow_obj(**kwargs)
