"""Search over the real demo corpus: text (English and Chinese), query by example, filters, explanations."""

import os
import shutil

import numpy as np
import pytest

from soundscope.search import Filters
from tests.conftest import DEMO


def _folders(results):
    return [os.path.relpath(r.path, DEMO).split(os.sep)[:2] for r in results]


@pytest.mark.parametrize(
    "query,folder",
    [
        ("dog barking", "dog"),
        ("狗叫", "dog"),
        ("rain", "rain"),
        ("下雨的声音", "rain"),
        ("a rooster crowing", "rooster"),
        ("chainsaw", "chainsaw"),
        ("helicopter", "helicopter"),
    ],
)
def test_text_queries_find_the_class(demo_lib, query, folder):
    results = demo_lib.search(query, limit=2)
    assert [f[1] for f in _folders(results)] == [folder, folder]


def test_piano_and_speech_queries(demo_lib):
    top = demo_lib.search("piano music", limit=3)
    assert all(r.path.split(os.sep)[-2] == "music" for r in top)
    speech = demo_lib.search("someone speaking", limit=5)
    assert all(f[0] == "speech" for f in _folders(speech))


def test_results_are_explained_and_well_formed(demo_lib):
    results = demo_lib.search("dog barking", limit=5)
    assert results[0].score >= results[-1].score
    top = results[0].to_dict()
    assert os.path.isabs(top["path"]) and top["start"] >= 0 and top["why"]
    assert any("Dog" in w or "Bark" in w for w in top["why"])
    assert "dog" in top["description"]


def test_best_moment_points_inside_long_files(demo_lib):
    hit = demo_lib.search("whale song", limit=3)
    whale = next(r for r in hit if "humpback" in r.path)
    assert 0 <= whale.start < whale.end <= whale.duration_s + 0.01


def test_filters(demo_lib):
    assert all(r.duration_s >= 30 for r in demo_lib.search("music", limit=10, filters=Filters(min_duration=30)))
    assert all(r.duration_s <= 6 for r in demo_lib.search("music", limit=10, filters=Filters(max_duration=6)))
    speech_only = demo_lib.search("dog", limit=10, filters=Filters(kind="speech"))
    assert speech_only and all(demo_lib.store.catalog.item(r.item_id).kind == "speech" for r in speech_only)
    under = demo_lib.search("rain", limit=10, filters=Filters(path_prefix=str(DEMO / "music")))
    assert under and all(r.path.startswith(str(DEMO / "music")) for r in under)
    labelled = demo_lib.search("anything", limit=10, filters=Filters(label="Dog"))
    assert {os.path.basename(os.path.dirname(r.path)) for r in labelled} == {"dog"}
    with pytest.raises(ValueError, match="unknown label"):
        demo_lib.search("x", filters=Filters(label="Not a label"))


def test_query_by_example(demo_lib):
    rain = DEMO / "sounds" / "rain" / "1-17367-A.ogg"
    hits = demo_lib.similar(str(rain), limit=3)
    assert hits[0].path == str(DEMO / "sounds" / "rain" / "1-21189-A.ogg")
    assert all(h.path != str(rain) for h in hits)  # the query item itself is excluded by default
    with_self = demo_lib.similar(str(rain), limit=1, include_self=True)
    assert with_self[0].path == str(rain) and with_self[0].evidence["cosine"] == pytest.approx(1.0, abs=0.01)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)  # ranked by the expanded score
    item_id = demo_lib.store.catalog.item_by_path(str(rain)).id
    assert [h.path for h in demo_lib.similar(item_id, limit=3)] == [h.path for h in hits]


def test_query_by_example_with_an_unindexed_clip(demo_lib, tmp_path):
    from soundscope import decode
    from tests.conftest import write_audio

    y = decode.load(DEMO / "sounds" / "dog" / "1-30344-A.ogg")[: 16000 * 3]  # a 3 s excerpt, re-encoded
    clip = write_audio(tmp_path / "excerpt.mp3", y, 16000)
    hits = demo_lib.similar(str(clip), limit=1)
    assert hits[0].path.endswith("1-30344-A.ogg") and hits[0].score > 0.9


def test_query_by_example_with_a_sound_then_music(demo_lib, tmp_path):
    """A dog bark followed by a song: the bark is searched as a sound, the song as music, and the
    hits of both come back, each saying which part of the clip it is like."""
    from soundscope import decode
    from tests.conftest import write_audio

    bark = decode.load(DEMO / "sounds" / "dog" / "1-30344-A.ogg")[: 16000 * 5]
    song = decode.load(DEMO / "music" / "Kevin_MacLeod_-_Vibe_Ace.ogg")[16000 * 20 : 16000 * 30]
    clip = write_audio(tmp_path / "bark_then_song.wav", np.concatenate([bark, song]), 16000)
    hits = demo_lib.similar(str(clip), limit=6)
    by_part = {h.path: h.why[0] for h in hits}
    assert by_part[str(DEMO / "sounds" / "dog" / "1-30344-A.ogg")] == "like the query's sound at 00:00-00:05"
    assert by_part[str(DEMO / "music" / "Kevin_MacLeod_-_Vibe_Ace.ogg")] == "like the query's music at 00:05-00:15"
    assert hits[0].path.startswith(str(DEMO / "music"))  # the song is two thirds of the clip
    # each part alone: the bark finds dogs in the sound tagger's space, the song songs in the music one
    assert "/dog/" in demo_lib.similar(write_audio(tmp_path / "bark.wav", bark, 16000), limit=1)[0].path
    alone = demo_lib.similar(write_audio(tmp_path / "song.wav", song, 16000), limit=3)
    assert all(h.path.startswith(str(DEMO / "music")) and "like the query" not in h.why[0] for h in alone)


def test_a_song_with_no_other_music_in_the_library_finds_the_nearest_sounds(small_corpus, tmp_path):
    """One song among sounds: the music tagger's space holds nothing else, so ``similar`` used to return
    nothing for it; it returns the nearest items in the sound tagger's space, as for any sound."""
    from soundscope.api import Library

    song = small_corpus / "music" / "sorohanro_-_solo-trumpet-06.ogg"
    with Library(tmp_path / "idx", asr_model="none") as lib:
        lib.index([str(small_corpus)])
        by_id = lib.similar(lib.item_id(str(song)), limit=3)
        assert len(by_id) == 3 and all(h.path != str(song) and "yamnet" in h.why[0] for h in by_id)
        other = DEMO / "music" / "Kevin_MacLeod_-_Vibe_Ace.ogg"  # an unindexed song: only the trumpet is music
        assert lib.similar(str(other), limit=3)[0].path == str(song)
        shutil.move(song, tmp_path / "song.ogg")
        lib.index([str(small_corpus)])  # the library has no music now
        by_file = lib.similar(str(other), limit=3)
        assert len(by_file) == 3 and all("yamnet" in h.why[0] for h in by_file)


def test_empty_query_and_show(demo_lib):
    assert demo_lib.search("   ") == []
    item = demo_lib.show(demo_lib.search("dog barking", limit=1)[0].item_id)
    assert item["labels"]["yamnet"][0][1] > 0.5 and item["segments"]
    with pytest.raises(KeyError):
        demo_lib.show(10**9)


def test_duration_words_prefer_and_numbers_filter(demo_lib):
    """Nothing in the demo corpus lasts 5 minutes: "long" reorders, "over 5 minutes" filters."""
    hits = demo_lib.search("a long recording of rain", limit=3)
    assert hits and "/rain/" in hits[0].path
    assert not any(w.startswith("duration") for w in hits[0].why)  # 5 s is not "long": not claimed
    assert demo_lib.search("rain over 5 minutes", limit=3) == []
    music = demo_lib.search("a long piece of music", limit=3)
    assert music and max(r.duration_s for r in music) >= 60


def test_label_weights_are_continuous_and_never_split_ties():
    import numpy as np

    from soundscope.search import label_weights

    rng = np.random.default_rng(0)
    sims = rng.uniform(0.2, 0.6, 521)
    sims[:8] = [0.90, 0.88, 0.86, 0.85, 0.84, 0.835, 0.834, 0.70]
    idx, w = label_weights(sims)
    assert abs(w.sum() - 1) < 1e-6 and idx[0] == 0 and w[0] == w.max()
    full = np.zeros(sims.size)
    full[idx] = w
    for seed in range(20):  # a 1e-3 nudge moves the weights by about as much, never by a whole label
        nudged = sims + np.random.default_rng(seed).uniform(-1e-3, 1e-3, sims.size)
        j, v = label_weights(nudged)
        other = np.zeros(sims.size)
        other[j] = v
        assert np.abs(other - full).sum() < 0.1
    tied = np.full(50, 0.3)
    tied[:12] = 0.79  # twelve labels exactly tied at the top: all share, none is dropped by rounding
    idx, w = label_weights(tied)
    assert sorted(idx.tolist()) == list(range(12)) and np.allclose(w, 1 / 12)


def test_unreadable_phrasings_are_not_label_evidence(demo_lib):
    """USE reads 噼啪声 and 嗡嗡声 alike as "<unk><unk>声": such phrasings would tie dozens of labels, so
    they are dropped, and a query with unknown characters is matched through its English rendering."""
    import numpy as np

    from soundscope.search import _phrasing_embeddings, readable

    searcher = demo_lib.searcher
    enc = searcher.encoder
    assert readable(enc, ["噼啪声", "嗡嗡声", "爆裂声", "狗叫"]) == [False, False, True, True]
    labels = tuple(searcher._spaces()["yamnet"]["labels"])
    emb, owner = _phrasing_embeddings(enc, labels)
    assert emb.shape[0] == owner.shape[0]
    sims = searcher.all_label_sims(searcher._readable_texts(["篝火噼啪声", "campfire crackle"]))["yamnet"]
    top = [labels[i] for i in np.argsort(-sims)[:3]]
    assert "Crackle" in top and "Fire" in top


def test_fast_loaded_text_encoder_is_the_package_encoder(tmp_path, monkeypatch):
    """The cached tokenizer and memory-mapped weights give exactly the package's own embeddings."""
    import numpy as np

    from soundscope.text import UseEncoder

    monkeypatch.setenv("SOUNDSCOPE_CACHE_DIR", str(tmp_path))
    texts = ["dog barking", "篝火噼啪声", "下雨的声音 and rain", ""]
    slow = UseEncoder(fast_load=False).encode(texts)
    built = UseEncoder().encode(texts)  # makes the cache
    assert any(p.name.startswith("usem3-") for p in tmp_path.iterdir())
    fast = UseEncoder()
    assert np.array_equal(fast.encode(texts), slow) and np.array_equal(built, slow)
    assert fast.unknown_share(["篝火", "狗"]).tolist()[1] == 0.0


def test_query_expansion_pulls_in_what_the_best_neighbours_share():
    """Average query expansion: an odd query (its own quirk, along axis 2) ranks first the candidate that
    shares the quirk; with its three best neighbours added, the candidates that share what those
    neighbours share (axis 0) come first. Label scores expand the same way. Neighbours whose first
    similarity is below QBE_EXPAND_FROM add nothing: the order stays the query's own."""
    from soundscope.search import QBE_EXPAND, QBE_EXPAND_FROM, example_similarity, expanded_similarity

    assert QBE_EXPAND == 3
    e = np.eye(4, dtype=np.float32)
    query = 0.8 * e[0] + 0.6 * e[2]
    cand = np.stack([e[0] + 0.1 * e[1], e[0] + 0.1 * e[3], e[0] + 0.2 * e[1], 0.5 * e[0] + e[2], e[0] + 0.05 * e[3]])
    cos = cand @ query / np.linalg.norm(cand, axis=1)
    assert int(np.argmax(cos)) == 3 and cos.min() > 0.78  # the quirky one leads on the query alone
    got = expanded_similarity(query, cand, cos, None, None)
    assert int(np.argmax(got)) != 3 and int(np.argmin(got)) == 3 and got.shape == (5,)
    far = expanded_similarity(query, cand, cos * QBE_EXPAND_FROM / cos.max(), None, None)  # all below the ramp
    assert np.allclose(far, cos, atol=1e-6)
    scores = np.array([[0.9, 0.0], [0.9, 0.0], [0.8, 0.1], [0.1, 0.9], [0.9, 0.0]], np.float32)
    qs = np.array([0.4, 0.6], np.float32)
    first = example_similarity(cos, qs, scores)
    both = expanded_similarity(query, cand, first, qs, scores)
    assert int(np.argmax(first)) == 3 and int(np.argmax(both)) == 2  # the one sharing the neighbours' labels
