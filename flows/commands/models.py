"""`tradeloop retrain` and `tradeloop models list|promote|rollback`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from flows.commands import options as opt

if TYPE_CHECKING:
    import duckdb

    from models.registry import Decision

models_app = typer.Typer(help="The model registry: list, promote, roll back.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("retrain")(retrain)
    app.add_typer(models_app, name="models")


def retrain(
    symbol: opt.SymbolOption = None,
    timeframe: opt.TimeframeOption = None,
    exchange: opt.ExchangeOption = None,
    days: Annotated[float, typer.Option(help="train on the last N days of candles")] = 30,
    horizon: Annotated[int, typer.Option(help="label horizon in bars")] = 5,
    epochs: Annotated[
        int, typer.Option(help="maximum epochs (early stopping may end sooner)")
    ] = 10,
    snapshot: Annotated[
        int | None, typer.Option(help="train on this DuckLake snapshot (reproduce a run)")
    ] = None,
    symbols_alias: Annotated[
        str | None, typer.Option("--symbols", hidden=True, help="old spelling of --symbol")
    ] = None,
) -> None:
    """Retrain the ensemble, export ONNX, register it, and promote it if it beats the champion.

    Without --symbol / --timeframe / --exchange it trains what the warehouse holds."""
    from flows.commands.series import resolve

    series = resolve(opt.symbols(symbol, symbols_alias), opt.timeframe(timeframe), exchange)
    from flows.commands.runflow import run_flow
    from flows.retrain import retrain as retrain_flow

    outcome = run_flow(
        retrain_flow,
        symbols=list(series.symbols),
        days=days,
        horizon=horizon,
        epochs=epochs,
        timeframe=series.timeframe,
        exchange=series.exchange,
        snapshot_id=snapshot,
    )
    typer.echo(
        f"model {outcome.model_id}: "
        f"{'promoted' if outcome.promoted else 'not promoted'} ({outcome.reason})"
    )


@models_app.command("list")
def list_models(
    name: Annotated[str | None, typer.Option(help="only this model name")] = None,
) -> None:
    """Registered models with status, data snapshot and test metrics."""
    import pyarrow as pa

    from flows.commands.output import print_arrow
    from models.registry import list_models as registry_list
    from warehouse import connect, get_settings

    con = connect(get_settings(), read_only=True)
    try:
        records = registry_list(con, name)
    finally:
        con.close()
    rows = []
    for r in records:
        test = r.metrics.get("test", {}) if isinstance(r.metrics, dict) else {}
        rows.append(
            {
                "model_id": r.model_id,
                "status": r.status,
                "created_at": r.created_at.isoformat(timespec="seconds"),
                "promoted_at": r.promoted_at.isoformat(timespec="seconds") if r.promoted_at else "",
                "feature_set": r.feature_set_version[:12],
                "snapshot": r.training_snapshot_id,
                "test_accuracy": round(float(test.get("accuracy", float("nan"))), 4),
                "test_f1_macro": round(float(test.get("f1_macro", float("nan"))), 4),
                "baseline_accuracy": round(float(test.get("baseline_accuracy", float("nan"))), 4),
            }
        )
    if not rows:
        typer.echo("no models registered")
        return
    print_arrow(pa.Table.from_pylist(rows))


@models_app.command("promote")
def promote(
    model_id: Annotated[str, typer.Argument(help="the challenger to promote")],
    force: Annotated[bool, typer.Option(help="skip the promotion rule")] = False,
) -> None:
    """Promote a challenger. Without --force the rule must pass on a window both were scored on."""
    from models import registry
    from warehouse import connect, get_settings

    settings = get_settings()
    con = connect(settings)
    try:
        record = registry.get_model(con, model_id)
        current = registry.champion(con, record.name)
        if not force:
            decision = _decide_from_shared_window(
                con, record.model_id, current.model_id if current else None
            )
            if not decision.promote:
                typer.echo(f"not promoted: {decision.reason}", err=True)
                raise typer.Exit(1)
            reason = decision.reason
        else:
            reason = "manual promotion (--force)"
        promoted = registry.promote(con, settings, model_id, reason=reason)
    except (registry.RegistryError, registry.ModelFileError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        con.close()
    typer.echo(f"{promoted.model_id} is now the champion ({reason})")


def _decide_from_shared_window(
    con: duckdb.DuckDBPyConnection, challenger_id: str, champion_id: str | None
) -> Decision:
    from models import registry

    if champion_id is None:
        return registry.decide_promotion(registry.model_metrics(con, challenger_id, "test"), None)
    row = con.execute(
        "SELECT a.window_name FROM model_metrics a "
        "JOIN model_metrics b USING (window_name, metric) "
        "WHERE a.model_id = ? AND b.model_id = ? AND a.window_name LIKE 'oos_%' "
        "AND a.metric = 'f1_macro' "
        "ORDER BY a.window_end DESC LIMIT 1",
        [challenger_id, champion_id],
    ).fetchone()
    if row is None:
        return registry.Decision(
            False, f"{challenger_id} and {champion_id} were never scored on the same window"
        )
    return registry.decide_promotion(
        registry.model_metrics(con, challenger_id, row[0]),
        registry.model_metrics(con, champion_id, row[0]),
    )


@models_app.command("rollback")
def rollback(name: Annotated[str, typer.Option(help="model name")] = "signal") -> None:
    """Retire the champion and restore the one it replaced."""
    from models import registry
    from warehouse import connect, get_settings

    settings = get_settings()
    con = connect(settings)
    try:
        restored = registry.rollback(con, settings, name)
    except registry.RegistryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        con.close()
    typer.echo(f"rolled back: {restored.model_id} is the champion again")
