"""expectations.gx_import: the first validation of a process imports Great Expectations with
the modules it needs only for charts and distributional expectations deferred (they have not
run after it), and the suite really ran; a deferred module is the real one once used."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent(
    """
    import json, sys
    import pandas as pd
    from expectations import engine
    from expectations.gx_import import DEFERRED_MODULES, import_great_expectations
    from expectations.specs import not_null
    from warehouse import Settings

    # what the gate does in a new process: the first validation imports GX
    settings = Settings(home=sys.argv[1])
    frame = pd.DataFrame({"close": [1.0, None, 3.0]})
    run = engine.validate(settings, "probe", tuple(not_null(["close"])), frame, run_name="p")
    ran_at_import = {
        name: name in sys.modules and type(sys.modules[name]).__name__ != "_LazyModule"
        for name in DEFERRED_MODULES
    }
    gx = import_great_expectations()
    import altair, scipy.stats
    used = (altair.Chart.__name__, scipy.stats.rankdata([3, 1, 2]).tolist())
    print(json.dumps({
        "gx_is_imported": gx is sys.modules["great_expectations"],
        "ran_at_import": ran_at_import,
        "unexpected_rows": [list(o.unexpected_rows) for o in run.outcomes],
        "used": used,
        "after_use": {n: type(sys.modules[n]).__name__ for n in DEFERRED_MODULES},
    }))
    """
)


def test_deferred_modules_do_not_run_at_import_and_validation_still_works(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "home")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["gx_is_imported"]
    assert seen["ran_at_import"] == {"altair": False, "scipy.stats": False}
    assert seen["unexpected_rows"] == [[1]]  # the null close: a real suite ran
    assert seen["used"] == ["Chart", [3.0, 1.0, 2.0]]
    assert set(seen["after_use"].values()) == {"module"}
