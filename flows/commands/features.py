"""`tradeloop features`: bring the warehouse features table up to date."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("features")(features)


def features(
    symbol: Annotated[
        list[str] | None,
        typer.Option("--symbol", "-s", help="symbol, repeatable (default: all with candles)"),
    ] = None,
    timeframe: Annotated[
        list[str] | None,
        typer.Option("--timeframe", "-t", help="timeframe, repeatable (default: all)"),
    ] = None,
    full: Annotated[
        bool, typer.Option(help="recompute every row instead of only new candles")
    ] = False,
    show_columns: Annotated[
        bool, typer.Option("--columns", help="print the feature table and exit")
    ] = False,
) -> None:
    """Compute features for new candles (plus warm-up) of all symbols and timeframes."""
    if show_columns:
        from pipelines.features import FEATURE_SET_VERSION, feature_table_markdown

        typer.echo(f"feature set {FEATURE_SET_VERSION}\n")
        typer.echo(feature_table_markdown())
        return
    from flows.commands.runflow import run_flow
    from flows.features import features as features_flow

    try:
        report = run_flow(
            features_flow, symbols=symbol or None, timeframes=timeframe or None, full=full
        )
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    for r in report["results"]:
        typer.echo(
            f"{r.exchange} {r.symbol} {r.timeframe}: {r.mode}, {r.candles_read} candles read, "
            f"{r.write.inserted} inserted, {r.write.replaced} replaced"
        )
    typer.echo(
        f"feature set {report['feature_set_version']}: {report['rows_written']} rows written"
    )
