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


def _segment(start, end, sound, music=None):
    scores = {"yamnet": np.asarray(sound, np.float32)}
    emb = {"yamnet": np.array([1.0, 0.0], np.float32)}
    if music is not None:
        emb["musicnn_msd"] = np.asarray(music, np.float32)
    return (start, end, scores, emb)


def test_each_segment_of_a_query_clip_picks_its_space():
    from soundscope.search import example_parts

    labels = ["Music", "Piano", "Dog", "Speech", "Guitar"]
    dog = [0.1, 0.0, 0.9, 0.0, 0.0]
    song = [1.0, 0.9, 0.0, 0.0, 0.0]
    segs = [_segment(0, 5, dog, [0.0, 1.0]), _segment(5, 10, song, [1.0, 0.0]), _segment(10, 12, song, [0.6, 0.8])]
    parts = example_parts(segs, sound="yamnet", sound_labels=labels, music="musicnn_msd", least=0.3)
    assert [p.space for p in parts] == ["musicnn_msd", "yamnet"]  # the larger share first
    music, sound = parts
    assert music.spans == [(5, 10), (10, 12)] and sound.spans == [(0, 5)]
    assert music.share == pytest.approx(7 / 12) and sound.share == pytest.approx(5 / 12)
    assert np.allclose(music.vector, np.array([5 * 1.0 + 2 * 0.6, 2 * 0.8]) / np.hypot(6.2, 1.6), atol=1e-6)
    assert np.allclose(sound.scores, dog)
    # without the music tagger's embedding (it did not run, or the library lacks its space): all sound
    alone = example_parts(segs, sound="yamnet", sound_labels=labels, music=None, least=0.3)
    assert [(p.space, p.share) for p in alone] == [("yamnet", 1.0)]
    # a song with one noise in it: a part under a fifth of the clip is not searched on its own
    song_with_noise = [_segment(5 * i, 5 * i + 5, dog if i == 3 else song, [1.0, 0.0]) for i in range(6)]
    parts = example_parts(song_with_noise, sound="yamnet", sound_labels=labels, music="musicnn_msd", least=0.3)
    assert [(p.space, round(p.share, 3)) for p in parts] == [("musicnn_msd", 0.833)]
    # a stricter bar for a sound event turns the dog segment (0.9) into music at 0.95
    strict = example_parts(segs, sound="yamnet", sound_labels=labels, music="musicnn_msd", least=0.95)
    assert [p.space for p in strict] == ["musicnn_msd"]


def test_parts_hits_interleave_by_share():
    from soundscope.search import ExamplePart, fuse_parts
    from soundscope.types import Result

    def hits(ids):
        return [Result(i, f"/x/{i}", 0.9 - 0.01 * k, 0.0, 5.0, ["sounds similar"]) for k, i in enumerate(ids)]

    music = ExamplePart("musicnn_msd", np.ones(2, np.float32), None, [(5.0, 15.0)], 2 / 3)
    sound = ExamplePart("yamnet", np.ones(2, np.float32), None, [(0.0, 5.0)], 1 / 3)
    fused = fuse_parts([(music, hits([1, 2, 3, 4, 5])), (sound, hits([10, 11, 4]))], limit=6)
    # music 2/3, 1/3, 2/9, 1/6, 2/15; sound 1/3, 1/6, 1/9: item 4 is in both (1/6 + 1/9)
    assert [r.item_id for r in fused] == [1, 2, 10, 4, 3, 11]
    assert fused[0].why[0] == "like the query's music at 00:05-00:15"
    assert fused[2].why[0] == "like the query's sound at 00:00-00:05"
    assert [r.evidence["fused"] for r in fused] == sorted((r.evidence["fused"] for r in fused), reverse=True)
    scattered = ExamplePart(
        "yamnet", np.ones(2, np.float32), None, [(0, 5), (10, 15), (20, 25), (30, 35), (40, 45)], 0.5
    )
    assert fuse_parts([(scattered, hits([1]))], limit=1)[0].why[0] == (
        "like the query's sound at 00:00-00:05, 00:10-00:15, 00:20-00:25 and 2 more"
    )
    tiny = ExamplePart("yamnet", np.ones(2, np.float32), None, [(0.0, 1.0)], 0.05)
    big = ExamplePart("musicnn_msd", np.ones(2, np.float32), None, [(1.0, 20.0)], 0.95)
    fused = fuse_parts([(big, hits(list(range(100, 130)))), (tiny, hits([7]))], limit=10)
    assert 7 not in [r.item_id for r in fused]  # a door slam in a song does not reach the first ten
