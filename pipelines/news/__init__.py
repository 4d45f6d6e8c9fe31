"""News and sentiment: sources (feeds, files, simulated), scoring, storage and features.

Plain functions, no Prefect: ``flows/news.py`` and ``tradeloop news`` call them. See
docs/news.md.
"""

from pipelines.news.features import (
    DEFAULT_SPEC,
    NEWS_FEATURE_COLUMNS,
    NewsFeatureSpec,
    OnlineNewsFeatures,
    news_features,
)
from pipelines.news.items import NewsItem, NewsSourceError
from pipelines.news.scoring import SentimentScorer, VaderScorer
from pipelines.news.sources import FeedSource, NewsFileSource, NewsSource, SimulatedNewsSource
from pipelines.news.store import IngestResult, ingest, read_news
from pipelines.news.terms import TermMatcher, asset_of, matcher

__all__ = [
    "DEFAULT_SPEC",
    "NEWS_FEATURE_COLUMNS",
    "FeedSource",
    "NewsFileSource",
    "IngestResult",
    "NewsFeatureSpec",
    "NewsItem",
    "NewsSource",
    "NewsSourceError",
    "OnlineNewsFeatures",
    "SentimentScorer",
    "SimulatedNewsSource",
    "TermMatcher",
    "VaderScorer",
    "asset_of",
    "ingest",
    "matcher",
    "news_features",
    "read_news",
]
