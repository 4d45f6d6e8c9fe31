"""Sentiment scorers: a score in [-1, 1] per text, behind one interface.

``VaderScorer`` (VADER's compound score; the package ships its lexicon, so it runs offline) is
the one shipped. Another scorer, e.g. a transformer model where one is available, plugs in by
having a ``name`` (stored with each score in ``news_scores.scorer``) and a ``score`` method.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


@runtime_checkable
class SentimentScorer(Protocol):
    @property
    def name(self) -> str:
        """Stored with each score (``news_scores.scorer``)."""
        ...

    def score(self, texts: Sequence[str]) -> list[float]:
        """One score in [-1, 1] per text, in order: negative < 0 < positive."""
        ...


def plain_text(text: str) -> str:
    """Feed bodies are often HTML: tags dropped, whitespace collapsed."""
    return _SPACE.sub(" ", _TAG.sub(" ", text)).strip()


class VaderScorer:
    """VADER's compound score of each text (lexicon and rules; no model download)."""

    name = "vader"

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer: Any = SentimentIntensityAnalyzer()

    def score(self, texts: Sequence[str]) -> list[float]:
        return [float(self._analyzer.polarity_scores(plain_text(t))["compound"]) for t in texts]
