"""Fixtures of the news tests: the loopback feed server (tests/support/feeds.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.feeds import FeedServer, serve_feeds


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with serve_feeds() as served:
        yield served
