"""The evaluation command on real ESC-10: metrics are computed correctly and the targets hold."""

import numpy as np
import pytest

from soundscope import evaluate
from tests.conftest import shared


def test_average_precision():
    assert evaluate.average_precision([True, True, False], 2) == 1.0
    assert evaluate.average_precision([False, True], 1) == 0.5
    assert evaluate.average_precision([True, False, False], 2) == 0.5  # one relevant item never returned
    assert evaluate.average_precision([], 3) == 0.0


@pytest.fixture(scope="module")
def esc10_work(tmp_path_factory):
    return tmp_path_factory.mktemp("eval")


@pytest.fixture(scope="module")
def esc10_report(esc10_work):
    return evaluate.run(shared("esc10"), esc10_work)


def test_full_esc10_evaluation_holds_its_level(esc10_report):
    """What the engine reaches on ESC-10 holds (the first release's targets were 0.85 / 0.80 / 0.80);
    the report checks issue 11's targets (0.95 / 0.96 / 0.95, Chinese within 0.02) and says whether
    they are met: query by example and the Chinese gap are, the English text metrics not yet."""
    r = esc10_report
    assert r["dataset"]["clips"] == 400 and r["dataset"]["classes"] == 10
    t, q, b = r["text_to_audio"], r["query_by_example"], r["baseline_mfcc13_cosine"]
    assert t["zero_shot_top1"] >= 0.91 and t["map"] >= 0.935 and q["qbe_p_at_10"] >= evaluate.TARGETS["qbe_p_at_10"]
    assert b["qbe_p_at_10"] < q["qbe_p_at_10"] - 0.2  # the learned embedding beats the MFCC seed clearly
    zh = r["text_to_audio_zh"]  # the same class queries in Chinese
    assert max(r["zh_gap"].values()) <= evaluate.ZH_GAP
    assert t["zero_shot_top1"] - zh["zero_shot_top1"] <= evaluate.ZH_GAP and t["map"] - zh["map"] <= evaluate.ZH_GAP
    met = all(t[k] >= evaluate.TARGETS[k] for k in ("zero_shot_top1", "map")) and q["qbe_p_at_10"] >= 0.95
    assert r["meets_targets"] == met
    table = evaluate.format_table(r)
    assert "| " not in table and f"meets targets: {'yes' if met else 'NO'}" in table


class PerturbedEncoder:
    """The real encoder with every output moved by a fixed random vector of norm ``scale`` (seeded
    by the text), then renormalised: what another CPU's kernels do to the embeddings, much larger."""

    def __init__(self, base, scale: float, seed: int) -> None:
        self.base, self.scale, self.seed = base, scale, seed
        self.model_id, self.dim = f"{base.model_id}+noise({scale},{seed})", base.dim  # its own phrasing cache

    def encode(self, texts):
        v = self.base.encode(texts).astype(np.float64)
        for i, t in enumerate(texts):
            noise = np.random.default_rng([self.seed, *t.encode("utf-8")]).standard_normal(v.shape[1])
            v[i] += self.scale * noise / np.linalg.norm(noise)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    def unknown_share(self, texts):
        return self.base.unknown_share(texts)


@pytest.mark.parametrize("seed", [1, 2])
def test_esc10_metrics_are_stable_under_embedding_perturbation(esc10_report, esc10_work, seed):
    """Query and label embeddings perturbed by 1e-3 move no ESC-10 text metric by 0.005 or more, in
    English or Chinese, so the suite gives one verdict on any x86-64 machine. (Before label matching
    was made continuous and unreadable phrasings were dropped, this moved Chinese mAP by 0.05.)"""
    from soundscope import text
    from soundscope.api import Library

    clips = evaluate.link_clips(shared("esc10"), esc10_work)
    with Library(esc10_work / "index") as lib:
        lib.encoder = PerturbedEncoder(text.load(), 1e-3, seed)
        for queries, key in (
            (evaluate.ESC10_QUERIES_EN, "text_to_audio"),
            (evaluate.ESC10_QUERIES_ZH, "text_to_audio_zh"),
        ):
            got, ref = evaluate.eval_text(lib, clips, queries), esc10_report[key]
            for metric in ("zero_shot_top1", "map", "p_at_10"):
                assert abs(got[metric] - ref[metric]) < 0.005, (key, metric, got[metric], ref[metric])


def test_clip_names_carry_no_labels(esc10_report, tmp_path_factory):
    clips = evaluate.link_clips(shared("esc10"), tmp_path_factory.mktemp("links"), max_per_class=1)
    assert len(clips) == 10
    for c in clips:
        assert c.category not in c.path


@pytest.fixture(scope="module")
def speech_report(tmp_path_factory):
    return evaluate.run_speech(shared(), tmp_path_factory.mktemp("speech"), jobs=2)


def test_spoken_content_evaluation_meets_targets(speech_report):
    """All 568 Asterisk prompts (tiny.en): stored-transcript WER, and each prompt of 4+ words found
    first by a few of its own words (issue target R@1 >= 0.90)."""
    r = speech_report
    assert r["indexed"] == 572 and r["failed"] == 0
    assert r["wer_asterisk"] <= 0.08 and r["wer_librispeech"] <= 0.08
    ident, rand = r["retrieval"]["identifying"], r["retrieval"]["random"]
    assert ident["queries"] == rand["queries"] >= 240
    assert ident["r_at_1"] >= 0.90 and ident["r_at_5"] >= 0.97
    assert rand["r_at_1"] >= 0.80  # 3 words at random: often shared with a near-duplicate prompt
    assert "R@1" in evaluate.format_speech(r)


def test_category_queries_answer_through_the_ontology(esc10_report, esc10_work):
    """Categories YAMNet has no output for ("human sounds") or that it rarely fires (its parent labels)
    are answered through their descendants: on ESC-10, babies crying and sneezing are the human sounds,
    dogs and roosters the animals."""
    from soundscope.api import Library

    clips = {c.path: c for c in evaluate.link_clips(shared("esc10"), esc10_work)}
    cases = {
        "human sounds": {"crying_baby", "sneezing"},
        "人发出的声音": {"crying_baby", "sneezing"},
        "animal sounds": {"dog", "rooster"},
    }
    with Library(esc10_work / "index") as lib:
        for query, wanted in cases.items():
            top = [clips[r.path].category for r in lib.search(query, limit=10)]
            assert sum(c in wanted for c in top) >= 8, (query, top)


def test_confidence_floor_tells_nothing_here_from_a_hit(esc10_report, esc10_work):
    """A query for a sound the library does not hold gets results marked weak ("no close match;
    nearest:"); the class queries' relevant top-10 results are never marked weak."""
    from soundscope.api import Library

    clips = {c.path: c for c in evaluate.link_clips(shared("esc10"), esc10_work)}
    with Library(esc10_work / "index") as lib:
        for query in ("car horn", "church bells", "汽车喇叭"):
            assert all(r.weak for r in lib.search(query, limit=10)), query
        for cat, query in evaluate.ESC10_QUERIES_EN.items():
            results = lib.search(query, limit=10)
            assert not any(r.weak for r in results if clips[r.path].category == cat), query
            assert [r.weak for r in results] == sorted(r.weak for r in results)  # weak ones come last
