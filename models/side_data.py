"""Funding and news data for training, read beside the candles (the side feature groups).

``read_side_data`` reads, AT the same DuckLake snapshot as the candles, each series' funding
rates, mark candles and open interest and the scored headlines
(``pipelines.features.side.read_side_inputs``). Like the order book and trades
(``models.microstructure``), a kind of data is used for a series only when it COVERS the
series' training window; else its features stay null, so ``models.data.assemble_samples``
leaves them out of the model's inputs instead of training on the few bars that have them:

* funding rates: the first stamped at most one funding interval (8 h) or ``1 - MIN_COVERAGE``
  of the window after its start, whichever is longer, and the last that much before its end;
* mark candles and open interest: the same, with their own period;
* headlines: the first published at most ``1 - MIN_COVERAGE`` of the window (or 24 h) after
  its start and the last at most that much before its end (a news feed that stopped is not
  "no news").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import duckdb
import polars as pl

from models.microstructure import MIN_COVERAGE
from pipelines.features.side import SideInputs, read_side_inputs
from pipelines.resample import timeframe_ms

log = logging.getLogger(__name__)

SeriesKey = tuple[str, str, str]  # exchange, symbol, timeframe
FUNDING_INTERVAL_MS = 8 * 3_600_000
NEWS_ALLOWANCE_MS = 24 * 3_600_000


def _span(frame: pl.DataFrame | None) -> tuple[int, int] | None:
    if frame is None or frame.height == 0:
        return None
    ms = frame.get_column("ts").dt.epoch("ms")
    return int(ms.min()), int(ms.max())  # type: ignore[arg-type]


def _covers(frame: pl.DataFrame | None, lo: int, hi: int, allowance_ms: int) -> bool:
    span = _span(frame)
    if span is None:
        return False
    slack = max(int((hi - lo) * (1.0 - MIN_COVERAGE)), allowance_ms)
    return span[0] <= lo + slack and span[1] >= hi - slack


def covering(side: SideInputs, lo_ms: int, hi_ms: int, step_ms: int, what: str) -> SideInputs:
    """``side`` with each kind of data that does not cover ``[lo_ms, hi_ms)`` left out (module
    docs); ``step_ms``: the series' timeframe (the mark candles' period)."""
    kept: dict[str, pl.DataFrame | None] = {}
    for name, frame, allowance in (
        ("funding", side.funding, FUNDING_INTERVAL_MS),
        ("mark", side.mark, step_ms),
        ("open_interest", side.open_interest, _period(side.open_interest, step_ms)),
        ("news", side.news, NEWS_ALLOWANCE_MS),
    ):
        ok = _covers(frame, lo_ms, hi_ms, allowance)
        if frame is not None and not ok:
            log.info(
                "%s: %s %s do not cover the training window %d-%d ms (at least %.0f %%): "
                "left out",
                what, name, _span(frame), lo_ms, hi_ms, 100 * MIN_COVERAGE,
            )  # fmt: skip
        kept[name] = frame if ok else None
    return dataclasses.replace(
        side,
        funding=kept["funding"],
        mark=kept["mark"],
        open_interest=kept["open_interest"],
        news=kept["news"],
    )


def _period(frame: pl.DataFrame | None, default: int) -> int:
    """The spacing of the open-interest stamps (their median step)."""
    if frame is None or frame.height < 2:
        return default
    step = frame.get_column("ts").dt.epoch("ms").diff().median()
    return int(step) if step is not None else default  # type: ignore[arg-type]


def read_side_data(
    con: duckdb.DuckDBPyConnection,
    candles: pl.DataFrame,
    snapshot_id: int | None,
    start: dt.datetime | None,
) -> dict[SeriesKey, SideInputs]:
    """Per series of ``candles`` with any: its funding and news data that cover its window, as
    of ``snapshot_id`` (None: now), read from ``start`` on (with the look-back the features
    need)."""
    out: dict[SeriesKey, SideInputs] = {}
    if candles.height == 0:
        return out
    bounds = candles.group_by("exchange", "symbol", "timeframe").agg(
        pl.col("ts").dt.epoch("ms").min().alias("lo"), pl.col("ts").dt.epoch("ms").max().alias("hi")
    )
    for e, s, t, lo, hi in bounds.iter_rows():
        step = timeframe_ms(t)
        side = read_side_inputs(
            con, exchange=e, symbol=s, timeframe=t, after=start, snapshot_id=snapshot_id
        )
        if not side.groups:
            continue
        kept = covering(side, int(lo), int(hi) + step, step, f"{e} {s} {t}")
        if kept.groups:
            out[(e, s, t)] = kept
    return out
