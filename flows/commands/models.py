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
    horizon: Annotated[
        int | None,
        typer.Option(help="label horizon in bars (default: the last tuning study's, else 5)"),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(help="maximum epochs, early stopping may end sooner (default 10)"),
    ] = None,
    snapshot: Annotated[
        int | None, typer.Option(help="train on this DuckLake snapshot (reproduce a run)")
    ] = None,
    symbols_alias: Annotated[
        str | None, typer.Option("--symbols", hidden=True, help="old spelling of --symbol")
    ] = None,
    feature_groups: opt.FeatureGroupsOption = None,
) -> None:
    """Retrain the ensemble, export ONNX, register it, and promote it if it beats the champion.

    Without --symbol / --timeframe / --exchange it trains what the warehouse holds."""
    from flows.commands.series import resolve

    overrides = opt.feature_groups(feature_groups)
    series = resolve(opt.symbols(symbol, symbols_alias), opt.timeframe(timeframe), exchange)
    from flows.commands.progress import command_progress
    from flows.commands.runflow import run_flow
    from flows.retrain import retrain as retrain_flow

    with command_progress():  # training opens its members' and epochs' bars
        outcome = run_flow(
            retrain_flow,
            symbols=list(series.symbols),
            days=days,
            horizon=horizon,
            epochs=epochs,
            timeframe=series.timeframe,
            exchange=series.exchange,
            snapshot_id=snapshot,
            train_overrides=overrides,
        )
    typer.echo(
        f"model {outcome.model_id}: "
        f"{'promoted' if outcome.promoted else 'not promoted'} ({outcome.reason})"
    )


# the promotion figures of each model's own test window (model_metrics), as list shows them
LIST_FIGURES = ("ic", "ic_ci_low", "ic_ci_high", "log_loss", "log_loss_train_frequency", "ece")


@models_app.command("list")
def list_models(
    name: Annotated[str | None, typer.Option(help="only this model name")] = None,
    output_format: opt.FormatOption = opt.OutputFormat.table,
) -> None:
    """Registered models with status, data snapshot and test-window figures: IC (Spearman of
    p_buy - p_sell against the tradeable return) with its 95% CI, log-loss beside the
    training-frequency baseline's, ECE, accuracy and macro F1 beside the majority class."""
    import pyarrow as pa

    from flows.commands.output import print_arrow
    from models.registry import list_models as registry_list
    from models.registry import model_metrics
    from warehouse import connect, get_settings

    con = connect(get_settings(), read_only=True)
    try:
        records = registry_list(con, name)
        figures = {r.model_id: model_metrics(con, r.model_id, "test") for r in records}
    finally:
        con.close()

    def figure(value: float | None) -> float | None:
        # NaN or absent (a model registered before the figure existed): None, null in JSON
        if value is None or value != value:
            return None
        return round(float(value), 4)

    rows = []
    for r in records:
        test = r.metrics.get("test", {}) if isinstance(r.metrics, dict) else {}
        stored = figures[r.model_id]
        rows.append(
            {
                "model_id": r.model_id,
                "status": r.status,
                "created_at": r.created_at.isoformat(timespec="seconds"),
                "promoted_at": r.promoted_at.isoformat(timespec="seconds") if r.promoted_at else "",
                "feature_set": r.feature_set_version[:12],
                # what the model reads: candles, multi-timeframe, order book/trades, ...
                "groups": ", ".join(r.hyperparameters.get("feature_groups") or []),
                "snapshot": r.training_snapshot_id,
                **{k: figure(stored.get(k)) for k in LIST_FIGURES},
                "test_accuracy": figure(test.get("accuracy")),
                "test_f1_macro": figure(test.get("f1_macro")),
                "baseline_accuracy": figure(test.get("baseline_accuracy")),
            }
        )
    if not rows:
        if output_format == opt.OutputFormat.json:
            typer.echo("[]")
        elif output_format == opt.OutputFormat.table:
            typer.echo("no models registered")
        return
    print_arrow(pa.Table.from_pylist(rows), output_format.value)


@models_app.command("promote")
def promote(
    model_id: Annotated[str, typer.Argument(help="the challenger to promote")],
    force: Annotated[bool, typer.Option(help="skip the promotion rule")] = False,
) -> None:
    """Promote a challenger. Without --force the rule must pass: log-loss below the training
    class frequencies' on its test window and, against a champion, a higher IC on a window both
    were scored on."""
    from flows.commands.context import require_warehouse
    from models import registry
    from warehouse import connect, get_settings

    require_warehouse()
    settings = get_settings()
    con = connect(settings)
    try:
        try:
            record = registry.get_model(con, model_id)
        except registry.RegistryError as exc:
            raise registry.RegistryError(
                f"{exc}; `tradeloop models list` shows the registered ids"
            ) from exc
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
    """The promotion rule on the figures the retrain stored: without a champion the
    challenger's test window; with one, the latest window both were scored on (the champion
    scored on the challenger's test window, ``oos_*``) that carries an IC for both."""
    from models import registry

    if champion_id is None:  # the test window, and the purged folds' figures when it has them
        figures = {
            **registry.model_metrics(con, challenger_id, "test"),
            **registry.model_metrics(con, challenger_id, "cv"),
        }
        return registry.decide_promotion(figures, None)
    row = con.execute(
        "SELECT a.window_name FROM model_metrics a "
        "JOIN model_metrics b USING (window_name, metric) "
        "WHERE a.model_id = ? AND b.model_id = ? AND a.window_name LIKE 'oos_%' "
        "AND a.metric = 'ic' "
        "ORDER BY a.window_end DESC LIMIT 1",
        [challenger_id, champion_id],
    ).fetchone()
    if row is None:
        return registry.Decision(
            False,
            f"{challenger_id} and {champion_id} were never scored on the same window with an IC "
            "(--force promotes anyway)",
        )
    return registry.decide_promotion(
        registry.model_metrics(con, challenger_id, row[0]),
        registry.model_metrics(con, champion_id, row[0]),
    )


@models_app.command("rollback")
def rollback(name: Annotated[str, typer.Option(help="model name")] = "signal") -> None:
    """Retire the champion and restore the one it replaced."""
    from flows.commands.context import require_warehouse
    from models import registry
    from warehouse import connect, get_settings

    require_warehouse()
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
