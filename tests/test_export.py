"""`ovml export`: the tiny CLIP's runs (a ResNet cache and a ViT cache) as ONNX graphs, run by
onnxruntime through docs/onnx_tag.py (numpy and PIL only), scoring as `ovml predict` does."""
from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

import ovml
from ovml.cli import main
from tests.folder_dataset import write_folder_dataset

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = ["red square", "green disc", "cat", "blue bar", "dog"]


def onnx_tag():
    """docs/onnx_tag.py as a module."""
    spec = importlib.util.spec_from_file_location("onnx_tag", os.path.join(REPOSITORY, "docs", "onnx_tag.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def tiny_vit_run(tiny_vit, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("vit-run")
    root = str(folder / "shapes")
    write_folder_dataset(root, images=24)
    paths = {"cache": str(folder / "shapes.zarr"), "run": str(folder / "shapes-ovml"), "images": root + "/img"}
    cli("extract", "--dataset", "folder", "--root", root, "--out", paths["cache"], "--model", tiny_vit,
        "--workers", "0", "--unit-rows", "8")
    cli("train-head", "--cache", paths["cache"], "--out", paths["run"], "--epochs", "1")
    return paths


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_exported_graphs_score_as_predict_does(kind, tiny_run, tiny_vit_run, tmp_path):
    paths = tiny_run if kind == "resnet" else tiny_vit_run
    out = str(tmp_path / "tagger")
    summary = ovml.export_tagger(ovml.ExportConfig(head=paths["run"], out=out, labels=tuple(LABELS)))
    assert set(summary.files) == {"tower.onnx", "head.onnx", "text.npy", "tagger.json", "calibration.json"}
    assert summary.attention                             # train-head stored a calibration: it travels too
    side = json.load(open(os.path.join(out, "tagger.json")))
    assert side["labels"] == LABELS and side["alpha"] == 0.0 and side["backbone"]["kind"] == kind
    images = [os.path.join(paths["images"], name) for name in sorted(os.listdir(paths["images"]))[:5]]
    tagger = onnx_tag().Tagger(out)
    got = tagger.tag(images, top_k=len(LABELS), alpha=0.3)
    # The reference: the float32 tower (the graphs are float32), in this process and through the CLI.
    expected = ovml.load_tagger(paths["run"], tower_precision="fp32").predict(images, LABELS, top_k=len(LABELS), alpha=0.3)
    printed = json.loads(cli("predict", *images, "--labels", ",".join(LABELS), "--head", paths["run"], "--top-k",
                             str(len(LABELS)), "--alpha", "0.3", "--tower-precision", "fp32", "--json"))
    for onnx_labels, prediction, entry in zip(got, expected, printed):
        assert [name for name, _ in onnx_labels] == [name for name, _ in prediction.labels]
        assert [name for name, _ in onnx_labels] == [label["name"] for label in entry["labels"]]
        np.testing.assert_allclose([s for _, s in onnx_labels], [s for _, s in prediction.labels], atol=1e-4)
        np.testing.assert_allclose([s for _, s in onnx_labels], [label["score"] for label in entry["labels"]], atol=1e-4)
    # Decisions: the exported maps are `predict --threshold auto`'s (alpha 0, the export's), and decide alike.
    predictor = ovml.load_tagger(paths["run"], tower_precision="fp32")
    maps = predictor.label_maps(LABELS, predictor.label_text(LABELS), 0.0)
    scores = tagger.scores(images, 0.0)
    np.testing.assert_allclose(tagger.probabilities(scores), maps.probabilities(scores), atol=1e-5)
    decided = tagger.tag(images, top_k=len(LABELS), auto=True)
    reference = predictor.predict(images, LABELS, top_k=len(LABELS), threshold="auto")
    for onnx_labels, prediction in zip(decided, reference):
        assert [name for name, *_ in onnx_labels] == [name for name, _ in prediction.labels]
        np.testing.assert_allclose([p for *_, p in onnx_labels], prediction.probabilities or [], atol=1e-4)
    # Attention maps, batch and label axes dynamic: two images, two labels.
    settings = side["preprocess"]
    pixels = np.stack([onnx_tag().preprocess(p, settings["size"], settings["mean"], settings["std"]) for p in images[:2]])
    tokens, global_feature = tagger.tower.run(["tokens", "global"], {"image": pixels})
    scores, attention = tagger.head.run(["scores", "attention"], {"tokens": tokens, "global": global_feature,
                                                                  "text": tagger.text[[0, 3]],
                                                                  "alpha": np.asarray(0.0, dtype=np.float32)})
    grid = side["backbone"]["grid"]
    assert scores.shape == (2, 2) and attention.shape == (2, 2, grid[0] * grid[1])
    (mapped,) = ovml.load_tagger(paths["run"], tower_precision="fp32").predict(images[1], [LABELS[0], LABELS[3]],
                                                                          top_k=2, attention=True)
    order = [[LABELS[0], LABELS[3]].index(name) for name, _ in mapped.labels]
    np.testing.assert_allclose(attention[1][order].reshape(mapped.attention.shape), mapped.attention, atol=1e-4)


def test_export_from_the_command_line_copies_calibration(tiny_run, tmp_path):
    run = str(tmp_path / "run")
    import shutil
    shutil.copytree(tiny_run["run"], run)
    with open(os.path.join(run, "calibration.json"), "w") as handle:
        json.dump({"method": "platt", "labels": {}}, handle)
    out = str(tmp_path / "tagger")
    output = cli("export", "--head", run, "--out", out, "--alpha", "0.25")
    assert "calibration.json" in output and "attention maps" in output
    side = json.load(open(os.path.join(out, "tagger.json")))
    assert side["calibration"] == "calibration.json" and side["alpha"] == 0.25
    with ovml.open_cache(tiny_run["cache"]) as cache:
        assert side["labels"] == list(dict.fromkeys(cache.label_names))
    assert np.load(os.path.join(out, "text.npy")).shape == (len(side["labels"]), side["backbone"]["embed_dim"])
