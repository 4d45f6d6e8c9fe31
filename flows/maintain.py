"""Flow `maintain`: compact the lake (``warehouse.maintain``) and publish what it did."""

from __future__ import annotations

from datetime import timedelta

from flows.orchestration import NO_CACHE, create_markdown_artifact, flow, get_run_logger, task
from warehouse import Settings, connect, get_settings
from warehouse import maintain as maintain_lake
from warehouse.maintenance import MaintenanceReport


@task(name="maintain-lake", cache_policy=NO_CACHE)
def maintain_task(settings: Settings, keep_snapshots_days: float) -> MaintenanceReport:
    con = connect(settings)
    try:
        return maintain_lake(con, keep_snapshots_for=timedelta(days=keep_snapshots_days))
    finally:
        con.close()


@flow(name="maintain", log_prints=True)
def maintain(keep_snapshots_days: float = 7.0) -> MaintenanceReport:
    """Flush inlined rows, merge small Parquet files, expire snapshots older than
    ``keep_snapshots_days`` and delete the files nothing references any more."""
    settings = get_settings()
    report = maintain_task(settings, keep_snapshots_days)
    text = (
        f"data files {report.data_files_before} -> {report.data_files_after}, "
        f"snapshots {report.snapshots_before} -> {report.snapshots_after}"
    )
    get_run_logger().info(f"maintain: {text}")
    create_markdown_artifact(
        key="warehouse-maintenance", markdown=f"# Warehouse maintenance\n\n{text}\n"
    )
    return report
