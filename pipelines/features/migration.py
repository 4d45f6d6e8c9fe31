"""The features migrations, generated from the spec so the spec stays the one definition.

``python -m pipelines.features.migration`` prints warehouse/migrations/0005_features.sql (the
candle model input columns); ``python -m pipelines.features.migration 0015`` prints
warehouse/migrations/0015_regime_columns.sql (the regime labels stored beside them);
``python -m pipelines.features.migration 0021`` prints
warehouse/migrations/0021_side_feature_columns.sql (the funding and sentiment groups). Tests
hold the files equal to what these functions generate.
"""

from __future__ import annotations

import sys

from pipelines.features.spec import (
    REGIME_COLUMNS,
    SIDE_GROUPS,
    candle_feature_columns,
)

MIGRATION_FILE = "0005_features.sql"
REGIME_MIGRATION_FILE = "0015_regime_columns.sql"
SIDE_MIGRATION_FILE = "0021_side_feature_columns.sql"


def migration_sql() -> str:
    """ALTER TABLE features ADD COLUMN for gap_bars and every candle feature column (DOUBLE)."""
    lines = [
        "-- Feature columns of the features table, generated from pipelines/features/spec.py by",
        "-- `python -m pipelines.features.migration` (a test holds it equal to feature_columns()).",
        "-- One row per exchange, symbol, timeframe, ts; raw values (RSI on its 0-100 scale).",
        "ALTER TABLE features ADD COLUMN gap_bars BIGINT;",
    ]
    lines += [
        f'ALTER TABLE features ADD COLUMN "{name}" DOUBLE;' for name in candle_feature_columns()
    ]
    return "\n".join(lines) + "\n"


def regime_migration_sql() -> str:
    """ALTER TABLE features ADD COLUMN for every regime label (DOUBLE, like the features)."""
    lines = [
        "-- Regime labels of the features table (not model inputs), generated from",
        "-- pipelines/features/spec.py REGIME_COLUMNS by `python -m pipelines.features.migration",
        "-- 0015` (a test holds it equal). regime_trend: 1 bull, 0 sideways, -1 bear;",
        "-- regime_vol: 1 high, 0 low volatility; null while warming up. See docs/regimes.md.",
    ]
    lines += [f'ALTER TABLE features ADD COLUMN "{name}" DOUBLE;' for name in REGIME_COLUMNS]
    return "\n".join(lines) + "\n"


def side_migration_sql() -> str:
    """ALTER TABLE features ADD COLUMN for every feature of the side groups (DOUBLE)."""
    lines = [
        "-- The side feature groups of the features table (issue 15: funding rates, basis and",
        "-- open interest of perpetuals; news sentiment), model inputs when the warehouse holds",
        "-- their data, null otherwise. Generated from pipelines/features/spec.py SIDE_GROUPS by",
        "-- `python -m pipelines.features.migration 0021` (a test holds it equal). See",
        "-- docs/futures.md and docs/news.md.",
    ]
    for group, names in SIDE_GROUPS.items():
        lines.append(f"-- {group}")
        lines += [f'ALTER TABLE features ADD COLUMN "{name}" DOUBLE;' for name in names]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    which = sys.argv[1:]
    if which == ["0015"]:
        print(regime_migration_sql(), end="")
    elif which == ["0021"]:
        print(side_migration_sql(), end="")
    else:
        print(migration_sql(), end="")
