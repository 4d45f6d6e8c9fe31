"""The GX engine when another process re-saves a suite this process has cached (Dask and Prefect
workers share one GX project): the stale copy is reloaded, not a failed validation."""

from __future__ import annotations

import pandas as pd

from expectations import engine
from expectations.specs import not_null
from warehouse import Settings


def test_a_suite_saved_by_another_process_is_reloaded(settings: Settings) -> None:
    import great_expectations as gx

    definitions = tuple(not_null(["price"]))
    frame = pd.DataFrame({"price": [1.0, None, 3.0]})
    first = engine.validate(settings, "stale_probe", definitions, frame, run_name="r1")
    assert not first.success and first.outcomes[0].unexpected_rows == (1,)

    # what another process does: its own context saves the same suite again (new objects,
    # new expectation ids), which makes this process's cached checkpoint stale for GX
    other = gx.get_context(mode="file", project_root_dir=str(engine.quality_root(settings)))
    suite = engine.build_suite("stale_probe", definitions)
    suite.meta["tradeloop_suite_hash"] = engine._suite_hash(definitions)
    other.suites.add_or_update(suite)

    again = engine.validate(settings, "stale_probe", definitions, frame, run_name="r2")
    assert not again.success and again.outcomes[0].unexpected_rows == (1,)
