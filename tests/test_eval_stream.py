"""Streaming evaluation (B7 in docs/benchmarks.md): results equal to the whole-matrix computation,
bit for bit, with no (images, labels) matrix held and the temporary store deleted."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ovml.metrics import spill as score_spill
from ovml.metrics import stream as metrics_stream
from ovml.cache.reader import CacheReader
from ovml.cli import main
from ovml.config import EvalConfig, TrainConfig
from ovml.metrics.protocol import average_precision_per_label, evaluate, mean_average_precision
from ovml.metrics.stream import Recipe, StreamingMetrics, streaming_mean_average_precision
from ovml.evaluation import evaluate as evaluation
from ovml.cache.batches import BatchStream, RowSelection
from ovml.cache.batches import batch_tensors, cache_pool
from ovml.evaluation.scoring import HeadParts, baseline_scores, head_parts
from ovml.train.trainer import train_head
from ovml.metrics.spill import AnnotatedSpill
from ovml.train.saved_head import load_trained_head
from tests.test_metrics import random_case


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Column blocks of a few columns and a flush every few hundred entries."""
    monkeypatch.setattr(metrics_stream, "BLOCK_BYTES", 40_000)
    monkeypatch.setattr(score_spill, "FLUSH_ENTRIES", 700)


@pytest.fixture
def largest_read(monkeypatch):
    """Records the most entries one column block held when read back."""
    seen = {"entries": 0, "blocks": set()}
    read = AnnotatedSpill.read

    def recording(self, index):
        columns, positive, values = read(self, index)
        seen["entries"] = max(seen["entries"], len(columns))
        seen["blocks"].add(index)
        return columns, positive, values
    monkeypatch.setattr(AnnotatedSpill, "read", recording)
    return seen


@pytest.mark.parametrize("every_entry_annotated", [False, True])
def test_streaming_metrics_equal_the_whole_matrix(every_entry_annotated, tiny_blocks, tmp_path):
    """Ties everywhere, empty and all-positive columns, images without positives, interpolated rows;
    with unannotated entries (scattered by column) and without (blocks transposed row by row)."""
    scores, labels = random_case(3, n_images=300, n_labels=40)
    if every_entry_annotated:
        labels[labels == 0] = -1
    other = np.round(np.random.default_rng(1).random(scores.shape), 1).astype(np.float32)
    cosine = np.clip(other - 0.5, -1, 1)
    rows = {"a": Recipe.stored("a"), "b": Recipe.stored("b"),
            0.3: Recipe(("a", "b", "c"), lambda a, b, c: HeadParts(a, b, c).scores(0.3))}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with StreamingMetrics(rows, 40, 300, ks=(3, 5, 50), scratch=str(scratch), pr_sample=200) as metrics:
        assert len(metrics.spill.blocks) > 3
        for start in range(0, 300, 64):
            rows_ = slice(start, start + 64)
            metrics.add(labels[rows_], {"a": scores[rows_], "b": other[rows_], "c": cosine[rows_]})
        results = metrics.finish()
    assert os.listdir(scratch) == []
    whole = {"a": scores, "b": other, 0.3: HeadParts(scores, other, cosine).scores(0.3)}
    for row, matrix in whole.items():
        assert results[row].metrics == evaluate(matrix, labels, ks=(3, 5, 50))
        assert np.array_equal(results[row].per_label_ap, average_precision_per_label(matrix, labels))
        sampled, positive = results[row].pr_sample
        assert 100 <= len(sampled) <= 300 and positive.dtype == bool


def test_streaming_map_equals_mean_average_precision(tiny_blocks):
    scores, labels = random_case(5, n_images=200, n_labels=20, decimals=2)
    batches = ((scores[s:s + 30], labels[s:s + 30]) for s in range(0, 200, 30))
    assert streaming_mean_average_precision(batches, 20, 200) == mean_average_precision(scores, labels)


def test_bad_batches_are_refused():
    with StreamingMetrics({"a": Recipe.stored("a")}, 3, 4, ks=(1,)) as metrics:
        with pytest.raises(ValueError, match="NaN"):
            metrics.add(np.ones((2, 3), np.int8), {"a": np.array([[0, np.nan, 1]] * 2, np.float32)})
        with pytest.raises(ValueError, match="labels must be"):
            metrics.add(np.full((2, 3), 2, np.int8), {"a": np.zeros((2, 3), np.float32)})
        with pytest.raises(ValueError, match="nothing to evaluate"):
            metrics.finish()


def test_spill_keeps_annotated_entries_by_column_block(tmp_path):
    spill = AnnotatedSpill(["s"], n_labels=5, block_columns=2, scratch=str(tmp_path))
    labels = np.array([[1, 0, -1, 0, 1], [0, -1, 1, 0, 0]], np.int8)
    scores = np.arange(10, dtype=np.float32).reshape(2, 5)
    spill.append(labels, {"s": scores})
    spill.flush()
    assert [(b.start, b.stop) for b in spill.blocks] == [(0, 2), (2, 4), (4, 5)]
    columns, positive, values = spill.read(1)
    assert columns.tolist() == [0, 0] and positive.tolist() == [False, True] and values["s"].tolist() == [2, 7]
    assert spill.bytes_written == 5 * (2 + 4)
    spill.close()
    assert not os.path.exists(spill.folder)


# --- the eval pipeline -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_run(small_world, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("runs") / "small")
    train_head(TrainConfig(cache=small_world, out=out, epochs=1, lr=1e-2, pseudo_unseen=0.2, progress=False))
    return out


def in_memory(reader, selection, columns, heads, head_alphas, baselines, ks) -> list[dict]:
    """The straightforward computation: whole score matrices, then `ovml.metrics.protocol.evaluate`."""
    device = torch.device("cpu")
    pool, text = cache_pool(reader, device), torch.from_numpy(reader.text[columns])
    base, parts, labels = {name: [] for name in baselines}, [[] for _ in heads], []
    for batch in BatchStream(reader, selection, 256, prefetch=2).epoch(seed=0, shuffle=False):
        tokens, global_embedding = batch_tensors(batch, device)
        for name in baselines:
            base[name].append(baseline_scores(name, tokens, global_embedding, text, pool, 3))
        for index, head in enumerate(heads):
            parts[index].append(head_parts(head.module, tokens, global_embedding, text))
        labels.append(batch["labels"][:, columns])
    labels = np.concatenate(labels)
    rows = [evaluate(np.concatenate(scores), labels, ks) for scores in base.values()]
    for chunks, alphas in zip(parts, head_alphas):
        whole = HeadParts(*(np.concatenate([getattr(p, f) for p in chunks]) for f in evaluation.PARTS))
        rows += [evaluate(whole.scores(alpha), labels, ks) for alpha in alphas]
    return rows


def reference_alpha(reader, head, config) -> float:
    """choose_alpha's sweep on whole matrices."""
    units = head.config["validation"]["units"]
    selection = RowSelection.from_mask("train", reader.unit_rows("train"), reader.usable_rows("train"), units)
    pseudo = np.array(head.config["pseudo_unseen_columns"])
    grid = list(evaluation.AUTO_GRID)
    sweep = dict(zip(grid, (r["mAP"] for r in in_memory(reader, selection, pseudo, [head], [grid], (), (3,)))))
    return max(sweep, key=lambda a: (sweep[a], -a))


@pytest.mark.parametrize("alphas", [(0.0, 0.5), (0.0, 0.25, 0.5, 0.75, 1.0)])
def test_eval_equals_the_in_memory_path(small_world, small_run, alphas, tiny_blocks, largest_read, tmp_path):
    """Every metric of every row (baselines, each alpha, auto), equal; alphas stored per alpha
    (<= 3) or as the head's three parts; no block near an (images, labels) matrix; store deleted."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    config = EvalConfig(cache=small_world, heads=(small_run,), split="all", alphas=alphas, alpha_auto=True,
                        scratch=str(scratch), progress=False)
    result = evaluation.evaluate_cache(config)
    assert os.listdir(scratch) == []
    with CacheReader(small_world) as reader:
        device = torch.device("cpu")
        head = load_trained_head(small_run, cache_pool(reader, device), reader.num_heads, device)
        chosen = reference_alpha(reader, head, config)
        head_alphas = [sorted(set(alphas) | {chosen})]
        selection = RowSelection.from_mask("test", reader.unit_rows("test"), reader.usable_rows("test"))
        columns = np.arange(reader.num_labels)
        expected = in_memory(reader, selection, columns, [head], head_alphas, ("clip-ml", "dense"), (3, 5))
    assert [(r.method, r.alpha) for r in result.rows] == \
        [("clip-ml", None), ("dense", None)] + [("ovml", a) for a in head_alphas[0]]
    assert [row.metrics for row in result.rows] == expected
    n_images, n_labels = expected[0]["images"], expected[0]["labels"]
    assert len(largest_read["blocks"]) > 5 and largest_read["entries"] <= n_images * n_labels // 5
    assert f"alpha {chosen:g} chosen" in result.summary["notes"][0]


def test_json_shape_and_report_plots(small_world, small_run, tmp_path):
    out = str(tmp_path / "report")
    output = CliRunner().invoke(main, ["eval", "--cache", small_world, "--head", small_run, "--alpha", "0,1",
                                       "--json", "--out", out, "--scratch", str(tmp_path)]).output
    summary = json.loads(output)
    assert list(summary) == ["protocol", "split", "image_split", "cache", "dataset", "rows", "images", "labels",
                             "ks", "notes", "label_names"]
    assert list(summary["rows"][0]) == ["method", "alpha", "mAP", "P@3", "R@3", "F1@3", "P@5", "R@5", "F1@5",
                                        "images", "labels"]
    assert list(summary["rows"][-1])[-1] == "run"
    for name in ("alpha_sweep.png", "per_label_ap.png", "pr_curves.png", "report.md"):
        assert os.path.getsize(os.path.join(out, name)) > 200
    assert sorted(os.listdir(tmp_path)) == ["report"]


# --- add-labels at scale -----------------------------------------------------------------------

def test_add_labels_writes_new_columns_in_row_blocks(small_world, tmp_path, monkeypatch):
    """The new columns go in blocks of chunk rows, annotations in place, zeros elsewhere, also
    where an interrupted earlier commit left values in a chunk that straddles the old width."""
    import shutil

    import zarr

    from ovml.extract import add_labels as adding
    copy = str(tmp_path / "w.zarr")
    shutil.copytree(small_world, copy)
    monkeypatch.setattr(adding, "WRITE_ENTRIES", 64 * 3)  # one chunk of rows per write
    with CacheReader(copy) as reader:
        old, dim = reader.num_labels, reader.embed_dim
    text = np.eye(3, dim, dtype=np.float32)
    values = np.array([[1, -1, 1], [-1, 1, -1], [1, 1, 1]], np.int8)
    annotated = adding.AnnotatedRows.from_lists([0, 70, 127], [np.array([0, 2]), np.array([1]), np.array([0, 1, 2])])
    adding.commit(copy, adding.NewLabels(["a", "b", "c"], text, False, {"test": annotated}), old)
    with CacheReader(copy) as reader:
        expected = np.zeros((128, 3), np.int8)
        expected[[0, 70, 127]] = values
        assert np.array_equal(reader.read_labels("test")[:, old:], expected)
        assert not reader.read_labels("train")[:, old:].any()
    group = zarr.open_group(copy, mode="a")
    group.attrs["adding_labels"] = {"from": old + 3, "to": old + 4}  # a commit cut short after writing
    for split in ("train", "test"):
        group[f"splits/{split}/labels"].resize((group[f"splits/{split}/labels"].shape[0], old + 4))
        group[f"splits/{split}/labels"][:, old + 3] = 7
    assert adding.roll_back_interrupted(copy)
    adding.commit(copy, adding.NewLabels(["d"], text[:1], False, {}), old + 3)
    with CacheReader(copy) as reader:
        assert reader.num_labels == old + 4
        assert not reader.read_labels("train")[:, old + 3].any() and not reader.read_labels("test")[:, old + 3].any()
