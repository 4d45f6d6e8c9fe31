"""The series a command means, from its options and what the warehouse holds."""

from __future__ import annotations

from collections.abc import Sequence

from flows.commands.options import usage_error
from warehouse.inventory import ResolvedSeries


def resolve(
    symbols: Sequence[str] | None, timeframe: str | None, exchange: str | None
) -> ResolvedSeries:
    """``warehouse.inventory.resolve_series`` on the stored candles; ambiguity is a usage error
    (one line listing the choices and the flag, exit 2)."""
    from warehouse import connect, get_settings
    from warehouse.inventory import AmbiguousSeries, inventory, resolve_series

    con = connect(get_settings(), read_only=True)
    try:
        return resolve_series(inventory(con), symbols, timeframe, exchange)
    except AmbiguousSeries as exc:
        raise usage_error(str(exc)) from exc
    finally:
        con.close()
