"""The features migrations, generated from the spec so the spec stays the one definition.

``python -m pipelines.features.migration`` prints warehouse/migrations/0005_features.sql (the
model input columns); ``python -m pipelines.features.migration 0015`` prints
warehouse/migrations/0015_regime_columns.sql (the regime labels stored beside them). Tests hold
both files equal to what these functions generate.
"""

from __future__ import annotations

import sys

from pipelines.features.spec import REGIME_COLUMNS, feature_columns

MIGRATION_FILE = "0005_features.sql"
REGIME_MIGRATION_FILE = "0015_regime_columns.sql"


def migration_sql() -> str:
    """ALTER TABLE features ADD COLUMN for gap_bars and every feature column (DOUBLE)."""
    lines = [
        "-- Feature columns of the features table, generated from pipelines/features/spec.py by",
        "-- `python -m pipelines.features.migration` (a test holds it equal to feature_columns()).",
        "-- One row per exchange, symbol, timeframe, ts; raw values (RSI on its 0-100 scale).",
        "ALTER TABLE features ADD COLUMN gap_bars BIGINT;",
    ]
    lines += [f'ALTER TABLE features ADD COLUMN "{name}" DOUBLE;' for name in feature_columns()]
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


if __name__ == "__main__":
    print(regime_migration_sql() if sys.argv[1:] == ["0015"] else migration_sql(), end="")
