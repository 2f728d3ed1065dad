"""Query understanding inside search, on the real demo index: negation, constraints, Chinese explanations."""

from soundscope import evaluate


def test_negated_labels_are_absent_from_the_top_10(demo_lib):
    s = demo_lib.searcher
    m = s.matrices()
    checked = 0
    for case in evaluate.query_suite():
        pq = demo_lib.parse(case["query"])
        if not pq.exclude:
            continue
        carried = {phrase: s.carries(phrase) for phrase in pq.exclude}
        for r in demo_lib.search(case["query"], limit=10):
            pos = m.position(r.item_id)
            for phrase, mask in carried.items():
                assert not mask[pos], (case["query"], r.path, phrase)
        checked += 1
    assert checked >= 20


def test_birds_but_no_traffic(demo_lib):
    top = demo_lib.search("birds but no traffic", limit=3)
    assert "robin" in top[0].path
    assert any(w.startswith("excludes traffic") for w in top[0].why)


def test_constraints_filter_and_explain_in_chinese(demo_lib):
    results = demo_lib.search("三分钟以内的音乐", limit=10)
    assert results and all(r.duration_s <= 180 for r in results)
    assert any(w.startswith("时长") for w in results[0].why)
    dog = demo_lib.search("狗叫", limit=1)[0]
    assert "/dog/" in dog.path and dog.why[0].startswith("听起来像")


def test_whale_song_is_not_forced_to_be_music(demo_lib):
    assert "humpback" in demo_lib.search("whale song", limit=1)[0].path
