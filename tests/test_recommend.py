"""Listeners (issue 14): events in the catalog, profiles with several tastes, collaborative filtering,
ranking (no repeats, diversity, dislikes), personalised search, and the CLI and HTTP API end to end.

Units run on a synthetic store (real SQLite and vector indexes, made-up vectors); integration on the
real demo library."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from soundscope import cli
from soundscope.recommend import (
    EASE,
    Recommender,
    build_profile,
    cluster_tastes,
    event_weight,
    explore_slots,
    label_affinity,
    mmr,
    recency,
)
from soundscope.store import SegmentData, Store
from soundscope.store.catalog import SCHEMA_VERSION, Catalog

DIM = 16
LABELS = [f"label{i}" for i in range(8)]


def _item(k: int, kind: str = "sound") -> dict:
    return {
        "path": f"/lib/{k:03d}.wav", "root": "/lib", "size": 1, "mtime": 0.0, "content_hash": f"h{k}",
        "duration_s": 10.0, "sample_rate": 16000, "channels": 1, "kind": kind, "description": f"item {k}",
        "indexed_at": 0.0,
    }  # fmt: skip


@pytest.fixture
def groups(tmp_path):
    """A store of 60 items in 3 well-separated groups (A: 0-19, B: 20-39, C: 40-59) of YAMNet-like
    vectors, each group carrying its own label; returns (store, {group: [item ids]})."""
    rng = np.random.default_rng(0)
    centers = np.eye(DIM, dtype=np.float32)[:3] * 3 + 0.5
    store = Store(tmp_path / "lib")
    store.catalog.register_model("yamnet", "test", {}, DIM, LABELS)
    ids: dict[str, list[int]] = {"A": [], "B": [], "C": []}
    with store.catalog.bulk() as cat:
        for k in range(60):
            g = "ABC"[k // 20]
            v = centers[k // 20] + rng.normal(0, 0.3, DIM).astype(np.float32)
            v /= np.linalg.norm(v)
            scores = np.full(len(LABELS), 0.02, np.float32)
            scores[k // 20] = 0.9
            data = [SegmentData("yamnet", scores, v)]
            item_id, _ = cat.put_item(_item(k), [(0.0, 10.0, data)], data)
            ids[g].append(item_id)
    return store, ids


# -- events ---------------------------------------------------------------------------------------


def test_events_crud_and_cascade(groups):
    store, ids = groups
    cat: Catalog = store.catalog
    a = ids["A"][0]
    e1 = cat.add_event("ana", a, "like", query="rain")
    cat.add_event("ana", ids["B"][0], "play", value=42.5, at=time.time() - 10)
    cat.add_event("bob", a, "skip")
    got = cat.events("ana")
    assert next(e["id"] for e in got) == e1 and len(got) == 2  # newest first
    assert got[0] == {**got[0], "user": "ana", "item_id": a, "kind": "like", "query": "rain"}
    assert got[1]["value"] == 42.5 and len(cat.events()) == 3
    assert cat.event_users() == [("ana", 2), ("bob", 1)]
    with pytest.raises(KeyError):
        cat.add_event("ana", 99999, "like")
    with pytest.raises(ValueError, match="unknown feedback kind"):
        cat.add_event("ana", a, "love")
    with pytest.raises(ValueError):
        cat.add_event("  ", a, "like")
    assert len(cat.events()) == 3  # nothing half-written
    cat.delete_items([a])  # the item leaves the library: its events go with it
    assert [e["item_id"] for e in cat.events()] == [ids["B"][0]]
    assert cat.delete_events("ana") == 1 and cat.events("ana") == [] and cat.delete_events("ana") == 0
    assert cat.schema_version == SCHEMA_VERSION >= 4  # events came with schema 4


def test_feedback_survives_an_edited_file(small_corpus, tmp_path):
    """A file whose bytes change (tags edited, re-encoded) is analysed again under a new id; the likes and
    plays it had move with it (they used to be deleted with the old row)."""
    import soundfile

    from soundscope.api import Library

    dog = small_corpus / "sounds/dog/1-30344-A.ogg"
    with Library(tmp_path / "idx", asr_model="none") as lib:
        lib.index([str(small_corpus)])
        old = lib.item_id(str(dog))
        lib.feedback("like", str(dog), user="ana")
        lib.feedback("play", str(dog), user="bob", seconds=4.0)
        lib.feedback("like", str(small_corpus / "sounds/rain/1-17367-A.ogg"), user="ana")
    y, sr = soundfile.read(str(dog))
    time.sleep(0.01)
    soundfile.write(str(dog), y, sr, format="OGG", subtype="VORBIS")  # same sound, new bytes
    with Library(tmp_path / "idx", asr_model="none") as lib:
        report = lib.index([str(small_corpus)])
        new = lib.item_id(str(dog))
        assert report.indexed == 1 and new != old
        moved = sorted((e["user"], e["kind"], e["value"]) for e in lib.store.catalog.events() if e["item_id"] == new)
        assert moved == [("ana", "like", 0.0), ("bob", "play", 4.0)]
        assert len(lib.store.catalog.events()) == 3 and not any(e["item_id"] == old for e in lib.store.catalog.events())
        profile = lib.profile("ana")
        assert profile["events"]["like"] == 2
        assert any(new in taste["example_ids"] for taste in profile["tastes"])  # the dog is still a taste


def test_event_weights_and_recency():
    assert event_weight("like", 0, 10) == 1.0 and event_weight("dislike", 0, 10) == -1.0
    assert event_weight("skip", 0, 10) < 0
    assert event_weight("play", 10, 10) == pytest.approx(0.5)  # listened through
    assert event_weight("play", 1, 100) < event_weight("play", 30, 100) < event_weight("play", 60, 100)
    assert recency(0.0) == 1.0 and recency(30 * 86400) == pytest.approx(0.5)


# -- profiles -------------------------------------------------------------------------------------


def test_tastes_are_clusters_not_one_average(groups):
    store, ids = groups
    vec = {i: store.catalog.item_vector(i, "yamnet") for g in ids.values() for i in g}
    liked = ids["A"][:3] + ids["B"][:2]
    v = np.stack([vec[i] / np.linalg.norm(vec[i]) for i in liked])
    labels = cluster_tastes(v, np.array([1, 1, 1, 1, 1.0]))
    assert labels.tolist() == [0, 0, 0, 1, 1]  # heaviest taste first
    assert cluster_tastes(v[:1], np.ones(1)).tolist() == [0]
    for i in liked:
        store.catalog.add_event("ana", i, "like")
    p = build_profile(store, "ana")
    assert len(p.tastes) == 2 and sorted(p.tastes[0].items) == sorted(ids["A"][:3])
    assert p.tastes[0].words(1) == ["label0"] and p.tastes[1].words(1) == ["label1"]
    assert set(liked) <= p.seen


def test_recency_weights_old_feedback_less(groups):
    store, ids = groups
    now = time.time()
    store.catalog.add_event("ana", ids["A"][0], "like", at=now - 120 * 86400)  # four half-lives ago
    store.catalog.add_event("ana", ids["B"][0], "like", at=now)
    p = build_profile(store, "ana", now=now)
    assert p.net[ids["B"][0]] == pytest.approx(1.0, abs=1e-3) and p.net[ids["A"][0]] == pytest.approx(1 / 16, rel=0.01)
    assert p.tastes[0].items == [ids["B"][0]]  # the recent taste leads


def test_recommend_covers_both_tastes_avoids_dislikes_and_repeats(groups):
    store, ids = groups
    rec = Recommender(store)
    for i in ids["A"][:2] + ids["B"][:1]:
        store.catalog.add_event("ana", i, "like")
    store.catalog.add_event("ana", ids["C"][0], "dislike")
    store.catalog.add_event("ana", ids["A"][5], "play", value=10)
    got = rec.recommend("ana", limit=10, explore=0.0)
    group = {i: g for g, members in ids.items() for i in members}
    top = [group[r.item_id] for r in got]
    assert len(got) == 10 and "C" not in top and {"A", "B"} <= set(top)
    assert not {r.item_id for r in got} & {ids["A"][0], ids["A"][1], ids["B"][0], ids["A"][5]}  # no repeats
    assert all(r.why[0].startswith("because you liked /lib/") or "because you liked 0" in r.why[0] for r in got)
    zh = rec.recommend("ana", limit=3, explore=0.0, language="zh")
    assert zh[0].why[0].startswith("因为你喜欢《")
    words = rec.describe("ana")
    assert len(words["tastes"]) == 2 and words["against"] == ["label2"]
    assert any("taste 1" in line and "label0" in line for line in words["summary"])
    # the exploration share: the last place comes from further down, drawn the same way until feedback changes
    a, b = rec.recommend("ana", limit=10), rec.recommend("ana", limit=10)
    assert [r.item_id for r in a] == [r.item_id for r in b] and "exploration" in a[-1].why[-1]


def test_candidates_share_a_budget_and_score_only_their_rows(groups):
    store, ids = groups
    for i in ids["A"][:2] + ids["B"][:2] + ids["C"][:1]:
        store.catalog.add_event("ana", i, "like")
    rec = Recommender(store)
    p = rec.profile("ana")
    assert len(p.tastes) == 3
    group = {i: g for g, members in ids.items() for i in members}
    few = rec.candidates(p, np.zeros(0, np.int64), most=9)
    assert 9 <= len(few) < 12 and {group[i] for i in few} == {"A", "B", "C"}  # every taste gets its share
    assert not set(few) & p.seen
    all_ids = rec.candidates(p, np.zeros(0, np.int64))
    assert set(few) < set(all_ids) and len(all_ids) == 60 - len(p.seen)
    m = store.columns()
    rows = m.positions(np.asarray([*all_ids[::3], 10**9]))  # the last one is not in the library
    for taste in p.tastes:
        full = label_affinity(m, taste)
        np.testing.assert_allclose(label_affinity(m, taste, rows)[:-1], full[rows[:-1]], rtol=1e-6)
        assert label_affinity(m, taste, rows)[-1] == 0.0
    vec = rec._matrix([all_ids[1], 10**9, all_ids[0]], "yamnet")  # in the order asked, zeros where absent
    want = store.catalog.item_vector(all_ids[0], "yamnet")
    assert np.allclose(vec[2], want / np.linalg.norm(want), atol=1e-6) and not vec[1].any()


def test_no_history_no_shared_listening_recommends_nothing(groups):
    store, _ = groups
    assert Recommender(store).recommend("nobody", limit=5) == []


def test_collaborative_filtering_people_who_play_x(groups):
    store, ids = groups
    a, b = ids["A"], ids["B"]
    for user in ("u1", "u2", "u3"):  # three listeners who like A[0] also like B[7]
        store.catalog.add_event(user, a[0], "like")
        store.catalog.add_event(user, b[7], "like")
    store.catalog.add_event("ana", a[0], "like")
    rec = Recommender(store)
    items, scores, _mine = rec.cf().scores("ana")
    assert b[7] in items.tolist() and scores[items.tolist().index(b[7])] > 0
    got = rec.recommend("ana", limit=10, explore=0.0)
    hit = next(r for r in got if r.item_id == b[7])  # a B item, far from ana's content taste, via CF
    assert any(w.startswith("people who play") for w in hit.why)
    assert rec.recommend("stranger", limit=3)[0].why == ["popular with other listeners"]  # cold start


def test_ease_mmr_and_exploration_units():
    X = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 1, 0]], np.float32)
    B = EASE(lam=0.5).fit(X).B
    assert np.allclose(np.diag(B), 0) and B[0, 1] > B[0, 2]  # co-liked items weigh more
    vec = np.array([[1, 0], [0.99, 0.14], [0, 1]], np.float32)
    assert mmr(np.array([1.0, 0.95, 0.9]), vec, limit=2, lam=0.5) == [0, 2]  # the near-duplicate waits
    assert mmr(np.array([1.0, 0.95, 0.9]), vec, limit=2, lam=1.0) == [0, 1]
    rel = np.linspace(1, 0, 100)
    out = explore_slots(list(range(10)), rel, limit=10, share=0.1, seed=3)
    assert out[:9] == list(range(9)) and 20 <= out[9] < 60


# -- the real library: personalised search, CLI, HTTP ---------------------------------------------


def _ids(lib, part: str) -> list[int]:
    return [r.id for r in lib.store.catalog.items() if f"/{part}/" in r.path]


def test_personalised_search_identical_without_history(demo_lib):
    for q in ("rain", "dog barking", "慢歌"):
        plain = [r.to_dict() for r in demo_lib.search(q, limit=8)]
        assert [r.to_dict() for r in demo_lib.search(q, limit=8, user="nobody-at-all")] == plain


def test_personalised_search_lifts_the_liked_kind(demo_lib):
    user = "test-water-lover"
    try:
        plain = [r.item_id for r in demo_lib.search("water", limit=10)]
        waves = _ids(demo_lib, "sea_waves")
        for i in waves:
            demo_lib.feedback("like", i, user=user)
        mine = [r.item_id for r in demo_lib.search("water", limit=10, user=user)]
        assert sorted(mine) != mine or mine != plain
        best = min(mine.index(i) for i in waves if i in mine)
        assert best <= min(plain.index(i) for i in waves if i in plain)
        assert mine[0] in waves
    finally:
        demo_lib.forget(user)


def test_cli_round_trip(demo_lib, capsys):
    d = ["--data-dir", str(demo_lib.data_dir)]
    dog, rain = _ids(demo_lib, "dog"), _ids(demo_lib, "rain")
    user = "test-cli-ana"
    try:
        assert cli.main(["feedback", "like", str(dog[0]), "--user", user, *d]) == 0
        assert cli.main(["feedback", "play", str(rain[0]), "--seconds", "5", "--user", user, "--json", *d]) == 0
        out = capsys.readouterr().out
        assert f"{user}: like #{dog[0]} recorded" in out and json.loads(out.splitlines()[-1])["value"] == 5.0
        assert cli.main(["recommend", "--user", user, "-n", "4", "--json", *d]) == 0
        recs = json.loads(capsys.readouterr().out)
        assert len(recs) == 4 and not {r["id"] for r in recs} & {dog[0], rain[0]}
        assert dog[1] in {r["id"] for r in recs} and rain[1] in {r["id"] for r in recs}  # both tastes
        assert any(w.startswith("because you liked") for r in recs for w in r["why"])
        assert cli.main(["recommend", "给我推荐一首慢歌", "--user", user, "-n", "3", "--json", *d]) == 0
        assert len(json.loads(capsys.readouterr().out)) == 3
        assert cli.main(["radio", str(dog[0]), "--user", user, "-n", "5", "--json", *d]) == 0
        radio = json.loads(capsys.readouterr().out)
        assert radio[0]["id"] == dog[0] and len({r["id"] for r in radio}) == 5
        assert cli.main(["profile", user, *d]) == 0
        words = capsys.readouterr().out
        assert "taste 1" in words and "taste 2" in words and "dog" in words.lower()
        assert cli.main(["search", "rain", "--user", user, "-n", "3", *d]) == 0
        assert cli.main(["feedback", "like", "999999", "--user", user, *d]) == 2
        assert "no item with id 999999" in capsys.readouterr().err
        rain_path = demo_lib.store.catalog.item(rain[1]).path  # a path names an item as well as its id
        assert cli.main(["feedback", "skip", rain_path, "--user", user, *d]) == 0
        assert f"{user}: skip #{rain[1]} recorded" in capsys.readouterr().out
        assert cli.main(["radio", rain_path, "--user", user, "-n", "2", "--json", *d]) == 0
        assert json.loads(capsys.readouterr().out)[0]["id"] == rain[1]
        assert cli.main(["feedback", "like", "no/such/file.ogg", "--user", user, *d]) == 2
        assert "not in the library: no/such/file.ogg" in capsys.readouterr().err
        assert cli.main(["forget", user, "--item", rain_path, *d]) == 0 and "1 events" in capsys.readouterr().out
        assert cli.main(["forget", user, *d]) == 0 and "2 events deleted" in capsys.readouterr().out
        assert demo_lib.store.catalog.events(user) == []
    finally:
        demo_lib.forget(user)


def test_http_endpoints(demo_lib):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from soundscope import server

    user = "test-http-ana"
    dog = _ids(demo_lib, "dog")
    with TestClient(server.create_app(demo_lib, warm=False)) as c:
        try:
            r = c.post("/api/feedback", json={"item_id": dog[0], "kind": "like", "user": user})
            assert r.status_code == 200 and r.json()["kind"] == "like" and r.json()["user"] == user
            assert c.post("/api/feedback", json={"item_id": 999999, "kind": "like", "user": user}).status_code == 404
            bad = c.post("/api/feedback", json={"item_id": dog[0], "kind": "love", "user": user})
            assert bad.status_code == 400 and "kind" in bad.json()["error"]
            body = c.get("/api/recommend", params={"user": user, "limit": 3}).json()
            assert body["user"] == user and len(body["results"]) == 3
            assert dog[1] in [x["id"] for x in body["results"]]
            assert set(body["items"]) == {str(x["id"]) for x in body["results"]}
            prof = c.get(f"/api/profile/{user}").json()
            assert prof["events"]["like"] == 1 and prof["summary"][0].startswith(user)
            assert c.get(f"/api/profile/{user}", params={"lang": "zh"}).json()["summary"][1].startswith("口味 1")
            personal = c.get("/api/search", params={"q": "animal", "user": user}).json()
            assert personal["results"] and c.get(f"/api/radio/{dog[0]}", params={"user": user}).status_code == 200
            assert c.delete(f"/api/profile/{user}").json()["deleted_events"] == 1
        finally:
            demo_lib.forget(user)
    with TestClient(server.create_app(demo_lib, warm=False, token="s3cret")) as c:
        assert c.post("/api/feedback", json={"item_id": dog[0], "kind": "like", "user": user}).status_code == 401
        assert c.delete(f"/api/profile/{user}").status_code == 401
