"""Stage 3: `ovml eval` outputs, interpolation identities, defaults, alpha auto."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from ovml.cache.reader import CacheReader
from ovml.cli import main
from ovml.heads.base import EPS, cosine_scores
from ovml.metrics.protocol import evaluate
from ovml.cache.batches import cache_pool
from ovml.train.saved_head import load_trained_head


def run(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result


def interpolate(features: torch.Tensor, global_embedding: torch.Tensor, alpha: float) -> torch.Tensor:
    """docs/method.md's f_ij = (1 - alpha) o_ij/|o_ij| + alpha g_i/|g_i|: (N, L, D), (N, D) -> (N, L, D)."""
    head = F.normalize(features, dim=-1, eps=EPS)
    image = F.normalize(global_embedding, dim=-1, eps=EPS)[:, None, :]         # (N, 1, D)
    return (1 - alpha) * head + alpha * image


@pytest.mark.slow  # trained_run: 10 epochs
def test_eval_writes_report_plots_and_json(planted_world, trained_run, tmp_path):
    out = str(tmp_path / "report")
    result = run("eval", "--cache", planted_world, "--head", trained_run, "--alpha", "0,0.5,1,auto",
                 "--out", out)
    assert "| clip-ml |" in result.output and "alpha" in result.output and "pseudo-unseen" in result.output
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["protocol"] == "lesa" and metrics["split"] == "unseen"
    assert metrics["images"] == 1000 and metrics["labels"] == 10
    methods = {(row["method"], row["alpha"]) for row in metrics["rows"]}
    assert {("clip-ml", None), ("dense", None), ("ovml", 0.0), ("ovml", 0.5), ("ovml", 1.0)} <= methods
    assert any(note.startswith(trained_run) for note in metrics["notes"])  # alpha chosen on validation images
    assert len(methods) in (5, 6)  # 5 when that choice is one of the sweep's
    for name in ("report.md", "alpha_sweep.png", "per_label_ap.png", "pr_curves.png"):
        path = os.path.join(out, name)
        assert os.path.getsize(path) > 1000 or name == "report.md" and os.path.getsize(path) > 200
    with open(os.path.join(out, "alpha_sweep.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "![alpha_sweep.png](alpha_sweep.png)" in open(os.path.join(out, "report.md")).read()
    parsed = json.loads(run("eval", "--cache", planted_world, "--head", trained_run, "--json",
                            "--out", out).output)
    assert parsed["rows"][0]["method"] == "clip-ml"


@pytest.mark.slow  # trained_run: 10 epochs
def test_alpha_zero_is_the_head_alone_and_one_is_clip_ml(planted_world, trained_run):
    metrics = json.loads(run("eval", "--cache", planted_world, "--head", trained_run, "--split", "all",
                             "--alpha", "0,1", "--baselines", "clip-ml", "--json").output)
    rows = {(r["method"], r["alpha"]): r for r in metrics["rows"]}
    assert {k: v for k, v in rows[("ovml", 1.0)].items() if k not in ("method", "alpha", "run")} == \
        {k: v for k, v in rows[("clip-ml", None)].items() if k != "method" and k != "alpha"}
    with CacheReader(planted_world) as reader:
        head = load_trained_head(trained_run, cache_pool(reader, torch.device("cpu")), reader.num_heads,
                                 torch.device("cpu"))
        text = torch.from_numpy(reader.text)
        batches = []
        for start in range(0, 1000, 256):  # eval's batches: float32 rounding depends on the batch shape
            spatial = torch.from_numpy(reader.read("test", "spatial", start, start + 256)).float()
            global_embedding = torch.from_numpy(reader.read("test", "global", start, start + 256)).float()
            with torch.no_grad():
                batches.append(cosine_scores(head.module(spatial, global_embedding, text), text).numpy())
        direct = evaluate(np.concatenate(batches), reader.read_labels("test"))
    assert direct["mAP"] == pytest.approx(rows[("ovml", 0.0)]["mAP"], abs=1e-3)  # near-tied ranks may flip
    assert direct["F1@3"] == pytest.approx(rows[("ovml", 0.0)]["F1@3"], abs=1e-3)


@pytest.mark.slow  # trained_run: 10 epochs
def test_default_cache_and_newest_head(planted_world, trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("cache")
    os.symlink(planted_world, "cache/planted.zarr")
    result = run("eval", "--alpha", "0")
    assert "no trained head found" in result.output and "| clip-ml |" in result.output
    shutil.copytree(trained_run, "runs/planted-ovml")
    config = json.load(open("runs/planted-ovml/config.json"))
    config["cache"]["path"] = os.path.abspath("cache/planted.zarr")
    json.dump(config, open("runs/planted-ovml/config.json", "w"))
    result = run("eval", "--alpha", "0")
    assert "runs/planted-ovml (newest run on this cache)" in result.output and "| ovml (planted-ovml) | 0 |" in result.output
    assert os.path.exists("runs/eval-planted-unseen/metrics.json")
    os.symlink(planted_world, "cache/other.zarr")
    failed = CliRunner().invoke(main, ["eval"])
    assert failed.exit_code == 1 and "several caches" in failed.output


def test_k_defaults_follow_the_vocabulary_size():
    from ovml.evaluation.evaluate import default_ks
    assert default_ks(1006) == (3, 5) and default_ks(7586) == (10, 20)


def test_labels_without_positives_count_as_zero(small_world, tmp_path):
    """R8 (docs/benchmarks.md): a label with no positive test image enters the mAP as 0, without NaN."""
    import zarr
    copy = str(tmp_path / "w.zarr")
    shutil.copytree(small_world, copy)
    labels = zarr.open_group(copy, mode="a")["splits/test/labels"]
    matrix = labels[...]
    unseen = np.flatnonzero(~zarr.open_group(copy)["labels/seen"][...])
    matrix[:, unseen[0]] = -1
    labels[...] = matrix
    metrics = json.loads(run("eval", "--cache", copy, "--baselines", "clip-ml", "--json",
                             "--out", str(tmp_path / "e")).output)
    assert all(np.isfinite(v) for v in metrics["rows"][0].values() if isinstance(v, float))


def test_every_alpha_from_one_forward_equals_interpolation():
    """eval's per-alpha algebra (HeadParts) equals scoring docs/method.md's interpolated features."""
    from ovml.evaluation.scoring import HeadParts, normalise
    generator = torch.Generator().manual_seed(0)
    features, global_embedding = torch.randn(6, 4, 8, generator=generator), torch.randn(6, 8, generator=generator)
    text = normalise(torch.randn(4, 8, generator=generator))
    o, g = normalise(features), normalise(global_embedding)
    parts = HeadParts((o * text).sum(-1).numpy(), (g @ text.T).numpy(), (o * g[:, None]).sum(-1).numpy())
    for alpha in (0.0, 0.3, 0.5, 1.0):
        expected = cosine_scores(interpolate(features, global_embedding, alpha), text).numpy()
        assert np.allclose(parts.scores(alpha), expected, atol=1e-6)
