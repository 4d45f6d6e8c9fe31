"""The one mapping of feature columns to feature groups (pipelines.features.groups)."""

from __future__ import annotations

import pytest

from pipelines.features import feature_columns
from pipelines.features.groups import (
    BOOK_AND_TRADES,
    CANDLES,
    FUNDING,
    GROUPS,
    MULTI_TIMEFRAME,
    SENTIMENT,
    columns_of,
    feature_group,
    group_columns,
)
from pipelines.features.prune import feature_family
from pipelines.features.spec import HIGHER_TIMEFRAMES
from pipelines.futures_features import FEATURES as FUNDING_COLUMNS
from pipelines.news import NEWS_FEATURE_COLUMNS


def test_every_feature_column_has_one_group() -> None:
    columns = feature_columns()
    groups = group_columns(columns)
    assert list(groups) == list(GROUPS)
    assert sorted(c for cs in groups.values() for c in cs) == sorted(columns)
    assert groups[MULTI_TIMEFRAME] == tuple(
        c for c in columns if feature_family(c) in HIGHER_TIMEFRAMES
    )
    # every column that reads the order book or the trades, lags and interaction included
    assert set(groups[BOOK_AND_TRADES]) == {
        c
        for c in columns
        if feature_family(c) in ("order book", "trade flow", "interaction")
        or c.startswith("obimb_lag")
    }
    assert len(groups[BOOK_AND_TRADES]) == 14
    assert not any(c.startswith(("ob", "tf", "spread")) for c in groups[CANDLES])
    # the side groups by their modules' column names (in the feature set once it has them)
    assert set(groups[FUNDING]) <= set(FUNDING_COLUMNS)
    assert set(groups[SENTIMENT]) <= set(NEWS_FEATURE_COLUMNS)
    assert {feature_group(c) for c in FUNDING_COLUMNS} == {FUNDING}
    assert {feature_group(c) for c in NEWS_FEATURE_COLUMNS} == {SENTIMENT}


def test_selecting_groups_keeps_the_given_order() -> None:
    columns = feature_columns()
    chosen = columns_of((MULTI_TIMEFRAME, CANDLES), columns)
    assert chosen == tuple(c for c in columns if feature_group(c) in (CANDLES, MULTI_TIMEFRAME))
    assert columns_of((BOOK_AND_TRADES,), ()) == ()


def test_unknown_column_or_group_is_named() -> None:
    with pytest.raises(ValueError, match="'mystery_1'.*not in the feature specification"):
        feature_group("mystery_1")
    with pytest.raises(ValueError, match="unknown feature groups \\['orderbook'\\]"):
        columns_of(("orderbook",), feature_columns())
