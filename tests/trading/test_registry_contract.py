"""The serving tests' MemoryRegistry against the real registry: the same champion after the same
promotions, as the serving loop's ModelManager sees it (lookup, sha256 check, ONNX load, swap).
A test that passes on MemoryRegistry therefore says something about the real registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.features import FEATURE_SET_VERSION, feature_columns
from tests.trading.serve_harness import MemoryRegistry
from tests.trading.serve_support import constant_model, register_champion
from trading.fallback import ModelManager
from trading.service import ChampionLookup
from warehouse import Settings

FIELDS = ("model_id", "name", "status", "feature_set_version", "onnx_sha256")


def _seen(manager: ModelManager) -> tuple[Any, ...]:
    events = manager.refresh()
    return manager.active_id, [e.kind for e in events]


def test_memory_registry_serves_the_champion_the_real_registry_serves(
    lake: Any, settings: Settings, tmp_path: Path
) -> None:
    real = ChampionLookup(settings, "signal")
    memory = MemoryRegistry()
    managers = [
        ModelManager(real, FEATURE_SET_VERSION),
        ModelManager(memory.lookup, FEATURE_SET_VERSION),
    ]
    try:
        assert real() is None and memory.lookup() is None
        assert _seen(managers[0]) == _seen(managers[1])  # both on the fallback
        window = np.zeros((1, 12, len(feature_columns())), dtype=np.float32)
        for i, probabilities in enumerate([(0.7, 0.2, 0.1), (0.1, 0.2, 0.7)]):
            path = constant_model(tmp_path / f"m{i}.onnx", probabilities, 0.9)
            model_id = register_champion(lake, settings, path)
            memory.promote(path, model_id)
            a, b = real(), memory.lookup()
            assert a is not None and b is not None
            assert [getattr(a, f) for f in FIELDS] == [getattr(b, f) for f in FIELDS]
            # the loop's manager swaps to it from either, and both predict the same
            assert _seen(managers[0]) == _seen(managers[1]) and managers[0].active_id == model_id
            assert managers[0].predictor is not None and managers[1].predictor is not None
            got = [m.predictor.predict(window) for m in managers]  # type: ignore[union-attr]
            np.testing.assert_array_equal(got[0].probabilities, got[1].probabilities)
            assert got[0].probabilities[0].tolist() == pytest.approx(list(probabilities))
    finally:
        real.close()
