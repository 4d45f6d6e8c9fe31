"""`tradeloop alerts setup`: the Prefect automation that turns alert events into notifications."""

from __future__ import annotations

from typing import Annotated

import typer

alerts_app = typer.Typer(
    help="Alerts a person receives (kill switch, degradation, promotion, stale data, ...).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")


@alerts_app.command("setup")
def setup(
    block: Annotated[
        str | None,
        typer.Option(
            help="a saved notification block, <block-type-slug>/<name> (e.g. slack-webhook/ops); "
            "default: a Custom Webhook block posting to TRADELOOP_ALERT_WEBHOOK_URL"
        ),
    ] = None,
) -> None:
    """Create (or replace) the Prefect automation `tradeloop-alerts`: every `tradeloop.alert.*`
    event is sent through a notification block. Needs PREFECT_API_URL; without Prefect the
    loop posts to TRADELOOP_ALERT_WEBHOOK_URL itself and nothing needs setting up."""
    from flows.alerts import setup_alerts
    from warehouse import get_settings

    try:
        done = setup_alerts(get_settings(), block)
    except (RuntimeError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"automation tradeloop-alerts ({done['automation_id']}): tradeloop.alert.* -> "
        f"{done['block']} ({done['block_id']})"
    )
