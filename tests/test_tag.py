"""`ovml tag`'s pieces without a model: decision rules, vocabulary matching, the order of tags."""
from __future__ import annotations

import numpy as np
import pytest

from ovml.errors import UsageError
from ovml.tag.rules import AllOf, LabelThresholds, MCut, Threshold, TopK, build_rule
from ovml.tag.tables import present_order
from ovml.tag.vocabulary import choose_vocabulary, name_key, read_names_file

SCORES = np.array([[0.90, 0.80, 0.30, 0.20],
                   [0.10, 0.50, 0.45, 0.40]], dtype=np.float32)
NAMES = ["dog", "beach", "sunset", "cat"]


def test_top_k_keeps_the_k_best_labels_of_each_image():
    present = TopK(2).decide(SCORES)
    assert present.tolist() == [[True, True, False, False], [False, True, True, False]]
    assert TopK(9).decide(SCORES).all() and TopK(2).describe() == "top-k 2"


def test_a_threshold_keeps_every_label_at_or_above_it():
    assert Threshold(0.45).decide(SCORES).tolist() == [[True, True, False, False], [False, True, True, False]]
    assert Threshold(0.45).describe() == "threshold 0.45"


def test_mcut_cuts_each_image_at_the_midpoint_of_its_largest_score_gap():
    present = MCut().decide(SCORES)
    # image 0: sorted .9 .8 .3 .2, largest gap .8 -> .3; image 1: .5 .45 .4 .1, largest gap .4 -> .1
    assert present.tolist() == [[True, True, False, False], [False, True, True, True]]
    assert MCut().decide(np.array([[0.3]], dtype=np.float32)).tolist() == [[True]]
    assert "mcut" in MCut().describe()


def test_rules_leave_the_probability_slot_empty():
    for rule in (TopK(1), Threshold(0.1), MCut()):
        assert rule.probabilities(SCORES) is None


def test_a_thresholds_file_gives_each_label_its_own_and_the_rest_use_threshold(tmp_path):
    path = tmp_path / "thresholds.csv"
    path.write_text("# name,threshold\nDog,0.95\n\nSUNSET,0.25\nunicorn,0.1\n")
    rule, notes = build_rule(NAMES, threshold=0.6, thresholds_file=str(path))
    assert isinstance(rule, LabelThresholds) and rule.values == (0.95, 0.6, 0.25, 0.6)
    assert rule.decide(SCORES).tolist() == [[False, True, True, False], [False, False, True, False]]
    assert "0.6 elsewhere" in rule.describe() and "unicorn" in notes[0]


def test_a_thresholds_file_that_leaves_labels_out_needs_a_threshold_for_them(tmp_path):
    path = tmp_path / "thresholds.csv"
    path.write_text("dog,0.5\n")
    with pytest.raises(UsageError, match="no threshold for 3 label"):
        build_rule(NAMES, thresholds_file=str(path))
    path.write_text("dog,high\n")
    with pytest.raises(UsageError, match=r"thresholds.csv:1: expected 'name,threshold'"):
        build_rule(NAMES, threshold=0.5, thresholds_file=str(path))


def test_top_k_and_a_threshold_together_keep_labels_that_pass_both():
    rule, _ = build_rule(NAMES, top_k=1, threshold=0.45)
    assert isinstance(rule, AllOf) and rule.describe() == "top-k 1 and threshold 0.45"
    assert rule.decide(SCORES).tolist() == [[True, False, False, False], [False, True, False, False]]


def test_without_a_rule_option_the_five_best_are_kept_and_a_bad_threshold_is_refused():
    assert build_rule(NAMES)[0] == TopK(5)
    assert isinstance(build_rule(NAMES, threshold="MCut")[0], MCut)
    with pytest.raises(UsageError, match="expected a number or one of mcut"):
        build_rule(NAMES, threshold="half")


def test_names_match_whatever_their_case_spaces_underscores_and_hyphens():
    assert name_key("Golden_Retriever") == name_key("golden retriever") == name_key(" golden-retriever ")
    vocabulary = choose_vocabulary(["Golden_Retriever", "beach", "sea-gull"], "--labels",
                                   exclude="golden retriever, Sea Gull")
    assert vocabulary.names == ["beach"]


def test_a_labels_file_skips_comments_and_blank_lines_and_drops_repeats_once(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("# my tags\ndog\n\nbeach\nDog\nsun_set\nsun set\n")
    vocabulary = choose_vocabulary(read_names_file(str(path)), str(path))
    assert vocabulary.names == ["dog", "beach", "sun_set"]
    assert len(vocabulary.notes) == 1 and "2 repeated name(s) dropped: Dog, sun set" in vocabulary.notes[0]


def test_exclude_and_only_names_that_match_nothing_are_reported(tmp_path):
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("cat\nunicorn\n")
    vocabulary = choose_vocabulary(NAMES, "--labels", only="dog,cat,beach,dragon", exclude=str(exclude))
    assert vocabulary.names == ["dog", "beach"]
    assert any("--exclude: 1 name(s) match no label: unicorn" in note for note in vocabulary.notes)
    assert any("--only: 1 name(s) match no label: dragon" in note for note in vocabulary.notes)


def test_a_vocabulary_emptied_by_only_and_exclude_is_refused():
    with pytest.raises(UsageError, match="the vocabulary is empty after --only/--exclude"):
        choose_vocabulary(NAMES, "--labels", only="dog", exclude="DOG")


def test_always_first_tags_lead_and_the_rest_are_best_first():
    present = np.array([[True, True, True, False], [True, True, True, True]])
    vocabulary = choose_vocabulary(NAMES, "--labels", always_first="Cat, sunset")
    first = {j: vocabulary.order()[name_key(name)] for j, name in enumerate(NAMES)
             if name_key(name) in vocabulary.order()}
    order = present_order(SCORES, present, first)
    assert [[NAMES[j] for j in row] for row in order] == [["sunset", "dog", "beach"],
                                                           ["cat", "sunset", "beach", "dog"]]
