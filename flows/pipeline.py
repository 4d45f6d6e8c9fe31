"""Flow `pipeline`: the data loop as one parent flow with the other flows as subflows.

    collect -> quality -> features [-> retrain] [-> serve N candles]

Each step is the real flow (``flows.collect.collect``, ``flows.quality.quality``, ...), so each
appears in the Prefect UI as a subflow run with its own logs and artifacts. The parent
publishes a short markdown summary artifact (``pipeline-summary``).
"""

from __future__ import annotations

import re
import time
from typing import Any

from flows.collect import collect
from flows.features import features
from flows.orchestration import create_markdown_artifact, flow, get_run_logger
from flows.quality import quality
from flows.retrain import retrain
from flows.runners import on_runner
from flows.serve import serve
from warehouse import Settings, connect, get_settings


def warehouse_counts(settings: Settings) -> dict[str, int]:
    """Row counts of the tables the loop fills (read-only connection)."""
    con = connect(settings, read_only=True)
    try:
        out: dict[str, int] = {}
        for table in ("candles", "features", "models", "predictions", "orders", "fills"):
            row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
            out[table] = int(row[0]) if row else 0
        return out
    finally:
        con.close()


def stored_symbols(settings: Settings, timeframe: str) -> list[str]:
    """Symbols with candles of ``timeframe`` in the warehouse (what a file import brought)."""
    con = connect(settings, read_only=True)
    try:
        rows = con.execute(
            "SELECT DISTINCT symbol FROM candles WHERE timeframe = ? ORDER BY 1", [timeframe]
        ).fetchall()
    finally:
        con.close()
    return [str(r[0]) for r in rows]


def series_account(exchange: str, symbol: str) -> str:
    """A paper account named for one series, e.g. ``paper-file-ETH_BTC``."""
    return f"paper-{exchange}-{re.sub(r'[^A-Za-z0-9]+', '_', symbol)}"


@flow(name="pipeline", log_prints=True)
def pipeline(
    source: str = "simulated",
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
    lookback_days: float = 1.0,
    since: str | None = None,
    until: str | None = None,
    path: str | None = None,
    seed: int = 7,
    resample_from_1m: bool = True,
    build_docs: bool = True,
    fail_on_quality: bool = True,
    run_retrain: bool = False,
    retrain_days: float | None = 30,
    epochs: int = 10,
    horizon: int = 5,
    train_overrides: dict[str, Any] | None = None,
    serve_candles: int = 0,
    serve_account: str | None = "paper",
) -> dict[str, Any]:
    """Collect, validate and featurize ``symbols``; retrain when ``run_retrain``; then serve
    ``serve_candles`` candles with the champion (paper trading) when that is > 0.

    ``serve_account`` None: an account of the served series' own (``series_account``), so a run
    on other data does not meet the state of an account that served another series.

    ``timeframes`` default: 1m, 5m, 15m, 1h (the higher ones resampled from 1m when
    ``resample_from_1m``). The model trains on ``settings.base_timeframe``.
    """
    logger = get_run_logger()
    settings = get_settings()
    if source != "file":  # files decide their own symbols and timeframes unless given
        symbols = list(symbols or settings.symbols)
        timeframes = list(timeframes or ["1m", "5m", "15m", "1h"])
    started = time.monotonic()
    steps: list[tuple[str, str]] = []

    # the per-symbol / per-series subflows run where the settings say (threads or Dask)
    collected = on_runner(collect, settings)(
        source=source,
        symbols=symbols,
        timeframes=timeframes,
        since=since,
        until=until,
        path=path,
        seed=seed,
        resample_from_1m=resample_from_1m and source != "file",
        lookback_days=lookback_days,
    )
    steps.append(
        (
            "collect",
            f"{collected['rows_merged']} rows merged, "
            f"{collected['rows_quarantined']} quarantined, {collected['gaps']} gaps",
        )
    )

    checked = on_runner(quality, settings)(
        symbols=symbols,
        timeframes=timeframes,
        build_docs=build_docs,
        fail_on_policy=fail_on_quality,
    )
    results: list[Any] = list(checked["results"])
    steps.append(
        (
            "quality",
            f"{len(results)} series checked, {sum(not r.success for r in results)} failed policy",
        )
    )

    built = on_runner(features, settings)(symbols=symbols, timeframes=timeframes)
    steps.append(("features", f"{built['rows_written']} rows written"))

    outcome = None
    train_symbols = symbols or stored_symbols(settings, settings.base_timeframe)
    if run_retrain:
        outcome = on_runner(retrain, settings)(
            symbols=train_symbols,
            days=retrain_days,
            horizon=horizon,
            epochs=epochs,
            timeframe=settings.base_timeframe,
            train_overrides=train_overrides,
        )
        steps.append(
            (
                "retrain",
                f"{outcome.model_id} {'promoted' if outcome.promoted else 'not promoted'} "
                f"({outcome.reason})",
            )
        )

    served: Any = None
    if serve_candles > 0:
        # the warehouse symbol itself, under the exchange the candles were collected as
        stored_as = source if source in ("simulated", "file") else settings.exchange
        account = serve_account or series_account(stored_as, train_symbols[0])
        served = serve(
            replay=train_symbols[0],
            exchange=stored_as,
            account=account,
            last_candles=serve_candles,
            max_candles=serve_candles,
        )
        served = {**served, "account": account}
        steps.append(("serve", f"{serve_candles} candles served on account {account}"))

    counts = warehouse_counts(settings)
    elapsed_s = time.monotonic() - started
    lines = [
        "# Pipeline run",
        "",
        f"Symbols: {', '.join(symbols or train_symbols)}; "
        f"timeframes: {', '.join(timeframes or ['as stored'])}; "
        f"source: {source}; {elapsed_s:.1f} s.",
        "",
        "| step | result |",
        "| --- | --- |",
        *(f"| {name} | {text} |" for name, text in steps),
        "",
        "| table | rows |",
        "| --- | --- |",
        *(f"| {table} | {n} |" for table, n in counts.items()),
    ]
    if checked.get("data_docs"):
        lines += ["", f"Data Docs: `{checked['data_docs']}`"]
    create_markdown_artifact(
        key="pipeline-summary", markdown="\n".join(lines) + "\n", description="pipeline run"
    )
    logger.info(f"pipeline done in {elapsed_s:.1f} s: {counts}")
    return {
        "collect": collected,
        "quality": checked,
        "features": built,
        "retrain": outcome,
        "serve": served,
        "counts": counts,
        "elapsed_s": elapsed_s,
    }
