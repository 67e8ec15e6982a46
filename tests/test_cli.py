"""The command line through click's CliRunner, and once as a real subprocess."""
from __future__ import annotations

import os
import subprocess
import sys

from click.testing import CliRunner

from ovml.cli import main


def test_ovml_help_runs_as_a_real_program():
    program = os.path.join(os.path.dirname(sys.executable), "ovml")
    done = subprocess.run([program, "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for command in ("extract", "info", "train-head", "eval", "predict", "add-labels", "serve", "demo"):
        assert command in done.stdout


def test_extract_then_info(folder_dataset, tiny_clip, tmp_path):
    out = str(tmp_path / "c.zarr")
    runner = CliRunner()
    result = runner.invoke(main, ["extract", "--dataset", "folder", "--root", folder_dataset, "--out", out,
                                  "--model", tiny_clip, "--workers", "0", "--unit-rows", "8"])
    assert result.exit_code == 0, result.output
    assert "32 images (4 unreadable)" in result.output and "images/s" in result.output
    result = runner.invoke(main, ["info", out])
    assert result.exit_code == 0, result.output
    assert "complete" in result.output and "5 (3 seen, 2 unseen)" in result.output
    assert "split train: N=24, rows done 24, ok 20" in result.output


def test_bad_input_is_one_line(tmp_path, tiny_clip):
    runner = CliRunner()
    result = runner.invoke(main, ["info", str(tmp_path / "nothing.zarr")])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "nothing.zarr" in result.output
    result = runner.invoke(main, ["extract", "--dataset", "folder", "--root", str(tmp_path), "--out",
                                  str(tmp_path / "x.zarr"), "--model", tiny_clip])
    assert result.exit_code == 1 and "classes.csv: file not found" in result.output
    result = runner.invoke(main, ["extract", "--dataset", "folder", "--root", str(tmp_path), "--out",
                                  str(tmp_path / "x.h5"), "--dask", "local:2"])
    assert result.exit_code == 2 and "single writer" in result.output
