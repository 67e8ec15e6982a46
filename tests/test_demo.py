"""`ovml demo` runs offline through its CLI entry point."""
from __future__ import annotations

import os

from click.testing import CliRunner

from ovml.cli import main


def test_demo_runs_end_to_end(tmp_path):
    out = str(tmp_path / "demo")
    result = CliRunner().invoke(main, ["demo", "--out", out, "--quick"])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC planted world" in result.output and "ovml extract --dataset nuswide" in result.output
    assert "ZSL (unseen labels)" in result.output and "GZSL (all labels)" in result.output
    assert "ZSL by kind of label" in result.output and "| dense |" in result.output
    for split in ("unseen", "all"):
        for name in ("metrics.json", "report.md", "alpha_sweep.png", "per_label_ap.png", "pr_curves.png"):
            assert os.path.getsize(os.path.join(out, f"eval-{split}", name)) > 0
    for run in ("ovml", "ovml-paper"):
        assert os.path.exists(os.path.join(out, run, "head.pt"))
