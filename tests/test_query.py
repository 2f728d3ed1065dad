"""Query understanding: the bilingual query suite, Traditional Chinese, label phrasings, CC-CEDICT fallback, latency.

The suite lives in ``src/soundscope/data/vocab/query_suite.json`` (reused by evaluation). Each case's
``expect`` must match, and the constraint fields it leaves out (see ``query.SUITE_DEFAULTS``) must be
unset, so a parse that invents a constraint fails as surely as one that misses it.
"""

from __future__ import annotations

import json
import statistics
import time

import pytest

from soundscope import query
from soundscope.query import LONG_S, ParsedQuery, parse

SUITE = query.load_suite()


def _yamnet_labels() -> list[str]:
    from soundscope.analyzers.yamnet import _default_class_map, _read_labels

    return _read_labels(_default_class_map())


def test_suite_is_large_enough_and_well_formed():
    langs = [c["lang"] for c in SUITE]
    assert langs.count("en") >= 40
    assert langs.count("zh") >= 40
    fields = set(ParsedQuery.__dataclass_fields__)
    for case in SUITE:
        assert set(case) == {"query", "lang", "expect"}, case
        assert set(case["expect"]) <= fields, case
    assert len({c["query"] for c in SUITE}) == len(SUITE), "duplicate queries"


@pytest.mark.parametrize("case", SUITE, ids=[c["query"] for c in SUITE])
def test_suite_query_parses_as_expected(case):
    parsed = parse(case["query"])
    assert query.suite_mismatches(parsed, case) == [], parsed.explain()


@pytest.mark.parametrize(
    "traditional,simplified",
    [
        ("下雨的聲音", "下雨的声音"),
        ("鋼琴", "钢琴"),
        ("沒有人聲的鋼琴曲", "没有人声的钢琴曲"),
        ("說到預算的地方", "说到预算的地方"),
        ("不要鼓的輕音樂", "不要鼓的轻音乐"),
        ("鳥叫但是沒有汽車聲", "鸟叫但是没有汽车声"),
    ],
)
def test_traditional_parses_like_simplified(traditional, simplified):
    t, s = parse(traditional), parse(simplified)
    assert t.language == "zh"
    assert t.normalized == s.normalized
    tex, sex = t.explain(), s.explain()
    tex.pop("raw")
    sex.pop("raw")
    assert tex == sex


def test_language_detection_by_script():
    assert parse("dog barking").language == "en"
    assert parse("狗叫").language == "zh"
    assert parse("120 bpm 的电子音乐").language == "zh"  # units don't make a query English
    assert parse("jazz 钢琴").language == "mixed"
    assert parse("").language == "en"


def test_normalization_nfkc_lowercase():
    p = parse("ＦＡＳＴ　Songs")
    assert p.normalized == "fast songs"
    assert p.tempo_word == "fast"


def test_words_are_segmented_with_vocabulary_preferred():
    assert parse("没有人声的钢琴曲").words == ["没有人声", "的", "钢琴曲"]
    assert "狗叫声" in parse("狗叫声").words  # the longest vocabulary entry wins over its parts
    assert parse("马上").include != ["horse"]  # ... but not over a longer jieba word (马上 = at once)
    assert parse("长笛独奏").duration is None  # 长笛 (flute) is not 长 (long)


def test_explain_is_json_ready_and_ordered():
    p = parse("female vocal jazz under 3 minutes")
    d = p.explain()
    json.dumps(d)
    assert list(d)[:3] == ["raw", "language", "normalized"]
    assert d["duration"] == [None, 180.0]
    assert "spoken" not in d and "tempo" not in d
    order = [f for f in ParsedQuery._FIELDS if f in d]
    assert list(d) == order


def test_describe_speaks_the_query_language():
    zh = parse("不要交通噪音的慢歌").describe()
    assert "速度: 慢 (≤ 90 BPM)" in zh
    assert "排除: 交通噪音" in zh
    en = parse("slow songs but no traffic").describe()
    assert "tempo: slow (<= 90 BPM)" in en
    assert "exclude: traffic" in en
    assert "排除: 交通" in parse("slow songs but no traffic").describe("zh")
    assert "duration: <= 3 min" in parse("三分钟以内的歌").describe("en")
    assert parse("").describe() == []


def test_exclusion_scope_ends_at_conjunction_and_continues_over_lists():
    p = parse("birds but no traffic, with wind")
    assert p.exclude == ["traffic"]
    assert set(p.include) == {"bird", "wind"}
    p = parse("no drums or bass, just piano")
    assert set(p.exclude) == {"drum", "bass"}
    assert p.include == ["piano"]
    assert parse("drum and bass").include == ["drum and bass"]  # the genre, not a list
    assert set(parse("piano without drums and bass").exclude) == {"drum", "bass"}


def test_negated_tempo_and_loudness_flip():
    assert parse("not too fast").tempo == (None, 120.0)
    assert parse("不要太吵").loudness == "quiet"
    assert parse("music not too loud").loudness == "quiet"


def test_numbers_in_words_and_chinese_numerals():
    assert parse("songs under four minutes").duration == (None, 240.0)
    assert parse("one hundred and twenty bpm").tempo == (114.0, 126.0)
    assert parse("一百二十拍").tempo == (114.0, 126.0)
    assert parse("三分半以内").duration == (None, 210.0)
    assert parse("半小时以上的播客").duration == (1800.0, None)
    assert parse("80s rock").duration is None  # a decade, not 80 seconds
    assert parse("十分安静的音乐").duration is None  # 十分 = very
    assert query.cn_number("两百零五") == 205.0


def test_spoken_content_is_not_a_sound():
    p = parse("podcast about cooking under 10 minutes")
    assert p.spoken == "cooking"
    assert p.duration == (None, 600.0)
    assert p.kind == "speech"
    p = parse("演讲中提到气候的部分")
    assert p.spoken == "气候"  # 讲 inside 演讲 does not introduce speech
    assert p.kind == "speech"


def test_label_phrasings_cover_every_model_label():
    from soundscope.analyzers.musicnn import MSD_LABELS, MTT_LABELS

    labels = [*_yamnet_labels(), *MTT_LABELS, *MSD_LABELS]
    assert len(labels) == 621
    phr = query.label_phrasings()
    for label in labels:
        p = phr.get(label)
        assert p, label
        assert p[0] == label
        zh = [x for x in p if query.HAS_CJK.search(x)]
        en = [x for x in p if not query.HAS_CJK.search(x)]
        assert 1 <= len(zh) <= 3, (label, p)
        assert 1 <= len(en) <= 3, (label, p)
    assert "dog barking" in phr["Bark"]
    assert "狗叫" in phr["Bark"]
    assert "犬吠" in phr["Bark"]


def test_curated_vocabulary_is_large_and_covers_the_basics():
    v = query.vocabulary()
    curated = [k for k, e in v.zh.items() if e.section != "label"]
    assert len(curated) >= 400
    for zh, en in [
        ("钢琴", "piano"),
        ("小号", "trumpet"),
        ("二胡", "erhu"),
        ("古筝", "guzheng"),
        ("琵琶", "pipa"),
        ("摇滚", "rock"),
        ("重金属", "heavy metal"),
        ("嘻哈", "hip-hop"),
        ("欢快", "cheerful"),
        ("狗叫", "dog barking"),
        ("公鸡打鸣", "rooster crowing"),
        ("海浪", "sea waves"),
        ("交通", "traffic"),
        ("警笛", "siren"),
        ("钟表滴答", "clock ticking"),
        ("婴儿哭", "baby crying"),
        ("女声", "female vocals"),
    ]:
        assert v.zh[zh].en == en


def test_cedict_fallback_for_a_word_outside_the_vocabulary():
    assert "啄木鸟" not in query.vocabulary().zh
    assert query.cedict_gloss("啄木鸟") == "woodpecker"
    p = parse("啄木鸟的声音")
    assert p.include == ["woodpecker"]
    assert p.text_en == "woodpecker"


def test_cedict_filters_misleading_senses():
    # 量词: "classifier (in Chinese grammar)" first, then "measure word"
    assert query.cedict_gloss("量词") == "measure word"
    # 栋: only a classifier sense and an "(old)" one
    assert query.cedict_gloss("栋") is None
    assert query.clean_gloss(["CL:個|个[ge4]", "classifier for birds", "surname Ma", "(literary) rain", "tractor"]) == (
        "tractor"
    )
    assert query.clean_gloss(["variant of 隻|只[zhi1]", "(of a dog) to bark"]) == "bark"
    assert query.clean_gloss(["a very long gloss that explains far too much to be a useful search word"]) is None


def test_parse_latency_p50():
    queries = [c["query"] for c in SUITE]
    for q in queries:  # warm-up: jieba, OpenCC, vocabularies, CC-CEDICT
        parse(q)
    times = []
    for _ in range(3):
        for q in queries:
            t = time.perf_counter()
            parse(q)
            times.append((time.perf_counter() - t) * 1000)
    p50 = statistics.median(times)
    print(f"parse p50 {p50:.3f} ms over {len(times)} parses")
    assert p50 < 20.0


def test_said_keeps_constraint_words_but_not_negated_ones():
    """A transcript may say "longer", "muted" or "extended": they stay searchable as words."""
    p = parse("the conference has been extended and is muted")
    assert p.duration == (LONG_S, None) and p.duration_word == "long" and p.loudness == "quiet"
    assert p.said == "the conference has been extended and is muted"
    p = parse("you are no longer muted")  # negation flips the attributes, the words stay
    assert p.duration_word == "short" and p.loudness == "loud"
    assert p.said.split()[-2:] == ["longer", "muted"]
    p = parse("a long recording of rain without thunder")
    assert "thunder" not in p.said and "long" in p.said
    assert parse("没有人声的钢琴曲").said.find("人声") == -1
    assert parse("someone says 'hello there'").said == "hello there"


def test_duration_words_are_preferences_and_numbers_are_limits():
    assert parse("a short clip of a dog").duration_word == "short"
    assert parse("not too long").duration_word == "short"
    assert parse("dogs under 10 seconds").duration_word is None
    assert parse("dogs under 10 seconds").duration == (None, 10.0)


def test_musical_reading():
    assert parse("slow piano").musical and parse("jazz").musical and parse("female vocals").musical
    assert not parse("now muted").musical and not parse("dog barking").musical


def test_a_tempo_of_an_instrument_or_genre_asks_for_music():
    """"slow piano" is a song, not a piano sound; a tempo word alone or with a sound says nothing of kind."""
    assert parse("slow piano").kind == "music" and parse("快节奏的钢琴").kind == "music"
    assert parse("slow jazz").kind == "music"
    assert parse("slow").kind is None and parse("fast car").kind is None and parse("piano").kind is None
