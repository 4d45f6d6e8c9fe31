"""Flow `features`: incremental rebuild of the warehouse `features` table.

One task per (exchange, symbol, timeframe) with candles (or the ones asked for); each computes
only candles newer than its last feature row plus the warm-up history
(``pipelines.features.rebuild.rebuild_features``) and upserts them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import partial
from typing import Any

from expectations.feature_gate import gate_features
from flows.orchestration import DEFAULT_TASK_RUNNER, NO_CACHE, flow, get_run_logger, task, unmapped
from pipelines.features import FEATURE_SET_VERSION
from pipelines.features.rebuild import RebuildResult, list_series, rebuild_features
from warehouse import Settings, connect, get_settings, migrate


@task(name="features-series", cache_policy=NO_CACHE, retries=0)
def featurize_series(
    settings: Settings, exchange: str, symbol: str, timeframe: str, full: bool, run_id: str
) -> RebuildResult:
    con = connect(settings)
    try:
        result = rebuild_features(
            con,
            exchange=exchange,
            symbol=symbol,
            timeframe=timeframe,
            settings=settings,
            full=full,
            merge=partial(gate_features, settings=settings, run_id=run_id),
        )
    finally:
        con.close()
    get_run_logger().info(
        f"{exchange} {symbol} {timeframe}: {result.mode}, {result.candles_read} candles read, "
        f"{result.write.inserted} rows inserted, {result.write.replaced} replaced, "
        f"{result.rows_quarantined} quarantined"
    )
    return result


@task(name="features-list-series", cache_policy=NO_CACHE)
def select_series(
    settings: Settings, symbols: Sequence[str] | None, timeframes: Sequence[str] | None
) -> list[tuple[str, str, str]]:
    con = connect(settings)
    try:
        migrate(con)
        series = list_series(con)
    finally:
        con.close()
    return [
        s
        for s in series
        if (not symbols or s[1] in symbols) and (not timeframes or s[2] in timeframes)
    ]


@flow(name="features", task_runner=DEFAULT_TASK_RUNNER, log_prints=False)
def features(
    symbols: Sequence[str] | None = None,
    timeframes: Sequence[str] | None = None,
    full: bool = False,
) -> dict[str, Any]:
    """Bring the features of every stored symbol/timeframe (or the given ones) up to date."""
    settings = get_settings()
    run_id = f"features-{uuid.uuid4().hex[:12]}"  # names this run's quarantined rows
    series = select_series(settings, symbols, timeframes)
    # one mapped task per series, run where the flow's task runner says (threads or Dask)
    results = list(
        featurize_series.map(
            unmapped(settings),
            [e for e, _, _ in series],
            [s for _, s, _ in series],
            [t for _, _, t in series],
            unmapped(full),
            unmapped(run_id),
        ).result()
    )
    return {
        "feature_set_version": FEATURE_SET_VERSION,
        "results": results,
        "rows_written": sum(r.write.written for r in results),
        "rows_quarantined": sum(r.rows_quarantined for r in results),
    }
