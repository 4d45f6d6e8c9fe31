"""The quality gate on a batch whose every row fails, against a clean batch of the same size.

200,000 1m candles, every row off the minute grid (each is quarantined with its reason and
raw row), against the same rows on the grid (all merged). The all-bad cost was quadratic
(133 s for 100,000 rows), then 3.5x a clean batch; the goal is at most 2x. Minimum of five
alternating runs each, in one process, so machine load hits both. This was a test until
issue 14 moved wall-clock checks out of the suite (the test now checks what is quarantined).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from benchmarks.results import record
from tests.support.batches import grid_batch

ROWS = 200_000
RUNS = 5


def main() -> None:
    from expectations.gate import GatePolicy, gate_and_merge
    from warehouse import Settings, connect, migrate

    policy = GatePolicy(max_bad_fraction=1.0)
    clean: list[float] = []
    bad: list[float] = []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home")
        con = connect(settings)
        migrate(con)
        gate_and_merge(con, "candles", grid_batch(100, "WARM/UP", off_grid=False),
                       settings=settings)  # fmt: skip
        for i in range(RUNS):
            for times, off_grid in ((clean, False), (bad, True)):
                batch = grid_batch(ROWS, f"S{i}{int(off_grid)}/USDT", off_grid=off_grid)
                started = time.perf_counter()
                result = gate_and_merge(con, "candles", batch, settings=settings, policy=policy)
                times.append(time.perf_counter() - started)
                expected = ROWS if off_grid else 0
                if result.rows_quarantined != expected:
                    raise RuntimeError(f"quarantined {result.rows_quarantined}, not {expected}")
        con.close()
    ratio = min(bad) / min(clean)
    verdict = "met" if ratio <= 2.0 else "not met"
    record(
        "Quality gate: an all-bad batch against a clean one",
        f"{ROWS:,} 1m candles, every row off the minute grid (all quarantined with reason and "
        f"raw row) against the same rows on the grid (all merged); minimum of {RUNS} "
        f"alternating runs each in one process; load average {load:.1f} at the start.\n\n"
        "| batch | min s | vs clean |\n| --- | ---: | ---: |\n"
        f"| clean (baseline) | {min(clean):.2f} | 1.00x |\n"
        f"| all bad | {min(bad):.2f} | {ratio:.2f}x |\n\n"
        f"Goal: at most 2x a clean batch: **{verdict}** ({ratio:.2f}x). Run: "
        "`python -m benchmarks.bench_gate_all_bad`.",
    )
    print(f"all-bad {min(bad):.2f} s vs clean {min(clean):.2f} s: {ratio:.2f}x")


if __name__ == "__main__":
    main()
