"""Fixtures for the trading tests: the real candle files, read in place."""

from __future__ import annotations

from pathlib import Path

import pytest

from trading.backtest import Candles, load_candle_file


@pytest.fixture(scope="session")
def eth_btc(candles_dir: Path) -> Candles:
    return load_candle_file(candles_dir / "ETH_BTC-5m.feather")
