"""Progress output: bars on a terminal; elsewhere plain lines (every 30 s and at the end of a
phase) with the same figures, so logs never fill with carriage-return updates."""
from __future__ import annotations

import io

from click.testing import CliRunner
from tqdm import tqdm

from ovml.cli import main
from ovml.progress import LogProgress, progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_progress_prints_periodic_and_final_lines_only():
    stream, clock = io.StringIO(), Clock()
    bar = LogProgress(total=100, desc="eval test", unit="batch", stream=stream, clock=clock)
    for step in range(100):
        clock.now += 1.0
        bar.set_postfix(loss="0.5")
        bar.update(1)
    bar.close()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[:3] == ["eval test: 30/100 batch (30%), 1 batch/s, 1:10 left, loss=0.5",
                         "eval test: 60/100 batch (60%), 1 batch/s, 0:40 left, loss=0.5",
                         "eval test: 90/100 batch (90%), 1 batch/s, 0:10 left, loss=0.5"]
    assert lines[3:] == ["eval test: 100/100 batch, 1 batch/s, in 1:40, loss=0.5"]


def test_iterating_logs_one_line_for_a_short_phase():
    stream = io.StringIO()
    assert list(progress(range(5), desc="scan labels", unit="unit", stream=stream)) == list(range(5))
    assert stream.getvalue().count("\n") == 1 and stream.getvalue().startswith("scan labels: 5/5 unit")


def test_a_terminal_gets_a_bar_and_the_environment_can_force_a_style(monkeypatch):
    assert isinstance(progress(total=3, stream=Terminal()), tqdm)
    assert isinstance(progress(total=3, stream=io.StringIO()), LogProgress)
    monkeypatch.setenv("OVML_PROGRESS", "bar")
    assert isinstance(progress(total=3, stream=io.StringIO()), tqdm)
    monkeypatch.setenv("OVML_PROGRESS", "off")
    quiet = io.StringIO()
    list(progress(range(3), stream=quiet))
    assert quiet.getvalue() == ""
    silent = io.StringIO()
    list(progress(range(3), stream=silent, enabled=False))
    assert silent.getvalue() == ""


def test_training_in_a_log_writes_plain_lines(small_world, tmp_path):
    result = CliRunner().invoke(main, ["train-head", "--cache", small_world, "--out", str(tmp_path / "run"),
                                       "--epochs", "2", "--lr", "1e-2"])
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output
    assert "epoch 1: " in result.output and "epoch 2: " in result.output and "batch/s" in result.output
