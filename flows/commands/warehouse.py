"""`tradeloop init`, `tradeloop sql`, `tradeloop maintain`: the warehouse from the shell."""

from __future__ import annotations

import os
import shutil
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("sql")(sql)
    app.command("maintain")(maintain)


def init() -> None:
    """Create the data directory and bring the warehouse schema up to date."""
    from warehouse import connect, get_settings, migrate
    from warehouse.migrate import schema_version

    settings = get_settings()
    con = connect(settings)
    applied = migrate(con)
    typer.echo(f"warehouse at {settings.home.resolve()} (catalog: {settings.catalog_kind})")
    typer.echo(f"schema version {schema_version(con)}; applied now: {applied or 'nothing'}")


def sql(
    query: Annotated[
        str | None, typer.Argument(help="SQL to run; omit to open the duckdb shell")
    ] = None,
    output: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
    print_attach: Annotated[
        bool, typer.Option("--print-attach", help="print the SQL that attaches the lake and exit")
    ] = False,
) -> None:
    """Run SQL on the warehouse (read-only), or open the duckdb shell attached to it."""
    from warehouse import get_settings
    from warehouse.connection import attach_sql

    settings = get_settings()
    if print_attach:
        typer.echo(";\n".join(attach_sql(settings, read_only=True)) + ";")
        return
    from warehouse.readonly import (
        ReadOnlyQueryError,
        lock_down,
        lock_down_statements,
        read_only_statement,
    )

    if query is None:
        _open_duckdb_shell(attach_sql(settings, read_only=True) + lock_down_statements(settings))
        return
    try:
        read_only_statement(query)
    except ReadOnlyQueryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    from flows.commands.output import print_arrow
    from warehouse import connect

    con = connect(settings, read_only=True)
    try:
        lock_down(con, settings)
        result = con.execute(query).fetch_arrow_table()
    except Exception as exc:  # duckdb errors: show the message, not a traceback
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        con.close()
    print_arrow(result, output.value)


def _open_duckdb_shell(statements: list[str]) -> None:
    binary = Path(sys.executable).parent / "duckdb"
    found = str(binary) if binary.exists() else shutil.which("duckdb")
    if not found:
        typer.echo(
            "the duckdb CLI is not installed (pip install duckdb-cli==1.4.4.post2)", err=True
        )
        raise typer.Exit(1)
    os.execv(found, [found, "-cmd", "; ".join(statements) + ";"])


def maintain(
    keep_days: Annotated[int, typer.Option(help="keep snapshots younger than this")] = 7,
) -> None:
    """Flush inlined rows, merge small files, expire old snapshots, delete unreferenced files."""
    from datetime import timedelta

    from flows.commands.context import require_warehouse
    from warehouse import connect
    from warehouse import maintain as run_maintenance

    require_warehouse()  # maintaining nothing would create an empty warehouse
    report = run_maintenance(connect(), keep_snapshots_for=timedelta(days=keep_days))
    typer.echo(
        f"data files {report.data_files_before} -> {report.data_files_after}; "
        f"snapshots {report.snapshots_before} -> {report.snapshots_after}"
    )
