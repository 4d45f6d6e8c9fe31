"""Features: one specification, a polars batch pipeline and an O(1) online engine built from it.

Public API (used by the models and trading code):
    FEATURE_SET_VERSION   hash of the specification, stored with every feature row and model
    feature_columns()     ordered model input columns
    build_features(...)   polars batch pipeline for one symbol/timeframe
    OnlineFeatureEngine   per-candle O(1) updates of the same features
"""

from pipelines.features.batch import FeatureInputError, build_features
from pipelines.features.online import OnlineFeatureEngine
from pipelines.features.spec import (
    FEATURE_SET_VERSION,
    HIGHER_TIMEFRAMES,
    MAX_CARRIED_GAP_BARS,
    feature_columns,
    feature_table_markdown,
)

__all__ = [
    "FEATURE_SET_VERSION",
    "HIGHER_TIMEFRAMES",
    "MAX_CARRIED_GAP_BARS",
    "FeatureInputError",
    "OnlineFeatureEngine",
    "build_features",
    "feature_columns",
    "feature_table_markdown",
]
