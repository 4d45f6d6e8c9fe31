"""Progress of long work: rich bars with count, rate and ETA on a terminal, plain log lines
(no control codes) elsewhere, and the plain loops reporting to whichever the CLI chose."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from flows.commands.progress import RichProgress, for_terminal
from pipelines.progress import LogProgress, NoProgress, current, each, reporting, status_line

CANDLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "candles"
TRADELOOP = str(Path(sys.executable).with_name("tradeloop"))
ESCAPE = "\x1b["


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=140, color_system="standard"), out


def test_rich_bars_show_the_count_and_rate_on_a_terminal() -> None:
    console, out = terminal()
    progress = RichProgress(console)
    progress.start("import (files)", 3)
    for _ in range(3):
        progress.advance()
    progress.done()
    text = out.getvalue()
    assert ESCAPE in text  # a terminal gets a live bar
    assert "import (files)" in text and "3/3" in text and "/s" in text


def test_nested_tasks_close_to_their_parent_and_restart_fresh() -> None:
    console, out = terminal()
    progress = RichProgress(console)
    progress.start("train members", 2)
    for _ in range(2):
        progress.start("train hybrid (epochs)", 4)
        for _ in range(4):
            progress.advance(note="val_loss 1.0000")
        progress.done()
        progress.advance()
    progress.done()
    assert "2/2" in out.getvalue()
    # a second top-level task (the next fold) starts from an empty display
    progress.start("walk-forward (folds)", 5)
    progress.advance(2)
    progress.close_all()
    final = out.getvalue().rsplit("walk-forward", 1)[1]
    assert "2/5" in final and "train members" not in final


def test_log_lines_carry_count_rate_and_time_left_and_no_control_codes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    progress = LogProgress(logging.getLogger("tradeloop.test"), every_s=0.0)
    with caplog.at_level(logging.INFO, logger="tradeloop.test"):
        progress.start("features (series)", 4)
        for _ in range(4):
            progress.advance()
        progress.done()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "features (series): started (4 steps)"
    assert any(line.startswith("features (series): 2/4 (") and "s left" in line for line in lines)
    assert lines[-1].startswith("features (series): 4/4 (") and lines[-1].endswith(", done")
    assert not any(ESCAPE in line for line in lines)


def test_status_line_without_a_total_has_no_eta() -> None:
    assert status_line("candles", 1000, None, 2.0) == "candles: 1000 (500.0/s)"
    assert status_line("folds", 1, 4, 10.0, "ic 0.1") == "folds: 1/4 (0.1/s, 30 s left) ic 0.1"


def test_the_terminal_check_picks_bars_or_lines() -> None:
    assert isinstance(for_terminal(tty=True), RichProgress)
    assert isinstance(for_terminal(tty=False), LogProgress)
    assert isinstance(current(), NoProgress)  # library calls and tests report nothing


def test_each_counts_finished_items_and_closes_on_break() -> None:
    console, out = terminal()
    progress = RichProgress(console)
    with reporting(progress):
        for i in each([1, 2, 3, 4], "folds"):
            if i == 1:
                continue  # a skipped fold still counts
            if i == 3:
                break
        assert not progress._open  # the break closed the task
    assert "2/4" in out.getvalue()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_command_logs_done_only_when_its_work_succeeded() -> None:
    from flows.commands.progress import command_progress
    from flows.orchestration import api_configured

    shown, seen = logging.getLogger("tradeloop.progress"), Lines()
    level = shown.level
    shown.addHandler(seen)
    shown.setLevel(logging.INFO)
    try:
        with command_progress("candles") as progress:
            assert current() is progress  # the plain functions report to the command's task
            progress.advance(5)
        with pytest.raises(RuntimeError), command_progress("candles") as progress:
            progress.advance(3)
            raise RuntimeError("the exchange went away")
    finally:
        shown.removeHandler(seen)
        shown.setLevel(level)
    assert isinstance(current(), NoProgress)  # restored after the command
    if api_configured():  # a Prefect flow run: its UI is the record, no progress lines
        assert seen.lines == []
        return
    first, finished, *rest = seen.lines
    assert first == "candles: started"
    assert finished.startswith("candles: 5 (") and finished.endswith(", done")
    assert rest == ["candles: started"]  # the failed run: no 'done' line, its error says it


def test_import_to_a_pipe_prints_no_progress_control_codes(tmp_path: Path) -> None:
    """`tradeloop import FILE` with stdout a pipe, not a terminal: log lines, no bar."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADELOOP_", "PREFECT_"))}
    env.update(TRADELOOP_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect"))
    result = subprocess.run(
        [TRADELOOP, "import", str(CANDLES / "XRP_ETH-5m.feather")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert ESCAPE not in result.stdout and ESCAPE not in result.stderr
    assert "\r" not in result.stdout + result.stderr  # no bar redrawn in place either
    assert "candles: " in result.stderr and "/s)" in result.stderr  # the plain progress line


def test_training_reports_each_epoch_with_its_losses(caplog: pytest.LogCaptureFixture) -> None:
    """The real training loop (a tiny network on a few windows) advances an epochs' task."""
    import numpy as np

    from models.training import TrainConfig, train_neural

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8, 4)).astype(np.float32)
    y = np.arange(64, dtype=np.int64) % 3
    config = TrainConfig(epochs=3, patience=5, batch_size=32, d_model=8, lstm_hidden=8)
    progress = LogProgress(logging.getLogger("tradeloop.test"), every_s=0.0)
    with caplog.at_level(logging.INFO, logger="tradeloop.test"):
        train_neural("hybrid", x, y, x[:16], y[:16], config, progress=progress)
        lines = [r.getMessage() for r in caplog.records]
        assert lines[0] == "train hybrid (epochs): started (3 steps)"
        assert any(line.startswith("train hybrid (epochs): 1/3 (") for line in lines)
        assert "val_loss" in lines[1] and lines[-1].startswith("train hybrid (epochs): 3/3")
        caplog.clear()
        quiet = config.with_updates(progress=False)
        train_neural("hybrid", x, y, x[:16], y[:16], quiet, progress=progress)
        assert not caplog.records  # progress=False: nothing reported
