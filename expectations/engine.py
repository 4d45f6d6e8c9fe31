"""The Great Expectations engine: one file context per process, suites and checkpoints cached.

Great Expectations is imported here, lazily, on the first validation (its import costs
seconds). The context is a GX *file* context under ``$TRADELOOP_HOME/quality``: suites,
validation definitions and checkpoints are written there, every validation result is
stored there, and the Data Docs site is built from them into
``$TRADELOOP_HOME/quality/gx/uncommitted/data_docs/local_site/index.html``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from expectations.gx_import import import_great_expectations
from expectations.specs import SUITE_VERSION, ExpectationDef
from warehouse.settings import Settings

_lock = threading.RLock()
_contexts: dict[str, Any] = {}
_checkpoints: dict[tuple[str, str, str], Any] = {}


@dataclass(frozen=True)
class Outcome:
    """What GX said about one expectation on one batch."""

    definition: ExpectationDef
    success: bool
    element_count: int
    unexpected_count: int
    unexpected_rows: tuple[int, ...]  # positions in the validated frame


@dataclass(frozen=True)
class SuiteRun:
    suite: str
    success: bool
    outcomes: tuple[Outcome, ...]
    statistics: dict[str, Any]


def quality_root(settings: Settings) -> Path:
    return (settings.home / "quality").resolve()


def data_docs_index(settings: Settings) -> Path:
    return quality_root(settings) / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"


@contextlib.contextmanager
def _across_processes(root: str) -> Iterator[None]:
    """Hold an exclusive file lock on the GX project: its config, suite, validation-definition
    and checkpoint JSON files are shared by every process on this home (Dask and Prefect
    workers), and GX itself does not guard them against concurrent writers."""
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / ".tradeloop-gx.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def context(settings: Settings) -> Any:
    """The GX file context of this process for ``settings.home`` (built once, then cached)."""
    root = str(quality_root(settings))
    with _lock, _across_processes(root):
        if root in _contexts:
            return _contexts[root]
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        gx = import_great_expectations()
        from great_expectations.data_context.types.base import ProgressBarsConfig

        Path(root).mkdir(parents=True, exist_ok=True)
        ctx = gx.get_context(mode="file", project_root_dir=root)
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        try:  # keep a stored one: replacing it drops the assets other processes' checkpoints use
            ctx.data_sources.get("tradeloop")
        except (KeyError, LookupError, ValueError):
            ctx.data_sources.add_pandas("tradeloop")
        _contexts[root] = ctx
        return ctx


def _suite_hash(definitions: tuple[ExpectationDef, ...]) -> str:
    text = json.dumps(
        [[d.expectation, d.kwargs, d.rule, d.severity] for d in definitions],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(f"{SUITE_VERSION}:{text}".encode()).hexdigest()[:16]


def build_suite(name: str, definitions: tuple[ExpectationDef, ...]) -> Any:
    """A ``gx.ExpectationSuite`` for ``definitions`` (each expectation's meta names its rule)."""
    gx = import_great_expectations()
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name=name, meta={"tradeloop_suite_version": SUITE_VERSION})
    for index, d in enumerate(definitions):
        cls = getattr(gxe, d.expectation)
        suite.add_expectation(
            cls(
                **d.kwargs,
                meta={
                    "tl_index": index,
                    "rule": d.rule,
                    "severity": d.severity,
                    "notes": d.describe,
                },
            )
        )
    return suite


def _checkpoint(
    settings: Settings, suite_name: str, definitions: tuple[ExpectationDef, ...]
) -> Any:
    cache_key = _cache_key(settings, suite_name, definitions)
    with _lock:
        if cache_key in _checkpoints:
            return _checkpoints[cache_key]
        ctx = context(settings)
        with _across_processes(cache_key[0]):
            checkpoint = _stored_or_new_checkpoint(ctx, suite_name, definitions, cache_key[2])
        _checkpoints[cache_key] = checkpoint
        return checkpoint


def prepare_in_background(
    settings: Settings, suite_name: str, definitions: tuple[ExpectationDef, ...]
) -> threading.Thread:
    """Import Great Expectations and load (or save) the suite's checkpoint in a background
    thread: seconds in a new process, which a command spends while it fetches or reads its
    data instead of after. The first ``validate`` waits for it (``_lock``); a failure here is
    left for that call to raise, with its own context."""

    def load() -> None:
        with contextlib.suppress(Exception):
            _checkpoint(settings, suite_name, definitions)

    thread = threading.Thread(target=load, name=f"gx-prepare-{suite_name}", daemon=True)
    thread.start()
    return thread


def _forget_checkpoint(
    settings: Settings, suite_name: str, definitions: tuple[ExpectationDef, ...]
) -> None:
    with _lock:
        _checkpoints.pop(_cache_key(settings, suite_name, definitions), None)


def _cache_key(
    settings: Settings, suite_name: str, definitions: tuple[ExpectationDef, ...]
) -> tuple[str, str, str]:
    """(GX project root, suite name, suite hash): one cached checkpoint per suite version."""
    return str(quality_root(settings)), suite_name, _suite_hash(definitions)


def _stored_or_new_checkpoint(
    ctx: Any, suite_name: str, definitions: tuple[ExpectationDef, ...], suite_hash: str
) -> Any:
    """The stored checkpoint when another process already saved this exact suite (rewriting it
    would make that process's copy stale: GX then refuses to run it), else save a new one."""
    gx = import_great_expectations()

    try:
        stored = ctx.suites.get(suite_name)
        if stored.meta.get("tradeloop_suite_hash") == suite_hash:
            return ctx.checkpoints.get(f"{suite_name}_gate")
    except Exception:  # noqa: BLE001 - not stored yet (GX raises several types): build it
        pass
    source = ctx.data_sources.get("tradeloop")
    try:
        asset = source.get_asset(suite_name)
    except LookupError:
        asset = source.add_dataframe_asset(suite_name)
    try:
        batch_definition = asset.get_batch_definition("batch")
    except (KeyError, LookupError, ValueError):
        batch_definition = asset.add_batch_definition_whole_dataframe("batch")
    suite = build_suite(suite_name, definitions)
    suite.meta["tradeloop_suite_hash"] = suite_hash
    suite = ctx.suites.add_or_update(suite)
    validation = ctx.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{suite_name}_batch", data=batch_definition, suite=suite)
    )
    checkpoint = ctx.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"{suite_name}_gate",
            validation_definitions=[validation],
            result_format={"result_format": "COMPLETE"},
        )
    )
    return checkpoint


def validate(
    settings: Settings,
    suite_name: str,
    definitions: tuple[ExpectationDef, ...],
    frame: pd.DataFrame,
    *,
    run_name: str,
    rows: bool = True,
) -> SuiteRun:
    """Run the suite on ``frame`` through its checkpoint; the result is stored for Data Docs.

    ``rows=False`` asks GX for counts only (result format BASIC: the element and unexpected
    counts and the first 20 unexpected values), and ``Outcome.unexpected_rows`` stays empty:
    the caller finds the rows itself (``expectations.rules``) and holds them to these counts.
    With every row of a big batch failing, the COMPLETE format's index lists were most of the
    gate's cost (GX deep-copies and serialises them into the stored result); SUMMARY's value
    counts and index lists of those 20 cost about 40% more than BASIC on a clean batch.
    """
    import_great_expectations()  # first: a plain import here would run the deferred modules
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.exceptions.resource_freshness import (
        ResourceFreshnessAggregateError,
        ResourceFreshnessError,
    )

    for attempt in range(2):
        checkpoint = _checkpoint(settings, suite_name, definitions)
        try:
            with _lock:
                if rows:
                    result = checkpoint.run(
                        batch_parameters={"dataframe": frame},
                        run_id=RunIdentifier(run_name=run_name),
                    )
                    validation = next(iter(result.run_results.values()))
                else:  # the checkpoint's one validation definition, with a lighter format
                    validation = checkpoint.validation_definitions[0].run(
                        checkpoint_id=checkpoint.id,
                        batch_parameters={"dataframe": frame},
                        result_format={"result_format": "BASIC"},
                        run_id=RunIdentifier(run_name=run_name),
                    )
            break
        except (ResourceFreshnessAggregateError, ResourceFreshnessError):
            # Another process saved the suite (or its checkpoint) after this one cached its
            # copy; GX refuses to run a stale copy. Load the stored one and run again.
            if attempt:
                raise
            _forget_checkpoint(settings, suite_name, definitions)
    outcomes = []
    for r in validation.results:
        index = int(r.expectation_config.meta["tl_index"])
        details = r.result or {}
        positions = (details.get("unexpected_index_list") or []) if rows else []
        if positions and isinstance(positions[0], dict):  # GX names index columns when asked
            positions = [next(iter(v.values())) for v in positions]
        outcomes.append(
            Outcome(
                definition=definitions[index],
                success=bool(r.success),
                element_count=int(details.get("element_count") or 0),
                unexpected_count=int(details.get("unexpected_count") or 0),
                unexpected_rows=tuple(int(i) for i in positions),
            )
        )
    if r_exc := [
        r
        for r in validation.results
        if r.exception_info and r.exception_info.get("raised_exception")
    ]:
        messages = [r.exception_info.get("exception_message") for r in r_exc]
        raise RuntimeError(
            f"Great Expectations could not evaluate suite {suite_name!r}: {messages}"
        )
    outcomes.sort(key=lambda o: definitions.index(o.definition))
    return SuiteRun(
        suite=suite_name,
        success=bool(validation.success),
        outcomes=tuple(outcomes),
        statistics=dict(validation.statistics),
    )


def prune_stored_results(settings: Settings, *, keep_days: float) -> int:
    """Delete stored GX validation results (and their Data Docs pages) older than ``keep_days``.

    Every gated batch stores one result (about 50 kB for a 10k-row candle batch), so a
    long-running collector needs this; ``quality_results`` in the warehouse keeps the record.
    Returns the number of files deleted.
    """
    if keep_days < 0:
        raise ValueError(f"keep_days must be >= 0, got {keep_days}")
    import time

    cutoff = time.time() - keep_days * 86_400
    uncommitted = quality_root(settings) / "gx" / "uncommitted"
    deleted = 0
    with _lock:
        for folder in (
            uncommitted / "validations",
            uncommitted / "data_docs" / "local_site" / "validations",
        ):
            if not folder.is_dir():
                continue
            for path in folder.rglob("*"):
                if (
                    path.is_file()
                    and not path.name.startswith(".")
                    and path.stat().st_mtime < cutoff
                ):
                    path.unlink()
                    deleted += 1
            for directory in sorted((d for d in folder.rglob("*") if d.is_dir()), reverse=True):
                if not any(directory.iterdir()):
                    directory.rmdir()
    return deleted


def build_data_docs(settings: Settings) -> Path:
    """Rebuild the Data Docs site from every stored validation; returns its index.html."""
    with _lock:
        context(settings).build_data_docs()
    return data_docs_index(settings)
