"""Feature groups: the units whose contribution the walk-forward measures (issue 15, item 4).

A **feature group** is a kind of input data, coarser than a feature family
(:mod:`pipelines.features.prune`): what a model can use depends on which data exists for a
symbol, so the question "what does each group add" is asked group by group:

* ``candles``: every feature of the base timeframe's candles (price, volatility, moving
  averages, RSI, regime, volume, time of day, their lags);
* ``multi-timeframe``: the higher timeframes' features joined as of each close (the spec's
  ``5m``, ``15m``, ``1h`` families);
* ``order book/trades``: every column that reads an order-book snapshot or the public trades
  (the spec's ``order book``, ``trade flow`` and ``interaction`` families and the lags of the
  order-book imbalance);
* ``funding/basis``: the perpetual's funding rates, basis and open-interest change
  (:mod:`pipelines.futures_features`);
* ``sentiment``: the news features (:mod:`pipelines.news.features`).

This module is the ONE mapping from columns to groups (:func:`feature_group`); the
walk-forward ablation (``trading.feature_groups``) and its benchmark use it. A column that
reads an input no group claims raises, so a new kind of input has to be placed here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache

from pipelines.features.prune import feature_family
from pipelines.features.spec import (
    CANDLE_INPUTS,
    HIGHER_TIMEFRAMES,
    SIDE_GROUPS,
    base_graph,
    dependencies,
)

CANDLES = "candles"
MULTI_TIMEFRAME = "multi-timeframe"
BOOK_AND_TRADES = "order book/trades"
FUNDING = "funding/basis"
SENTIMENT = "sentiment"
# in the order the ablation adds them ("candles only", "+ multi-timeframe", ...)
GROUPS: tuple[str, ...] = (CANDLES, MULTI_TIMEFRAME, BOOK_AND_TRADES, FUNDING, SENTIMENT)
# What a model reads unless told otherwise: the groups that earned their place in
# benchmarks/RESULTS.md, "Feature groups: what each adds (issue 15)". The candles carry the
# IC; multi-timeframe adds no IC but a positive after-fee difference for the always-in-market
# strategy (CI above zero). Order book/trades, funding/basis and sentiment added nothing
# measurable, so they are stored and computed but read only when asked for
# (``--feature-groups``, ``TrainConfig.input_groups``; "all" = every group with data).
DEFAULT_INPUT_GROUPS: tuple[str, ...] = (CANDLES, MULTI_TIMEFRAME)

# The base graph's inputs that only some data has, by the group that reads them.
INPUT_GROUPS: dict[str, str] = {
    "ob_imbalance": BOOK_AND_TRADES,
    "ob_spread_bps": BOOK_AND_TRADES,
    "trade_buy": BOOK_AND_TRADES,
    "trade_sell": BOOK_AND_TRADES,
}
# Columns of data joined as of the close beside the candles: the spec's side groups.
SIDE_COLUMNS: dict[str, tuple[str, ...]] = {
    FUNDING: SIDE_GROUPS["funding"],
    SENTIMENT: SIDE_GROUPS["sentiment"],
}
_CANDLE_ONLY = frozenset((*CANDLE_INPUTS, "ts"))


@cache
def _base_inputs() -> dict[str, frozenset[str]]:
    """Per base-graph output: the graph inputs it reads (through every dependency)."""
    graph = base_graph()
    by_name = {n.name: n for n in graph.nodes}
    inputs = set(graph.inputs)
    return {
        name: frozenset(i for dep in dependencies(graph.nodes, [name]) for i in by_name[dep].inputs)
        & inputs
        for name in graph.outputs()
    }


def feature_group(column: str) -> str:
    """The group (one of ``GROUPS``) of a model input column.

    Raises ValueError for a column the feature specification does not define, or one that
    reads an input no group claims (``INPUT_GROUPS``)."""
    for group, names in SIDE_COLUMNS.items():
        if column in names:
            return group
    if feature_family(column) in HIGHER_TIMEFRAMES:  # raises for an unknown column
        return MULTI_TIMEFRAME
    claimed = {INPUT_GROUPS[i] for i in _base_inputs()[column] - _CANDLE_ONLY if i in INPUT_GROUPS}
    unclaimed = sorted(i for i in _base_inputs()[column] - _CANDLE_ONLY if i not in INPUT_GROUPS)
    if unclaimed or len(claimed) > 1:
        raise ValueError(
            f"feature column {column!r} reads inputs {unclaimed or sorted(claimed)} that no one "
            "feature group claims: place them in pipelines.features.groups.INPUT_GROUPS"
        )
    return claimed.pop() if claimed else CANDLES


def group_columns(columns: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``columns`` by group: every group of ``GROUPS`` (possibly empty), columns in the given
    order."""
    out: dict[str, list[str]] = {g: [] for g in GROUPS}
    for c in columns:
        out[feature_group(c)].append(c)
    return {g: tuple(v) for g, v in out.items()}


def columns_of(groups: Sequence[str], columns: Iterable[str]) -> tuple[str, ...]:
    """The columns among ``columns`` (in their order) that belong to ``groups``."""
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown feature groups {unknown}; known: {list(GROUPS)}")
    wanted = set(groups)
    return tuple(c for c in columns if feature_group(c) in wanted)
