"""`tradeloop features`: bring the warehouse features table up to date."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.commands import options as opt


def register(app: typer.Typer) -> None:
    app.command("features")(features)


def features(
    symbol: opt.SymbolOption = None,
    timeframe: opt.TimeframesOption = None,
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
    symbols, timeframes = opt.symbols(symbol), opt.timeframes(timeframe)
    series = _check_stored(symbols, timeframes)
    from flows.commands.progress import command_progress
    from flows.commands.runflow import run_flow
    from flows.features import features as features_flow

    try:
        with command_progress("features (series)", total=series):
            report = run_flow(features_flow, symbols=symbols, timeframes=timeframes, full=full)
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


def _check_stored(symbols: list[str] | None, timeframes: list[str] | None) -> int:
    """Features of candles that are not stored would be '0 rows written' and exit 0: say what
    is missing and what the warehouse holds instead (exit 2). Returns how many series the run
    featurizes (the progress bar's total)."""
    from warehouse import connect, get_settings
    from warehouse.inventory import inventory

    con = connect(get_settings(), read_only=True)  # no warehouse: one line naming `init`
    try:
        held = inventory(con)
    finally:
        con.close()
    if not held:
        raise opt.usage_error(
            "the warehouse holds no candles; import a file (`tradeloop import FILE`) "
            "or collect some (`tradeloop collect`)"
        )
    pool = [s for s in held if not symbols or s.symbol in symbols]
    missing = sorted(set(symbols or ()) - {s.symbol for s in pool})
    if missing:
        stored = ", ".join(sorted({s.symbol for s in held}))
        raise opt.usage_error(
            f"no candles for {', '.join(missing)} in the warehouse (it holds {stored}); "
            "import or collect them, or pick stored ones with --symbol"
        )
    chosen = [s for s in pool if not timeframes or s.timeframe in timeframes]
    if not chosen:
        stored = ", ".join(sorted({s.timeframe for s in pool}))
        raise opt.usage_error(
            f"no {', '.join(timeframes or [])} candles stored (timeframes held: {stored}); "
            "pick one with --timeframe"
        )
    return len(chosen)
