"""Assemble and run a serving loop from settings (used by the Prefect flow and the CLI).

No Prefect here: the flow passes ``on_retrain`` (emits the ``tradeloop.model.degraded`` event
that triggers the retrain deployment) and ``heartbeat``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb

from models.registry import ModelRecord, champion
from pipelines.features import FEATURE_SET_VERSION
from pipelines.features.rebuild import history_start_ms
from pipelines.progress import Progress, current, task
from pipelines.resample import timeframe_ms
from pipelines.sources.base import wall_clock_ms
from trading.alerts import Alerter
from trading.backtest import Candles
from trading.fallback import ModelManager
from trading.loop import LoopConfig, RunSummary, ServingLoop, run
from trading.loop_config import with_volatility_choices
from trading.market import (
    FollowMarket,
    PollingMarket,
    ReplayMarket,
    read_replay_candles,
    require_candles,
)
from trading.microstructure import Timeline, read_timeline, reads_microstructure
from trading.side_data import WarehouseSideFeed, read_side_timeline, reads_side_groups
from trading.writer import BufferedWriter, now_ms
from warehouse import Settings, Warehouse, connect, migrate


class LiveTradingRefused(RuntimeError):
    """Live trading was asked for without every opt-in it needs."""


def require_live_opt_in(
    settings: Settings, *, live: bool, api_key: str | None = None, api_secret: str | None = None
) -> None:
    """Paper trading is the default. Live orders need BOTH ``--live`` and
    ``TRADELOOP_LIVE_TRADING=true``, a ccxt exchange (``TRADELOOP_EXCHANGE``) and API keys."""
    if not live:
        return
    if not settings.live_trading:
        raise LiveTradingRefused(
            "live trading refused: --live also needs TRADELOOP_LIVE_TRADING=true in the "
            "environment (both are required); without them tradeloop serve paper-trades"
        )
    if settings.exchange in ("simulated", "file"):
        raise LiveTradingRefused(
            f"live trading refused: TRADELOOP_EXCHANGE={settings.exchange!r} is not a ccxt "
            "exchange id (e.g. binance)"
        )
    key = api_key or (
        settings.exchange_api_key.get_secret_value() if settings.exchange_api_key else None
    )
    secret = api_secret or (
        settings.exchange_api_secret.get_secret_value() if settings.exchange_api_secret else None
    )
    if not key or not secret:
        raise LiveTradingRefused(
            "live trading refused: no API key/secret; set TRADELOOP_EXCHANGE_API_KEY and "
            "TRADELOOP_EXCHANGE_API_SECRET or name a Prefect Secret block"
        )


# Bars read before the first served candle on top of the features' own warm-up, so that a
# model's window (TrainConfig.window_len, 32 by default) is complete at that candle.
MODEL_WINDOW_MARGIN_BARS = 256


class ChampionLookup:
    """The registry's champion, looked up on a connection of its own that is reopened once
    when a lookup fails: after a dropped catalog session (a PostgreSQL restart, an idle
    timeout) hot swap goes on instead of failing at every check until a restart."""

    def __init__(self, settings: Settings, model_name: str) -> None:
        self.settings = settings
        self.model_name = model_name
        self.con: duckdb.DuckDBPyConnection | None = None
        self.reconnects = 0

    def __call__(self) -> ModelRecord | None:
        if self.con is None:
            self.con = connect(self.settings, read_only=True)
        try:
            return champion(self.con, self.model_name)
        except duckdb.Error:
            self.close()
            self.reconnects += 1
            self.con = connect(self.settings, read_only=True)
            return champion(self.con, self.model_name)

    def close(self) -> None:
        if self.con is not None:
            with contextlib.suppress(duckdb.Error):
                self.con.close()
            self.con = None


def heartbeat_file(home: Path, account: str) -> Path:
    return home / "serve" / f"{account}.heartbeat"


def _iso(ts_ms: int | None) -> str | None:
    if ts_ms is None:
        return None
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).isoformat()


def write_heartbeat(home: Path, loop: ServingLoop) -> None:
    """The account's heartbeat file. ``at`` is when it was written; ``last_candle_at`` the open
    time of the last candle served (a monitor judges the data's age by it, not by ``at``);
    ``stale_symbols`` those under a stale-data alert; ``writer`` the warehouse writer's
    backlog and set-aside rows."""
    path = heartbeat_file(home, loop.config.account)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    writer = loop.writer.stats() if loop.writer is not None else None
    tmp.write_text(
        json.dumps(
            {
                "at": dt.datetime.now(dt.UTC).isoformat(),
                "steps": loop.steps,
                "last_candle_ts_ms": loop.last_ts_ms,
                "last_candle_at": _iso(loop.last_ts_ms),
                "stale_symbols": stale_symbols(loop),
                "writes_refused": loop.writes_refused,
                "writer": writer,
                "model": loop.manager.active_id,
                "equity": loop.state.portfolio.equity(),
                "killed": loop.state.risk.killed,
                "kill_reason": loop.state.risk.kill_reason,
                "latency": loop.latency.summary(),
                "rolling_accuracy": loop.feedback.accuracy,
                "rolling_f1": loop.feedback.f1,
                "resolved": loop.feedback.resolved,
                "threshold_mode": loop.thresholds.mode,
            },
            default=str,
        )
    )
    tmp.replace(path)


def stale_symbols(loop: ServingLoop) -> list[str]:
    return sorted(s for s, st in loop.symbols.items() if st.stale_alerted)


class Heartbeat:
    """Writes the heartbeat when something changed since the last one: a candle was served,
    or the stale-data alerts or the writer's refusal changed. An idle loop does not rewrite
    it, so a dead collector does not look like fresh data."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.last: tuple[object, ...] | None = None

    def __call__(self, loop: ServingLoop) -> bool:
        seen = (loop.steps, loop.last_ts_ms, tuple(stale_symbols(loop)), loop.writes_refused)
        if seen == self.last:
            return False
        write_heartbeat(self.home, loop)
        self.last = seen
        return True


def serve_replay(
    settings: Settings,
    source: str,
    *,
    config: LoopConfig | None = None,
    speed: float | None = None,
    max_candles: int | None = None,
    resume: bool = True,
    on_retrain: Callable[[str], None] | None = None,
    heartbeat: Callable[[ServingLoop], None] | None = None,
    heartbeat_every: int = 50,
    last_candles: int | None = None,
    follow_every_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    timeframe: str | None = None,
    max_polls: int | None = None,
    progress: Progress | None = None,
    alerts: Alerter | None = None,
) -> RunSummary:
    """Replay a candle file or a warehouse symbol through the paper-trading loop.

    A warehouse symbol is read under ``config.exchange`` (default: ``settings.exchange``, the
    exchange the candles were collected under) at ``timeframe`` (default 1m);
    ``last_candles``: serve only its latest N, after warming the loop's features on the
    candles before them (see ``_warm_up_window``).
    ``follow_every_s``: then keep following the source, reading its new candles every that
    many seconds (``sleep`` waits), until ``max_candles`` (or ``max_polls`` reads); ``speed``
    does not apply. ``alerts``: the loop's notifications (``trading.alerts``), flushed and
    closed at the end."""
    if follow_every_s is not None and speed is not None:
        raise ValueError("serve_replay: follow_every_s follows new candles as they land; no speed")
    config = config or LoopConfig.from_settings(settings, model_check_every_steps=60)
    con = connect(settings)
    migrate(con)
    lookup = ChampionLookup(settings, config.model_name)
    try:
        read_after, warm_until = _warm_up_window(
            source, con, config.exchange, last_candles, timeframe
        )
        market: ReplayMarket | FollowMarket
        if follow_every_s is None:
            stored = read_replay_candles(
                source,
                con=con,
                exchange=config.exchange,
                timeframe=timeframe,
                after_ts_ms=read_after,
            )
            stored = require_candles(stored, source, config.exchange)
            market = ReplayMarket([stored], speed=speed, side=stored_side(con, config, stored))
        else:
            market = _follow_market(
                settings, source, config.exchange, follow_every_s, sleep, read_after, timeframe
            )
            market.max_polls = max_polls
        config = dataclasses.replace(config, timeframe=market.timeframe)
        # on the stored candles before the first decision (as backtest --model chooses)
        history_before = None if warm_until is None or Path(source).exists() else warm_until + 1
        config = with_volatility_choices(
            config,
            con,
            replay_series(source, config.exchange, market)["symbols"],
            before_ms=history_before,
        )
        manager = ModelManager(lookup, FEATURE_SET_VERSION)
        writer = BufferedWriter(settings, lambda: connect(settings))
        loop = ServingLoop(
            config,
            manager=manager,
            writer=writer,
            home=settings.home,
            on_retrain=on_retrain,
            alerts=alerts,
        )
        loop.series = replay_series(source, config.exchange, market)
        beat_file = Heartbeat(settings.home)
        if isinstance(market, FollowMarket):

            def save_before_waiting() -> None:
                loop.flush(wait=True)
                beat_file(loop)

            market.on_idle = save_before_waiting

        shown = progress if progress is not None else current()

        def beat(lp: ServingLoop) -> None:
            shown.advance()
            if lp.steps % heartbeat_every == 0 and beat_file(lp) and heartbeat is not None:
                heartbeat(lp)

        total = None if follow_every_s is not None else len(stored)
        if total is not None and max_candles is not None:
            total = min(total, max_candles)
        with task("replay (candles)", total, shown):
            summary = run(
                loop,
                market,
                max_candles=max_candles,
                con=con if resume else None,
                heartbeat=beat,
                warm_until_ts_ms=warm_until,
            )
        beat_file(loop)
        writer.close()
        return summary
    finally:
        lookup.close()
        con.close()
        if alerts is not None:
            alerts.close()


def stored_side(con: Any, config: LoopConfig, candles: Candles) -> dict[str, Timeline]:
    """The stored order books and trades of a replayed warehouse symbol over its candles
    (``trading.microstructure``); none for a file or a symbol without them."""
    if len(candles) == 0:
        return {}
    step = timeframe_ms(candles.timeframe)
    lo, hi = int(candles.ts_ms[0]) - step, int(candles.ts_ms[-1]) + step
    timeline = read_timeline(con, config.exchange, candles.symbol, lo, hi)
    # its funding rates, mark candles, open interest and scored headlines (trading.side_data)
    data = read_side_timeline(con, config.exchange, candles.symbol, candles.timeframe, lo)
    if data is not None:
        timeline = timeline or Timeline.empty(candles.symbol)
        timeline.data = data
    return {} if timeline is None else {candles.symbol: timeline}


def side_symbols(settings: Settings, symbols: Sequence[str]) -> list[str]:
    """The symbols whose order book and trades a live loop polls: those the settings collect
    (``Settings.microstructure_symbols``); every symbol when the champion reads order-book or
    trade-flow features."""
    from pipelines.microstructure import enabled

    return enabled(settings, symbols, flag=reads_microstructure(champion_features(settings)))


def champion_features(settings: Settings) -> tuple[str, ...]:
    """The feature columns the current champion reads (none without a loadable champion)."""
    lookup = ChampionLookup(settings, LoopConfig.from_settings(settings).model_name)
    try:
        record = lookup()
    finally:
        lookup.close()
    if record is None:
        return ()
    from models.runtime import OnnxPredictor

    try:
        return tuple(OnnxPredictor.load(record.onnx_path, FEATURE_SET_VERSION).required_features)
    except Exception:  # noqa: BLE001 - the loop reports an unloadable champion itself
        return ()


def replay_series(
    source: str, exchange: str, market: ReplayMarket | FollowMarket
) -> dict[str, Any]:
    """What a replay serves, as its snapshot records it: a warehouse symbol, or a file by its
    absolute path, with the symbols and timeframe (a resume of another series is refused)."""
    path = Path(source)
    if isinstance(market, ReplayMarket):
        symbols = list(market.symbols)
    elif not path.exists():
        symbols = [source]
    else:  # a followed file: its symbol is in its rows
        symbols = [read_replay_candles(source, con=None, exchange=exchange).symbol]
    return {
        "source": f"file {path.resolve()}" if path.exists() else "warehouse",
        "exchange": exchange,
        "symbols": sorted(symbols),
        "timeframe": market.timeframe,
    }


def _warm_up_window(
    source: str,
    con: duckdb.DuckDBPyConnection,
    exchange: str,
    last_candles: int | None,
    timeframe: str | None = None,
) -> tuple[int | None, int | None]:
    """(read candles opened after, warm up to and including) for serving the latest
    ``last_candles``: the candles before the first served one that its features depend on
    (``history_start_ms``) and a model window needs (``MODEL_WINDOW_MARGIN_BARS``) are fed
    through the loop's warm-up, without decisions, so the model serves from the first candle
    instead of the RSI fallback. (None, None): serve everything from the start."""
    if last_candles is None:
        return None, None
    latest = read_replay_candles(
        source, con=con, exchange=exchange, timeframe=timeframe, last=last_candles
    )
    if len(latest) == 0:
        return None, None
    first_ms = int(latest.ts_ms[0])
    margin_ms = MODEL_WINDOW_MARGIN_BARS * timeframe_ms(latest.timeframe)
    return history_start_ms(first_ms - margin_ms, latest.timeframe) - 1, first_ms - 1


def _follow_market(
    settings: Settings,
    source: str,
    exchange: str,
    poll_interval_s: float,
    sleep: Callable[[float], None],
    read_after_ts_ms: int | None,
    timeframe: str | None = None,
) -> FollowMarket:
    """A FollowMarket on ``source``. A warehouse symbol (``timeframe``, default 1m) is read on a
    fresh read-only connection per poll, so a catalog that dropped the session (a PostgreSQL
    restart, an idle timeout) is simply reconnected at the next poll."""
    warehouse = None if Path(source).exists() else Warehouse(settings)

    def read(after_ts_ms: int | None, up_to_ts_ms: int | None) -> Candles:
        with contextlib.ExitStack() as stack:
            session = None if warehouse is None else warehouse.session(read_only=True)
            con = None if session is None else stack.enter_context(session)
            return read_replay_candles(
                source,
                con=con,
                exchange=exchange,
                timeframe=timeframe,
                after_ts_ms=read_after_ts_ms if after_ts_ms is None else after_ts_ms,
                up_to_ts_ms=up_to_ts_ms,
            )

    def side_read(lo_ms: int, hi_ms: int) -> Timeline | None:
        """The symbol's stored order books and trades (``trading.microstructure``)."""
        assert warehouse is not None
        with warehouse.session(read_only=True) as con:
            return read_timeline(con, exchange, source, lo_ms, hi_ms)

    if warehouse is None:
        timeframe = read(None, None).timeframe
    return FollowMarket(
        read,
        timeframe or "1m",
        poll_interval_s,
        sleep=sleep,
        name=f"replay {source}",
        clock=wall_clock_ms,  # stale data is judged on the wall clock, not the candle's time
        side_read=None if warehouse is None else side_read,
    )


def serve_live(
    settings: Settings,
    symbols: list[str],
    *,
    config: LoopConfig | None = None,
    api_key: str | None = None,
    api_secret: str | None = None,
    max_candles: int | None = None,
    max_polls: int | None = None,
    poll_interval_s: float = 5.0,
    on_retrain: Callable[[str], None] | None = None,
    heartbeat: Callable[[ServingLoop], None] | None = None,
    heartbeat_every: int = 1,
    alerts: Alerter | None = None,
) -> RunSummary:
    """Trade ``symbols`` on ``settings.exchange`` with real orders (``CcxtBroker``): closed
    candles polled with ccxt, orders sent with client order ids and reconciled by them.
    Sandbox/testnet unless ``TRADELOOP_EXCHANGE_SANDBOX=false``. Needs the live opt-in."""
    from pipelines.resample import timeframe_ms
    from pipelines.sources.base import wall_clock_ms
    from pipelines.sources.ccxt_source import CcxtSource
    from trading.live_broker import CcxtBroker
    from trading.live_service import journal_file, restore_live, stop_on_sigterm

    key = api_key or (
        settings.exchange_api_key.get_secret_value() if settings.exchange_api_key else None
    )
    secret = api_secret or (
        settings.exchange_api_secret.get_secret_value() if settings.exchange_api_secret else None
    )
    require_live_opt_in(settings, live=True, api_key=key, api_secret=secret)
    mode = "sandbox" if settings.exchange_sandbox else "live"
    config = dataclasses.replace(
        config or LoopConfig.from_settings(settings, account=mode, model_check_every_steps=60),
        exchange=settings.exchange,
        mode=mode,
        flush_every_steps=1,  # live: each step's rows and state are written at once
    )
    broker = CcxtBroker(
        settings.exchange,
        api_key=key,
        api_secret=secret,
        sandbox=settings.exchange_sandbox,
        api_base=settings.exchange_api_base,
        journal=journal_file(settings.home, config.account),
    )
    source = CcxtSource(settings.exchange, api_base=settings.exchange_api_base)
    if settings.exchange_sandbox:
        source.exchange.set_sandbox_mode(True)
        if settings.exchange_api_base:
            from pipelines.sources.ccxt_source import rewrite_api_urls

            source.exchange.urls["api"] = rewrite_api_urls(
                source.exchange.urls["api"], settings.exchange_api_base
            )
    con = connect(settings)  # first: the champion's features are read from the warehouse
    migrate(con)
    step = timeframe_ms(config.timeframe)
    now = wall_clock_ms()
    since_ms = now - now % step - step
    market = PollingMarket(
        source,
        symbols,
        config.timeframe,
        since_ms=since_ms,  # from the last closed candle on: no old signals
        poll_interval_s=poll_interval_s,
        max_polls=max_polls,
        side_symbols=side_symbols(settings, symbols),
    )
    if reads_side_groups(champion_features(settings)):  # funding / news from the warehouse
        market.side_data = WarehouseSideFeed(
            con, config.exchange, config.timeframe, symbols, clock=time.time
        ).poll
    config = with_volatility_choices(config, con, symbols, before_ms=since_ms)
    lookup = ChampionLookup(settings, config.model_name)
    try:
        manager = ModelManager(lookup, FEATURE_SET_VERSION)
        # live: an order the warehouse cannot record is not sent (ServingLoop.flush)
        writer = BufferedWriter(
            settings, lambda: connect(settings), refuse_over=settings.live_max_unwritten_batches
        )
        loop = ServingLoop(
            config,
            manager=manager,
            writer=writer,
            home=settings.home,
            broker=broker,
            on_retrain=on_retrain,
            alerts=alerts,
        )
        broker.on_unknown = lambda order, why: loop.event(
            now_ms(),
            "order",
            f"order {order.client_order_id} ({order.side} {order.amount:g}): outcome unknown "
            f"({why}); reconciling by client order id, never re-sent blindly",
            order.symbol,
            alert="order_unknown",
        )
        loop.series = {
            "source": "live",
            "exchange": settings.exchange,
            "symbols": sorted(symbols),
            "timeframe": config.timeframe,
        }
        beat_file = Heartbeat(settings.home)

        def beat(lp: ServingLoop) -> None:
            if lp.steps % heartbeat_every == 0 and beat_file(lp) and heartbeat is not None:
                heartbeat(lp)

        # the snapshot and the exchange's orders and balances, before the first candle
        resumed = restore_live(loop, broker, con, symbols)
        if resumed is not None:  # never a candle the snapshot already served
            for s in symbols:
                market.cursor[s] = max(market.cursor[s], resumed + step)
        with stop_on_sigterm() as stop:
            summary = run(loop, market, max_candles=max_candles, heartbeat=beat, stop=stop)
        beat_file(loop)
        writer.close()
        return summary
    finally:
        lookup.close()
        con.close()
        if alerts is not None:
            alerts.close()
