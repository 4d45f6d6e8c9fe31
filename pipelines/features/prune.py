"""The feature specification pruned to the columns a model needs, and its feature families.

A model trained on a selected set of columns (``models.training``, feature selection) needs
only those columns at serving time. :func:`plan` turns the ONE feature specification
(:mod:`pipelines.features.spec`) into the graphs that compute exactly these columns with all
their dependencies (intermediate nodes, higher timeframes' candles): the batch pipeline
(``build_features(..., columns=...)``) and the online engine
(``OnlineFeatureEngine(..., columns=...)``) both interpret the pruned graphs, so they stay the
same computation and their parity holds for the pruned set too.

A **feature family** is the spec's ``group`` of a base column (``price``, ``rsi``, ``lags``,
...), and the timeframe (``5m``, ``15m``, ``1h``) of a higher-timeframe column: the unit
feature selection keeps or drops (see docs/models.md, "Feature selection").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from pipelines.features.spec import (
    HIGHER_TIMEFRAME_FEATURES,
    HIGHER_TIMEFRAMES,
    Graph,
    base_graph,
    dependencies,
    feature_columns,
    higher_graph,
)


def prune_graph(graph: Graph, outputs: Iterable[str]) -> Graph:
    """``graph`` with only the nodes ``outputs`` depend on (themselves included), in order.

    Inputs are kept as they are (the engines feed them positionally)."""
    needed = dependencies(graph.nodes, outputs)
    return Graph(graph.inputs, tuple(n for n in graph.nodes if n.name in needed))


@dataclass(frozen=True)
class FeaturePlan:
    """What to compute for ``columns``: the pruned base graph, and per higher timeframe the
    pruned graph and the features of it the columns use (timeframes no column uses are left
    out)."""

    columns: tuple[str, ...]  # in the order of feature_columns()
    base: Graph
    base_outputs: tuple[str, ...]  # base-graph outputs among ``columns``
    higher: dict[str, tuple[Graph, tuple[str, ...]]]  # timeframe -> (graph, feature names)

    @property
    def nodes(self) -> int:
        """How many nodes are evaluated per candle (base plus every higher timeframe)."""
        return len(self.base.nodes) + sum(len(g.nodes) for g, _ in self.higher.values())


def plan(columns: Sequence[str] | None = None) -> FeaturePlan:
    """The graphs computing ``columns`` (None: every column of ``feature_columns()``).

    Raises ValueError naming any column the specification does not define."""
    every = feature_columns()
    wanted = set(every if columns is None else columns)
    unknown = sorted(wanted - set(every))
    if unknown:
        raise ValueError(f"feature columns {unknown} are not in the feature specification")
    ordered = tuple(c for c in every if c in wanted)
    full_base = base_graph()
    base_outputs = tuple(c for c in full_base.outputs() if c in wanted)
    higher: dict[str, tuple[Graph, tuple[str, ...]]] = {}
    full_higher = higher_graph()
    for tf in HIGHER_TIMEFRAMES:
        names = tuple(n for n in HIGHER_TIMEFRAME_FEATURES if f"{n}_{tf}" in wanted)
        if names:
            higher[tf] = (prune_graph(full_higher, names), names)
    return FeaturePlan(ordered, prune_graph(full_base, base_outputs), base_outputs, higher)


def feature_family(column: str) -> str:
    """The family of a feature column (its spec group; the timeframe for higher ones)."""
    for tf in HIGHER_TIMEFRAMES:
        base = column.removesuffix(f"_{tf}")
        if base != column and base in HIGHER_TIMEFRAME_FEATURES:
            return tf
    group = _base_groups().get(column)
    if group is not None:
        return group
    raise ValueError(f"feature column {column!r} is not in the feature specification")


@cache
def _base_groups() -> dict[str, str]:
    return {n.name: n.group or n.name for n in base_graph().nodes if n.output}


def feature_families(columns: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``columns`` grouped by family (families in first-seen order, columns in given order)."""
    out: dict[str, list[str]] = {}
    for c in columns:
        out.setdefault(feature_family(c), []).append(c)
    return {k: tuple(v) for k, v in out.items()}
