from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from models.data import SampleSet
from models.export import ExportResult

REPO = Path(__file__).resolve().parents[2]


def test_runtime_registry_and_metrics_import_and_predict_without_torch(
    exported: ExportResult, recent_windows: SampleSet, tmp_path: Path
) -> None:
    windows = tmp_path / "windows.npy"
    np.save(windows, recent_windows.full_windows()[:4])
    script = f"""
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import numpy as np
import models.runtime, models.registry, models.evaluation, models.metrics, models.calibration
from models.runtime import OnnxPredictor
from pipelines.features import FEATURE_SET_VERSION
p = OnnxPredictor.load({str(exported.path)!r}, FEATURE_SET_VERSION)
out = p.predict(np.load({str(windows)!r}))
assert out.probabilities.shape == (4, 3), out.probabilities.shape
assert p.info.class_forward_returns is not None and p.info.calibration["method"]
assert models.metrics.log_loss(np.zeros(4, dtype=int), out.probabilities) > 0
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
print("ok", out.predicted_class)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
