"""The GX engine when another process re-saves a suite this process has cached (Dask and Prefect
workers share one GX project): the stale copy is reloaded, not a failed validation; and a
checkpoint loaded in the background (while a command fetches) is the one validation runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

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


def test_a_checkpoint_prepared_in_the_background_is_the_one_validate_runs(
    settings: Settings,
) -> None:
    definitions = tuple(not_null(["price"]))
    key = engine._cache_key(settings, "prepared_probe", definitions)
    assert key not in engine._checkpoints

    engine.prepare_in_background(settings, "prepared_probe", definitions).join(timeout=120)
    prepared = engine._checkpoints[key]

    run = engine.validate(
        settings, "prepared_probe", definitions, pd.DataFrame({"price": [None, 2.0]}), run_name="p"
    )
    assert engine._checkpoints[key] is prepared  # validate used it, built nothing new
    assert not run.success and run.outcomes[0].unexpected_rows == (0,)


def test_a_failing_preparation_leaves_the_error_to_validate(
    settings: Settings, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the GX project's folder would be")
    broken = settings.model_copy(update={"home": blocked})
    definitions = tuple(not_null(["price"]))

    thread = engine.prepare_in_background(broken, "broken_probe", definitions)
    thread.join(timeout=120)
    assert not thread.is_alive()  # it ended without raising out of the thread
    with pytest.raises(OSError):
        engine.validate(broken, "broken_probe", definitions, pd.DataFrame({"price": [1.0]}),
                        run_name="b")  # fmt: skip
