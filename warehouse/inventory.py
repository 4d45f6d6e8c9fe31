"""What the warehouse holds, and the series a command means when the user leaves things out.

``inventory`` lists every (exchange, symbol, timeframe) with its first and last candle and row
count. ``resolve_series`` fills in what the user did not name from what is stored: one
timeframe (or exchange) among the requested symbols is taken as meant; several are an error
that lists them and names the flag that picks one; no symbols means every stored symbol of
that timeframe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from warehouse.errors import WarehouseError


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    exchange: str
    symbol: str
    timeframe: str
    first_ts_ms: int
    last_ts_ms: int
    rows: int


@dataclass(frozen=True, slots=True)
class ResolvedSeries:
    exchange: str
    symbols: tuple[str, ...]
    timeframe: str


class AmbiguousSeries(WarehouseError):
    """The warehouse holds several candidates (or none) for what the user left out."""


def inventory(con: Any) -> list[SeriesInfo]:
    rows = con.execute(
        "SELECT exchange, symbol, timeframe, epoch_ms(min(ts)), epoch_ms(max(ts)), count(*) "
        "FROM candles "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    return [SeriesInfo(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5])) for r in rows]


def _one(values: set[str], what: str, flag: str, among: str) -> str:
    if len(values) == 1:
        return next(iter(values))
    listed = ", ".join(sorted(values))
    raise AmbiguousSeries(f"the warehouse holds {what}s {listed} for {among}; pick one with {flag}")


def resolve_series(
    series: Sequence[SeriesInfo],
    symbols: Sequence[str] | None = None,
    timeframe: str | None = None,
    exchange: str | None = None,
) -> ResolvedSeries:
    """The exchange, symbols and timeframe meant (see the module docs)."""
    if not series:
        raise AmbiguousSeries(
            "the warehouse holds no candles; import a file (`tradeloop import FILE`) "
            "or collect some (`tradeloop collect`)"
        )
    wanted = set(symbols or ())
    pool = [s for s in series if not wanted or s.symbol in wanted]
    missing = wanted - {s.symbol for s in pool}
    if missing:
        stored = ", ".join(sorted({s.symbol for s in series}))
        raise AmbiguousSeries(
            f"no candles for {', '.join(sorted(missing))} in the warehouse (it holds {stored}); "
            "import or collect them, or pick stored ones with --symbol"
        )
    among = ", ".join(sorted(wanted)) if wanted else "the stored symbols"
    if exchange is not None:
        pool = [s for s in pool if s.exchange == exchange]
        if not pool:
            exchanges = ", ".join(sorted({s.exchange for s in series}))
            raise AmbiguousSeries(
                f"no candles on exchange {exchange!r} (the warehouse holds {exchanges})"
            )
    if timeframe is not None:
        held = {s.timeframe for s in pool}
        pool = [s for s in pool if s.timeframe == timeframe]
        if not pool:
            raise AmbiguousSeries(
                f"no {timeframe} candles for {among} "
                f"(stored timeframes: {', '.join(sorted(held))}); pick one with --timeframe"
            )
    chosen_tf = timeframe or _one({s.timeframe for s in pool}, "timeframe", "--timeframe", among)
    pool = [s for s in pool if s.timeframe == chosen_tf]
    chosen_ex = exchange or _one({s.exchange for s in pool}, "exchange", "--exchange", among)
    pool = [s for s in pool if s.exchange == chosen_ex]
    if wanted:
        absent = wanted - {s.symbol for s in pool}
        if absent:
            raise AmbiguousSeries(
                f"no {chosen_tf} candles on {chosen_ex} for {', '.join(sorted(absent))}"
            )
        chosen = tuple(sym for sym in (symbols or ()) if sym in wanted)
    else:
        chosen = tuple(sorted({s.symbol for s in pool}))
    return ResolvedSeries(chosen_ex, tuple(dict.fromkeys(chosen)), chosen_tf)
