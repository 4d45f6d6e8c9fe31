"""`tradeloop serve`, `tradeloop kill`, `tradeloop dashboard`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flows.commands import options as opt

# what a --replay that names a file ends with (a symbol such as ETH/BTC has no suffix)
REPLAY_SUFFIXES = frozenset({".feather", ".json", ".parquet", ".csv", ".gz", ".jsongz"})


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("kill")(kill)
    app.command("dashboard")(dashboard)


def serve(
    replay: Annotated[
        str | None,
        typer.Option("--replay", help="candle file (any import format) or warehouse symbol"),
    ] = None,
    speed: Annotated[
        str, typer.Option(help="'max' (as fast as possible) or a real-time multiple, e.g. 60")
    ] = "max",
    max_candles: Annotated[int | None, typer.Option(help="stop after N candles")] = None,
    follow_every: Annotated[
        float | None,
        typer.Option(
            "--follow-every",
            help="after the replay, keep serving the source's new candles, checking every "
            "SECONDS (a long-running paper loop)",
        ),
    ] = None,
    account: Annotated[str, typer.Option(help="account name")] = "paper",
    no_prefect: Annotated[
        bool,
        typer.Option(
            "--no-prefect",
            hidden=True,
            help="run the loop without the Prefect flow (the default without a Prefect API)",
        ),
    ] = False,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="real orders on TRADELOOP_EXCHANGE (sandbox first); also needs "
            "TRADELOOP_LIVE_TRADING=true",
        ),
    ] = False,
    symbol: opt.SymbolOption = None,
    timeframe: opt.TimeframeOption = None,
    exchange: opt.ExchangeOption = None,
    symbols: Annotated[
        str | None, typer.Option("--symbols", hidden=True, help="old spelling of --symbol")
    ] = None,
) -> None:
    """Paper-trade a replay through the serving loop (exits 0 at the end of the data), or,
    with --live and TRADELOOP_LIVE_TRADING=true, trade on the exchange with real orders."""
    from warehouse import get_settings

    if live:
        from trading.live_broker import LiveBrokerError, require_client_id_lookup
        from trading.service import LiveTradingRefused, require_live_opt_in

        try:
            require_live_opt_in(get_settings(), live=True)
            require_client_id_lookup(get_settings().exchange)  # Binance only, before any start
        except (LiveTradingRefused, LiveBrokerError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
    elif replay is None:
        typer.echo("error: paper trading needs --replay FILE_OR_SYMBOL (or use --live)", err=True)
        raise typer.Exit(2)
    if follow_every is not None and live:
        typer.echo(
            "error: --follow-every follows a --replay (live trading polls the exchange)", err=True
        )
        raise typer.Exit(2)
    try:
        multiple = None if speed == "max" else float(speed)
    except ValueError:
        multiple = -1.0
    if multiple is not None and not multiple > 0:
        raise opt.usage_error(f"--speed {speed!r}: 'max' or a positive real-time multiple, e.g. 60")
    symbol_list = opt.symbols(symbol, symbols)
    replay_timeframe = opt.timeframe(timeframe)
    replay_exchange = exchange
    if replay is not None and not Path(replay).exists():
        if not opt.SYMBOL_PATTERN.match(replay) or Path(replay).suffix in REPLAY_SUFFIXES:
            raise opt.usage_error(
                f"--replay {replay}: no such file, and not a symbol (BASE/QUOTE, e.g. ETH/BTC)"
            )
        from flows.commands.series import resolve

        series = resolve([replay], replay_timeframe, exchange)
        replay_timeframe, replay_exchange = series.timeframe, series.exchange
    elif replay is not None:
        replay_exchange = exchange or "file"  # where `tradeloop import` stores a file's rows
    from flows.commands.context import cli_options
    from flows.orchestration import api_configured
    from trading.state import StateError

    as_flow_run = not no_prefect and (cli_options().prefect or api_configured())
    try:
        if not as_flow_run:
            from trading.loop import LoopConfig
            from trading.service import serve_live, serve_replay

            settings = get_settings()
            config = LoopConfig.from_settings(
                settings,
                account=account,
                exchange=replay_exchange or settings.exchange,
                model_check_every_steps=60,
            )
            if live:
                s = serve_live(
                    settings,
                    symbol_list or list(settings.symbols),
                    config=config,
                    max_candles=max_candles,
                )
            else:
                assert replay is not None
                from flows.commands.progress import command_progress

                with command_progress():  # the replay's bar: candles served
                    s = serve_replay(
                        settings,
                        replay,
                        config=config,
                        speed=multiple,
                        max_candles=max_candles,
                        follow_every_s=follow_every,
                        timeframe=replay_timeframe,
                    )
            result = {
                "candles": s.candles,
                "equity": s.equity,
                "positions": s.positions,
                "candles_dropped": s.candles_dropped,
            }
        else:
            from flows.serve import serve as serve_flow

            result = serve_flow(
                replay=replay,
                speed=multiple,
                max_candles=max_candles,
                account=account,
                live=live,
                symbols=symbol_list,
                follow_every_s=follow_every,
                exchange=replay_exchange,
                timeframe=replay_timeframe,
            )
    except (FileNotFoundError, ValueError, StateError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    dropped = result.get("candles_dropped", 0)
    typer.echo(
        f"served {result['candles']} candles; equity {result['equity']:.2f}; "
        f"positions {result['positions']}"
        # bad candles (NaN, off the grid, ...) never reached the loop: loop_events kind 'data'
        + (f"; {dropped} bad candle(s) dropped (loop_events kind 'data')" if dropped else "")
    )


def kill(
    account: Annotated[str, typer.Option(help="account")] = "paper",
    reset: Annotated[
        bool, typer.Option("--reset", help="lift the manual kill and reset the kill switch")
    ] = False,
) -> None:
    """Stop new orders of a running loop within one step (or lift it with --reset)."""
    from trading.protections import kill_file, reset_file
    from warehouse import get_settings

    home = get_settings().home
    path = kill_file(home, account)
    path.parent.mkdir(parents=True, exist_ok=True)
    if reset:
        path.unlink(missing_ok=True)
        reset_file(home, account).write_text("reset\n")
        typer.echo(f"kill lifted for {account}; the kill switch resets at the next step")
    else:
        path.write_text("killed by tradeloop kill\n")
        typer.echo(f"kill flag set: {path} (no new orders from the next step)")


def dashboard(account: Annotated[str, typer.Option(help="account")] = "paper") -> None:
    """Latency histograms (per stage) and live performance of the serving loop."""
    from trading.latency import LatencyHistogram
    from trading.service import heartbeat_file
    from warehouse import connect, get_settings

    settings = get_settings()
    hb = heartbeat_file(settings.home, account)
    if hb.exists():
        data = json.loads(hb.read_text())
        typer.echo(
            f"account {account}: heartbeat {data['at']}, {data['steps']} steps, "
            f"model {data['model']}, equity {data['equity']:.2f}, "
            f"threshold mode {data['threshold_mode']}, killed {data['killed']} "
            f"{data['kill_reason']}"
        )
        typer.echo(
            f"rolling accuracy {data['rolling_accuracy']} F1 {data['rolling_f1']} "
            f"over {data['resolved']} resolved predictions"
        )
        # the data's age is the last candle's, not the heartbeat's (a dead collector)
        typer.echo(
            f"last candle {data.get('last_candle_at')}; stale data: "
            f"{', '.join(data.get('stale_symbols') or []) or 'none'}; writer "
            f"{data.get('writer') or {}}"
        )
    con = connect(settings, read_only=True)
    try:
        rows = con.execute(
            "SELECT stage, bucket_upper_us, count FROM loop_latency WHERE account = ? "
            "ORDER BY stage, bucket_upper_us",
            [account],
        ).fetchall()
        eq = con.execute(
            "SELECT min(equity), max(equity), arg_max(equity, ts), count(*) FROM equity "
            "WHERE account = ?",
            [account],
        ).fetchone()
        fills = con.execute("SELECT count(*) FROM fills WHERE account = ?", [account]).fetchone()
        events = con.execute(
            "SELECT ts, kind, coalesce(symbol, ''), message FROM loop_events WHERE account = ? "
            "ORDER BY ts DESC LIMIT 10",
            [account],
        ).fetchall()
    finally:
        con.close()
    if not rows:
        typer.echo(f"no latency recorded for account {account!r} yet")
        return
    from trading.latency import BUCKET_UPPER_US

    for stage in ("features", "inference", "decision", "total"):
        h = LatencyHistogram()
        for st, upper, count in rows:
            if st == stage:
                i = min(range(len(BUCKET_UPPER_US)), key=lambda k: abs(BUCKET_UPPER_US[k] - upper))
                h.counts[i] = int(count)
                h.total += int(count)
                h.max_us = max(h.max_us, upper)
        if not h.total:
            continue
        typer.echo(
            f"\n{stage}: n={h.total} p50={h.quantile_us(0.5):.0f}us p99={h.quantile_us(0.99):.0f}us"
        )
        peak = max(h.counts)
        for upper, count in h.nonzero():
            typer.echo(f"  <= {upper:>10.0f} us {count:>8} {'#' * max(1, 40 * count // peak)}")
    if eq and eq[3]:
        typer.echo(
            f"\nequity now {eq[2]:.2f} (min {eq[0]:.2f}, max {eq[1]:.2f}) over {eq[3]} "
            f"steps; {fills[0] if fills else 0} fills"
        )
    for ts, kind, sym, msg in events:
        typer.echo(f"{ts} [{kind}] {sym} {msg}")
