"""`tradeloop quality`: re-validate a symbol/date range on demand and rebuild the Data Docs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from flows.commands import options
from flows.commands.options import TimerangeOption


def register(app: typer.Typer) -> None:
    app.command("quality")(quality)


def _when(text: str | None, option: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not an ISO date or time", param_hint=option) from exc
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def quality(
    symbol: Annotated[
        list[str] | None,
        typer.Option("--symbol", "-s", help="symbol, repeatable (default: every stored symbol)"),
    ] = None,
    timerange: TimerangeOption = None,
    # the spellings before --timerange, kept hidden for one release
    start: Annotated[str | None, typer.Option(hidden=True)] = None,
    end: Annotated[str | None, typer.Option(hidden=True)] = None,
    timeframe: Annotated[
        list[str] | None, typer.Option("--timeframe", "-t", help="timeframe, repeatable")
    ] = None,
    exchange: Annotated[str | None, typer.Option(help="only this exchange")] = None,
    docs: Annotated[bool, typer.Option(help="rebuild the Great Expectations Data Docs")] = True,
    keep_days: Annotated[
        float, typer.Option(help="prune stored GX results older than this before the docs")
    ] = 7.0,
) -> None:
    """Re-validate stored candles with the current suites and rebuild the Data Docs."""
    lo, hi = options.timerange(timerange)
    lo, hi = lo or _when(start, "--start"), hi or _when(end, "--end")
    from flows.commands.context import require_warehouse

    require_warehouse()  # before any Data Docs folder is made for a warehouse that is not there
    from flows.commands.runflow import run_flow
    from flows.quality import quality as quality_flow

    try:
        report = run_flow(
            quality_flow,
            symbols=symbol or None,
            start=lo,
            end=hi,
            timeframes=timeframe or None,
            exchange=exchange,
            build_docs=docs,
            fail_on_policy=False,
            keep_days=keep_days,
        )
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    results = report["results"]
    assert isinstance(results, list)
    if not results:
        typer.echo("no stored candles match; nothing validated")
    for r in results:
        typer.echo(("ok      " if r.success else "FAILED  ") + r.message)
        for w in r.warnings:
            typer.echo(f"        warning: {w}")
    if report.get("report") is not None:
        from warehouse import get_settings

        typer.echo(f"Quality report: {get_settings().report_link(Path(str(report['report'])))}")
    if report["data_docs"] is not None:
        typer.echo(f"Data Docs: {report['data_docs']}")
    if any(not r.success for r in results):
        raise typer.Exit(2)
