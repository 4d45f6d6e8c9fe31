"""Session fixtures of the feature tests: the real candle and trades files as frames."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tests.support.features import CANDLE_FILES, load_candles, load_trades


@pytest.fixture(scope="session")
def real_candles(candles_dir: Path) -> dict[str, pl.DataFrame]:
    return {name: load_candles(candles_dir / name, *meta) for name, meta in CANDLE_FILES.items()}


@pytest.fixture(scope="session")
def xrp_trades(candles_dir: Path) -> pl.DataFrame:
    return load_trades(candles_dir / "XRP_ETH-trades.feather")
