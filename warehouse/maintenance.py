"""Keeping the lake small and fast: flush inlined rows, merge small files, expire old snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import duckdb

from warehouse.connection import LAKE


@dataclass(frozen=True)
class MaintenanceReport:
    data_files_before: int
    data_files_after: int
    snapshots_before: int
    snapshots_after: int


def _count_files(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute(f"SELECT count(*) FROM ducklake_list_files('{LAKE}', NULL)").fetchone()
    return int(row[0]) if row else 0


def data_file_count(con: duckdb.DuckDBPyConnection) -> int:
    """Parquet data files currently referenced by the lake (all tables)."""
    tables = [r[0] for r in con.execute("SHOW TABLES").fetchall()]
    total = 0
    for table in tables:
        row = con.execute(
            f"SELECT count(*) FROM ducklake_list_files('{LAKE}', ?)", [table]
        ).fetchone()
        total += int(row[0]) if row else 0
    return total


def snapshot_count(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute(f"SELECT count(*) FROM {LAKE}.snapshots()").fetchone()
    return int(row[0]) if row else 0


def maintain(
    con: duckdb.DuckDBPyConnection, *, keep_snapshots_for: timedelta = timedelta(days=7)
) -> MaintenanceReport:
    """Compact and clean the lake.

    Snapshots younger than ``keep_snapshots_for`` are kept, so time travel (and reproducing a
    model's training data) works within that window; registered models pin nothing older.
    """
    files_before, snaps_before = data_file_count(con), snapshot_count(con)
    con.execute(f"CALL ducklake_flush_inlined_data('{LAKE}')")
    # Files with deleted rows (a revised candle, a resolved prediction) are never merged:
    # rewrite them without those rows first, or every revised file stays small for good.
    con.execute(f"CALL ducklake_rewrite_data_files('{LAKE}', delete_threshold => 0)")
    con.execute(f"CALL ducklake_merge_adjacent_files('{LAKE}')")
    seconds = int(keep_snapshots_for.total_seconds())
    con.execute(
        f"CALL ducklake_expire_snapshots('{LAKE}', older_than => now() - INTERVAL {seconds} SECOND)"
    )
    con.execute(f"CALL ducklake_cleanup_old_files('{LAKE}', cleanup_all => true)")
    return MaintenanceReport(files_before, data_file_count(con), snaps_before, snapshot_count(con))
