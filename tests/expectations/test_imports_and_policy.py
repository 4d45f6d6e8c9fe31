"""GX is imported only when a batch is validated; the policy rejects nonsense values."""

from __future__ import annotations

import subprocess
import sys

import pytest

from expectations.policy import GatePolicy


def test_importing_the_gate_and_cli_does_not_import_great_expectations() -> None:
    code = (
        "import sys, expectations.gate, expectations.revalidate, flows.cli;"
        "assert 'great_expectations' not in sys.modules, 'GX imported at module import'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_bad_fraction": 1.5},
        {"allowed_bad_rows": -1},
        {"extreme_return_sigmas": 0},
        {"max_gap_fraction": -0.1},
        {"extra_columns": "keep"},
        {"extreme_return_action": "drop"},
    ],
)
def test_policy_rejects_invalid_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        GatePolicy(**kwargs)  # type: ignore[arg-type]
