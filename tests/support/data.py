"""The real exchange data in ../shared/data/candles (read in place, never copied)."""

from __future__ import annotations

from pathlib import Path

SHARED_CANDLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "candles"
# every real candle file ("<PAIR>-<timeframe>.feather"; trades files excluded), from the directory
REAL_CANDLE_FILES = sorted(p.name for p in SHARED_CANDLES.glob("*-[0-9]*.feather"))
