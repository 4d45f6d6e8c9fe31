"""The features migration, generated from the spec so the spec stays the one definition.

``python -m pipelines.features.migration`` prints warehouse/migrations/0005_features.sql.
"""

from __future__ import annotations

from pipelines.features.spec import feature_columns

MIGRATION_FILE = "0005_features.sql"


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


if __name__ == "__main__":
    print(migration_sql(), end="")
