"""The AudioSet ontology: label subtrees and categories, and what search does with them."""

import numpy as np
import pytest

from soundscope import ontology
from soundscope.search import LabelMatch

VOCAB = ("Animal", "Dog", "Bark", "Cattle, bovinae", "Moo", "Speech", "Laughter", "Vehicle", "Car")


def test_label_stands_for_its_subtree():
    tree = ontology.label_tree(VOCAB)
    assert tree.names[: tree.n] == VOCAB
    animal = set(np.asarray(tree.groups[0]).tolist())
    assert animal == {VOCAB.index(x) for x in ("Animal", "Dog", "Bark", "Cattle, bovinae", "Moo")}
    assert set(tree.groups[VOCAB.index("Bark")].tolist()) == {VOCAB.index("Bark")}  # a leaf is itself
    assert tree.depth[VOCAB.index("Animal")] < tree.depth[VOCAB.index("Dog")]
    assert "domesticated" in tree.descriptions[VOCAB.index("Dog")].lower() or tree.descriptions[VOCAB.index("Dog")]


def test_categories_without_tagger_output_become_labels():
    tree = ontology.label_tree(VOCAB)
    extra = dict(zip(tree.names[tree.n :], tree.groups[tree.n :], strict=True))
    assert "Human sounds" in extra  # Speech and Laughter are below it; the tagger has no "Human sounds"
    assert {VOCAB[i] for i in extra["Human sounds"]} == {"Speech", "Laughter"}
    assert "Natural sounds" not in extra  # nothing of it is in this vocabulary
    assert "Sounds of things" not in tree.names  # bookkeeping nodes are not offered


def test_labels_outside_the_ontology_are_left_alone():
    tree = ontology.label_tree(("guitar", "slow", "Dog"))
    assert [g.tolist() for g in tree.groups[:3]] == [[0], [1], [2]]
    assert tree.n == 3 and len(tree.names) == 3


def test_match_value_is_the_best_score_in_its_group():
    lm = LabelMatch("yamnet", np.array([0, 9]), np.array([0.5, 0.5], np.float32), ["Animal", "Human sounds"])
    lm.groups = [np.array([0, 1, 2]), np.array([5, 6])]
    scores = np.array([0.1, 0.2, 0.9, 0, 0, 0.3, 0.05, 0, 0], np.float32)
    assert np.allclose(lm.values(scores), [0.9, 0.3])


def test_a_sound_over_music_is_searched_as_a_sound():
    from soundscope import describe

    labels = ("Music", "Piano", "Dog", "Speech", "Guitar")
    assert describe.sound_dominates(np.array([0.9, 0.0, 0.6, 0.0, 0.0]), labels)  # a dog over the radio
    assert not describe.sound_dominates(np.array([1.0, 0.9, 0.0, 0.0, 0.8]), labels)  # piano is music
    assert not describe.sound_dominates(np.array([1.0, 0.0, 0.0, 0.9, 0.0]), labels)  # speech is generic
    assert describe.sound_dominates(np.array([0.2, 0.0]), ("Dog", "Bark"))  # no Music label at all


def test_example_similarity_adds_label_agreement():
    from soundscope.search import QBE_LABEL_WEIGHT, example_similarity

    query = np.array([0.9, 0.0, 0.1], np.float32)
    same, other = np.array([0.8, 0.0, 0.1], np.float32), np.array([0.0, 0.9, 0.1], np.float32)
    got = example_similarity(np.array([0.7, 0.7]), query, np.stack([same, other]))
    assert got[0] > got[1]  # equal embedding cosine: the one whose labels agree wins
    assert got[0] <= 1.0 and got[1] == pytest.approx((1 - QBE_LABEL_WEIGHT) * 0.7 + QBE_LABEL_WEIGHT * 0.1, abs=0.02)
    kept = example_similarity(np.array([0.5]), query, np.zeros((1, 3), np.float32))  # no scores: the cosine stands
    assert kept[0] == pytest.approx(0.5)
