"""Calibrated probabilities: Platt maps per label, the shared map for new labels, the
`auto` and `precision` rules in `ovml tag`, the stored calibration, and `ovml calibrate`."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from ovml.cache.reader import CacheReader
from ovml.calibrate.fit import fit_run, run_calibration
from ovml.calibrate.record import CALIBRATION_FILE, Calibration, read_calibrations, write_calibration
from ovml.cli import main
from ovml.errors import UsageError
from ovml.lock import FOLDER_LOCK, WriterLock
from ovml.metrics.calibration import ece, expected_f1_levels, f1_scores, fit_platt, sigmoid
from ovml.tag.rules import AllOf, Calibrated, MCut, TopK, build_rule


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def calibrated_run(small_world, tmp_path_factory) -> str:
    """A head trained for one epoch on the small planted world with pseudo-unseen labels held out."""
    out = str(tmp_path_factory.mktemp("calibrated") / "run")
    result = invoke("train-head", "--cache", small_world, "--out", out, "--epochs", "1", "--pseudo-unseen", "0.1",
                    "--val-fraction", "0.15", "--lr", "1e-3")
    assert result.exit_code == 0, result.output
    return out


def test_a_platt_fit_recovers_the_map_that_drew_the_labels():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((20000, 2))
    labels = np.where(rng.random(z.shape) < sigmoid(np.array([2.0, 0.5]) * z + np.array([-1.0, 0.3])), 1, -1)
    slope, intercept = fit_platt(z, labels)
    np.testing.assert_allclose(slope, [2.0, 0.5], atol=0.1)
    np.testing.assert_allclose(intercept, [-1.0, 0.3], atol=0.1)


def test_ece_and_f1_of_perfect_decisions():
    labels = np.array([[1, -1], [-1, 1], [1, 0]])
    present = labels == 1
    assert f1_scores(present, labels)["macro_f1"] == 100.0 and f1_scores(present, labels)["micro_f1"] == 100.0
    assert ece(np.where(present, 1.0, 0.0), labels) == 0.0
    assert ece(np.full(labels.shape, 0.5), labels) == pytest.approx(0.1)     # 3 positives of 5 pairs at 0.5


def test_each_rule_decides_as_it_says():
    scores = np.array([[0.9, 0.8, 0.1, 0.0], [0.5, 0.4, 0.45, 0.3]])
    assert TopK(2).decide(scores).sum(axis=1).tolist() == [2, 2]
    assert MCut().decide(scores)[0].tolist() == [True, True, False, False]
    rule, _ = build_rule(["a", "b", "c", "d"], threshold="auto")
    assert isinstance(rule, Calibrated) and rule.level == 0.5
    rule.maps = Calibration("clip-ml", (4.0, -1.0), "test").maps(
        ["a", "b", "c", "d"], lambda columns: (np.full(len(columns), 0.4), np.full(len(columns), 0.2),
                                               np.zeros(len(columns))))
    probabilities = rule.probabilities(scores)
    assert ((probabilities >= 0.5) == rule.decide(scores)).all()
    precise, _ = build_rule(["a", "b", "c", "d"], precision=0.9)
    precise.maps = rule.maps
    assert (precise.decide(scores) == (probabilities >= 0.9)).all() and precise.decide(scores).sum() < rule.decide(scores).sum()
    both, _ = build_rule(["a", "b", "c", "d"], top_k=1, threshold="auto")
    both.rules[1].maps = rule.maps
    assert isinstance(both, AllOf) and (both.probabilities(scores) == probabilities).all()
    assert both.decide(scores).sum(axis=1).max() <= 1
    with pytest.raises(UsageError, match="between 0 and 1"):
        build_rule(["a"], precision=1.5)
    f1_rule, _ = build_rule(["a", "b", "c", "d"], threshold="auto-f1")
    f1_rule.maps = rule.maps
    with pytest.raises(UsageError, match="no reference images"):
        f1_rule.decide(scores)
    f1_rule.maps.f1_levels = np.array([0.3, 0.6, 0.3, 0.6])
    assert (f1_rule.decide(scores) == (probabilities >= f1_rule.maps.f1_levels)).all()
    assert f1_rule.describe().startswith("auto-f1")


def test_the_expected_f1_level_is_found_without_labels():
    """A label present with probability 0.9 on 10 images and 0.05 on 90: taking the ten expects
    TP 9 of 13.5 positives (F1 2 * 9 / (10 + 13.5) = 0.77), more than any other cut."""
    probabilities = np.concatenate([np.full(10, 0.9), np.full(90, 0.05)])[:, None]
    assert expected_f1_levels(probabilities).tolist() == [0.9]
    many = np.concatenate([np.full(10, 0.9), np.full(90, 0.3)])[:, None]    # many likely positives: take all
    assert expected_f1_levels(many).tolist() == [pytest.approx(0.3)]


def test_probabilities_rise_with_the_score_for_every_label(calibrated_run, small_world):
    calibration = run_calibration(calibrated_run)
    with CacheReader(small_world) as reader:
        names = list(reader.names)
    spread = np.linspace(0.1, 0.3, len(names))
    maps = calibration.maps(names, lambda columns: (np.zeros(len(columns)), spread[columns], np.zeros(len(columns))))
    grid = np.linspace(-1, 1, 201)[:, None].repeat(len(names), axis=1)                     # (201, L) per label
    probabilities = maps.probabilities(grid)
    assert (np.diff(probabilities, axis=0) >= 0).all() and (maps.slope > 0).all()
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


def test_train_head_stores_a_calibration_that_reads_back_the_same(calibrated_run):
    path = os.path.join(calibrated_run, CALIBRATION_FILE)
    stored = read_calibrations(calibrated_run)["head@0"]
    assert os.path.exists(path) and "pseudo-unseen" in stored.shared_from
    config = json.load(open(os.path.join(calibrated_run, "config.json")))
    assert len(stored.labels) == 40 - len(config["pseudo_unseen_columns"])      # the labels it trained on
    again = write_calibration(str(os.path.join(os.path.dirname(path), "copy.json")), stored)
    copied = read_calibrations(again)["head@0"]
    assert copied.shared == stored.shared and copied.labels == stored.labels


def test_a_run_made_before_calibration_is_calibrated_on_demand(calibrated_run, tmp_path):
    os.remove(os.path.join(calibrated_run, CALIBRATION_FILE))
    fitted = run_calibration(calibrated_run)
    assert os.path.exists(os.path.join(calibrated_run, CALIBRATION_FILE))
    assert fitted.as_json() == fit_run(calibrated_run).as_json()


def test_a_reader_uses_an_on_demand_fit_without_storing_it_in_a_run_being_written(calibrated_run):
    path = os.path.join(calibrated_run, CALIBRATION_FILE)
    kept = open(path).read()
    os.remove(path)
    try:
        with WriterLock(calibrated_run, os.path.join(calibrated_run, FOLDER_LOCK)):
            fitted = run_calibration(calibrated_run)
            assert not os.path.exists(path) and fitted.labels
    finally:
        with open(path, "w") as handle:
            handle.write(kept)


def test_a_second_calibrate_on_one_file_is_refused(small_world, tmp_path):
    out, annotations = str(tmp_path / "clip.json"), tmp_path / "annotations.csv"
    annotations.write_text("id,labels\n")
    with WriterLock(out, out + ".lock"):
        result = invoke("calibrate", "--cache", small_world, "--annotations", str(annotations), "--out", out)
    assert result.exit_code == 1 and "being written by pid" in result.output and not os.path.exists(out)


def test_tag_decides_by_default_where_the_probability_reaches_one_half(calibrated_run, small_world, tmp_path):
    out = tmp_path / "tagged"
    result = invoke("tag", "--cache", small_world, "--split", "test", "--head", calibrated_run, "--out", str(out),
                    "--long")
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out / "tags.jsonl")
    assert len(rows) == 128 * 50 and all(row["probability"] is not None for row in rows)
    assert all((row["probability"] >= 0.5) == row["present"] for row in rows)
    assert rows[0]["rule"].startswith("auto")


def test_precision_names_the_labels_that_cannot_reach_it(calibrated_run, small_world, tmp_path):
    out = tmp_path / "precise"
    result = invoke("tag", "--cache", small_world, "--split", "test", "--head", calibrated_run, "--out", str(out),
                    "--precision", "0.999", "--long")
    assert result.exit_code == 0, result.output
    assert "--precision 0.999:" in result.output and "cannot reach it" in result.output
    rows = read_jsonl(out / "tags.jsonl")
    assert all((row["probability"] >= 0.999) == row["present"] for row in rows)


def test_clip_ml_on_a_cache_is_calibrated_on_its_seen_labels(small_world, tmp_path):
    out = tmp_path / "clip"
    result = invoke("tag", "--cache", small_world, "--split", "test", "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out / "tags.jsonl")
    assert all(row["probabilities"] is not None and min(row["probabilities"] or [1]) >= 0.5 for row in rows)


def write_annotations(path, rows: list[tuple[str, list[str]]]) -> str:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "labels"])
        for image, labels in rows:
            writer.writerow([image, ";".join(labels)])
    return str(path)


def test_calibrate_refuses_labels_without_a_positive_or_a_negative(calibrated_run, small_world, tmp_path):
    with CacheReader(small_world) as reader:
        names = list(reader.names)
    file = write_annotations(tmp_path / "a.csv", [("test/000000", [names[0], names[1]]), ("test/000001", [names[0]])])
    result = invoke("calibrate", "--head", calibrated_run, "--annotations", file, "--cache", small_world)
    assert result.exit_code != 0 and f"{names[0]} (no negative)" in result.output


def test_calibrate_stores_the_annotated_labels_and_tag_uses_them(calibrated_run, small_world, tmp_path):
    with CacheReader(small_world) as reader:
        labels, names, seen = reader.read_labels("test"), list(reader.names), reader.seen
    chosen = [j for j in np.flatnonzero(~seen)[:2]]
    rows = [(f"test/{i:06d}", [names[j] for j in chosen if labels[i, j] == 1]) for i in range(60)]
    file = write_annotations(tmp_path / "few.csv", rows)
    result = invoke("calibrate", "--head", calibrated_run, "--annotations", file, "--cache", small_world)
    assert result.exit_code == 0, result.output
    stored = read_calibrations(calibrated_run)["head@0"]
    assert all(stored.labels[names[j]]["source"].endswith("few.csv") for j in chosen)
    out = tmp_path / "after"
    result = invoke("tag", "--cache", small_world, "--split", "test", "--head", calibrated_run, "--out", str(out),
                    "--labels", ",".join(names[j] for j in chosen), "--long")
    assert result.exit_code == 0, result.output
    entry = stored.labels[names[chosen[0]]]
    row = read_jsonl(out / "tags.jsonl")[0]
    expected = sigmoid(entry["slope"] * (row["score"] - entry["mean"]) / entry["spread"] + entry["intercept"])
    assert row["probability"] == pytest.approx(expected, abs=1e-5)


def test_eval_decisions_reports_f1_and_ece_for_seen_and_unseen_labels_apart(calibrated_run, small_world, tmp_path):
    result = invoke("eval", "--cache", small_world, "--head", calibrated_run, "--out", str(tmp_path / "eval"),
                    "--alpha", "0", "--decisions", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    entries = {(e["method"], e["labels"], e["rule"]): e for e in summary["decisions"]}
    assert set(entries) == {(method, labels, rule) for method in ("clip-ml", "ovml") for labels in ("unseen", "seen")
                            for rule in ("auto", "auto-f1")}
    assert all(0 <= e["ece"] <= 1 and 0 <= e["macro_f1"] <= 100 for e in entries.values())
    assert [row["method"] for row in summary["rows"]][:1] == ["clip-ml"]      # the protocol's rows unchanged


def test_predict_offers_auto_with_a_head_and_refuses_it_without(tiny_run, tiny_clip):
    from ovml.config import PredictConfig
    from ovml.predict.predictor import Predictor
    images = sorted(os.path.join(tiny_run["images"], name) for name in os.listdir(tiny_run["images"]))[:3]
    predictor = Predictor(PredictConfig(head=tiny_run["run"], model=tiny_clip))
    names = predictor.vocabulary()
    predictions = predictor.predict(images, labels=names, top_k=len(names), threshold="auto")
    maps = predictor._maps[(tuple(names), 0.0)]
    for prediction in predictions:
        scores = np.array([score for _, score in prediction.labels])
        assert (maps.probabilities(np.array([[dict(prediction.labels).get(n, -9) for n in names]]))[0]
                [[names.index(n) for n, _ in prediction.labels]] >= 0.5).all() and len(scores) <= len(names)
    with pytest.raises(UsageError, match="needs a head"):
        Predictor(PredictConfig(model=tiny_clip)).predict(images[:1], labels=names, threshold="auto")


def test_a_calibration_file_lets_clip_ml_decide_on_new_images(tiny_run, tiny_clip, tmp_path):
    annotations, out = tmp_path / "few.csv", str(tmp_path / "clip.json")
    annotations.write_text("id,labels\nimg/000.png,red_square\nimg/002.png,blue_bar\nimg/004.png,red_square;blue_bar\n"
                           "img/006.png,\n")
    result = invoke("calibrate", "--cache", tiny_run["cache"], "--annotations", str(annotations), "--out", out)
    assert result.exit_code == 0, result.output
    stored = read_calibrations(out)["clip-ml"].labels
    image = os.path.join(tiny_run["images"], "005.png")
    result = invoke("predict", image, "--labels", "red_square,blue_bar", "--model", tiny_clip, "--threshold", "0",
                    "--calibration", out, "--json")
    assert result.exit_code == 0, result.output
    result = invoke("predict", image, "--labels", "red_square,blue_bar", "--model", tiny_clip, "--top-k", "2",
                    "--threshold", "auto", "--calibration", out, "--json")
    assert result.exit_code == 0, result.output
    for label in json.loads(result.output)[0]["labels"]:
        entry = stored[label["name"]]
        expected = sigmoid(entry["slope"] * (label["score"] - entry["mean"]) / entry["spread"] + entry["intercept"])
        assert label["probability"] == pytest.approx(float(expected), abs=1e-5) and label["probability"] >= 0.5
    result = invoke("predict", image, "--labels", "red_square,tree", "--model", tiny_clip, "--threshold", "auto",
                    "--calibration", out)
    assert result.exit_code == 1 and "no map for tree" in result.output


def test_calibrate_from_image_files_stores_maps_that_predict_uses(tiny_run, tmp_path):
    import shutil
    from ovml.config import PredictConfig
    from ovml.predict.predictor import Predictor
    run, annotations = str(tmp_path / "run"), tmp_path / "files.csv"
    shutil.copytree(tiny_run["run"], run)
    annotations.write_text("path,labels\n000.png,red square\n002.png,blue bar\n004.png,red square;blue bar\n006.png,\n")
    result = invoke("calibrate", "--head", run, "--annotations", str(annotations), "--images", tiny_run["images"])
    assert result.exit_code == 0, result.output
    stored = read_calibrations(run)["head@0"].labels
    assert stored["red square"]["source"] == stored["blue bar"]["source"] == "4 images of files.csv"
    predictor = Predictor(PredictConfig(head=run))
    names = ["red square", "blue bar"]
    maps = predictor.label_maps(names, predictor.label_text(names), 0.0)
    assert maps.fitted.all() and list(maps.slope) == [stored[name]["slope"] for name in names]
    annotations.write_text("path,labels\n000.png,red square\nnone.png,\n")
    result = invoke("calibrate", "--head", run, "--annotations", str(annotations), "--images", tiny_run["images"])
    assert result.exit_code == 1 and "none.png is not a file under" in result.output
    result = invoke("calibrate", "--annotations", str(annotations), "--images", tiny_run["images"], "--out",
                    str(tmp_path / "c.json"))
    assert result.exit_code == 1 and "give --head RUN" in result.output
