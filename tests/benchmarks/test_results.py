"""benchmarks.results.record: a re-run replaces its own section only, and runs side by side
keep each other's sections."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from benchmarks import results


@pytest.fixture
def results_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "RESULTS.md"
    monkeypatch.setattr(results, "RESULTS", path)
    return path


def test_a_rerun_replaces_its_section_and_keeps_the_others(results_file: Path) -> None:
    results.record("Alpha", "first alpha")
    results.record("Beta", "only beta")
    results.record("Alpha", "second alpha")

    text = results_file.read_text()
    assert "second alpha" in text and "first alpha" not in text
    assert "only beta" in text
    assert text.count("## Alpha\n") == 1 and text.index("## Alpha") < text.index("## Beta")


def _record_into(path: str, section: str) -> None:
    results.RESULTS = Path(path)
    for attempt in range(20):
        results.record(section, f"{section} run {attempt}")


def test_runs_side_by_side_keep_every_section(results_file: Path) -> None:
    sections = [f"Section {n}" for n in range(6)]
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_record_into, args=(str(results_file), section))
        for section in sections
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    text = results_file.read_text()
    for section in sections:
        assert text.count(f"## {section}\n") == 1
        assert f"{section} run 19" in text
