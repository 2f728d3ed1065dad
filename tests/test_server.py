"""HTTP API over the real demo index: same results as the library, filters, query by example (id and
upload), item details, audio byte ranges, waveforms, indexing jobs, and the safety rules (path
traversal, symlink escapes, upload size and type, token)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server needs fastapi (pip install fastapi uvicorn python-multipart)")
httpx = pytest.importorskip("httpx", reason="the API tests need httpx")

from fastapi.testclient import TestClient  # noqa: E402

from soundscope import server  # noqa: E402
from soundscope.api import Library  # noqa: E402
from soundscope.search import Filters  # noqa: E402
from tests.conftest import DEMO, tone, write_audio  # noqa: E402

DOG = DEMO / "sounds" / "dog" / "1-30226-A.ogg"
HELLO = DEMO / "speech" / "prompts" / "hello-world.wav"
FLAC = DEMO / "speech" / "1089-134691-0000.flac"


@pytest.fixture(scope="module")
def client(demo_lib):
    app = server.create_app(demo_lib, warm=False)
    with TestClient(app) as c:
        yield c


def _id(lib: Library, path: Path) -> int:
    row = lib.store.catalog.item_by_path(str(path))
    assert row is not None, path
    return row.id


def _error(resp, status: int) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return body["error"]


# -- search ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["dog barking", "下雨的声音", "piano music", "someone speaking"])
def test_search_returns_the_library_results(client, demo_lib, query):
    resp = client.get("/api/search", params={"q": query, "limit": 8})
    assert resp.status_code == 200
    body = resp.json()
    assert body["query"] == query
    want = [r.to_dict() for r in demo_lib.search(query, limit=8)]
    assert [r["path"] for r in body["results"]] == [r["path"] for r in want]
    assert body["results"] == want  # the CLI's --json dicts, unchanged
    assert set(body["items"]) == {str(r["id"]) for r in want}
    assert body["has_more"] is (len(demo_lib.search(query, limit=9)) > 8)


def test_search_pages(client, demo_lib):
    want = [r.path for r in demo_lib.search("rain", limit=15)]
    first = client.get("/api/search", params={"q": "rain", "limit": 5}).json()
    second = client.get("/api/search", params={"q": "rain", "limit": 5, "offset": 5}).json()
    third = client.get("/api/search", params={"q": "rain", "limit": 5, "offset": 10}).json()
    assert [r["path"] for r in first["results"] + second["results"] + third["results"]] == want
    assert second["offset"] == 5 and second["has_more"]


def test_search_filters(client, demo_lib):
    def get(**params):
        resp = client.get("/api/search", params={"limit": 20, **params})
        assert resp.status_code == 200, resp.text
        return resp.json()

    music = get(q="music", kind="music")
    assert music["results"] and all(m["kind"] == "music" for m in music["items"].values())
    assert music["filters"] == {"kind": "music"}
    short = get(q="music", max_duration=6)
    assert short["results"] and all(r["duration_s"] <= 6 for r in short["results"])
    long = get(q="music", min_duration=30)
    assert [r["path"] for r in long["results"]] == [
        r.path for r in demo_lib.search("music", limit=20, filters=Filters(min_duration=30))
    ]
    under = get(q="rain", under=str(DEMO / "sounds" / "dog"))
    assert under["results"] and all(r["path"].startswith(str(DEMO / "sounds" / "dog")) for r in under["results"])
    dog = get(q="anything", label="Dog")
    assert [r["path"] for r in dog["results"]] == [
        r.path for r in demo_lib.search("anything", limit=20, filters=Filters(label="Dog"))
    ]
    assert "unknown label" in _error(client.get("/api/search", params={"q": "x", "label": "NoSuchLabel"}), 400)


def test_tempo_filter(client, demo_lib):
    body = client.get("/api/search", params={"q": "music", "min_tempo": 100, "limit": 20}).json()
    assert body["results"]
    for r in body["results"]:
        row = demo_lib.store.catalog.item(r["id"])
        assert row.kind == "music" and row.features["music"]["tempo_bpm"] >= 100
        assert body["items"][str(r["id"])]["tempo_bpm"] >= 100
    slow = client.get("/api/search", params={"q": "music", "max_tempo": 100, "limit": 20}).json()
    assert not {r["id"] for r in slow["results"]} & {r["id"] for r in body["results"]}
    assert body["filters"]["min_tempo"] == 100


def test_search_rejects_bad_parameters_as_json(client):
    assert "missing query" in _error(client.get("/api/search"), 400)
    assert "limit" in _error(client.get("/api/search", params={"q": "dog", "limit": 0}), 400)
    assert "limit" in _error(client.get("/api/search", params={"q": "dog", "limit": "many"}), 400)
    assert "kind" in _error(client.get("/api/search", params={"q": "dog", "kind": "noise"}), 400)
    _error(client.get("/api/search", params={"q": "dog", "min_duration": 10, "max_duration": 5}), 400)
    _error(client.get("/api/search", params={"q": "x" * 600}), 400)


def test_explain_when_the_query_module_is_there(client):
    body = client.get("/api/search", params={"q": "slow piano under 3 minutes", "limit": 1, "explain": "true"}).json()
    try:
        from soundscope.query import parse
    except ImportError:
        assert "explain" not in body
        return
    assert body["explain"] == json.loads(json.dumps(parse("slow piano under 3 minutes").explain()))
    assert "explain" not in client.get("/api/search", params={"q": "dog", "limit": 1}).json()


# -- query by example -----------------------------------------------------------------------------


def test_similar_by_id(client, demo_lib):
    dog = _id(demo_lib, DOG)
    body = client.get(f"/api/similar/{dog}", params={"limit": 5}).json()
    assert [r["path"] for r in body["results"]] == [r.path for r in demo_lib.similar(dog, limit=5)]
    assert body["results"][0]["path"] == str(DEMO / "sounds" / "dog" / "1-30344-A.ogg")
    assert dog not in [r["id"] for r in body["results"]]
    assert body["like"]["id"] == dog and body["like"]["path"] == str(DOG)
    sounds = client.get(f"/api/similar/{dog}", params={"limit": 5, "kind": "speech"}).json()
    assert all(m["kind"] == "speech" for m in sounds["items"].values())
    assert "no item" in _error(client.get("/api/similar/999999"), 404)
    _error(client.get("/api/similar/not-a-number"), 400)


def test_similar_by_upload_matches_the_library(client, demo_lib, tmp_path):
    copy = tmp_path / "query-clip.ogg"
    shutil.copy(DOG, copy)
    want = [r.path for r in demo_lib.similar(str(copy), limit=5)]
    with open(DOG, "rb") as f:
        resp = client.post("/api/similar", params={"limit": 5}, files={"file": ("my clip.ogg", f, "audio/ogg")})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [r["path"] for r in body["results"]] == want
    assert body["results"][0]["path"] == str(DOG)  # an exact copy: the original comes first
    assert body["like"]["upload"] == "my clip.ogg" and 4.9 < body["like"]["duration_s"] < 5.1
    raw = client.post(
        "/api/similar", params={"limit": 5}, content=DOG.read_bytes(), headers={"content-type": "audio/ogg"}
    )
    assert [r["path"] for r in raw.json()["results"]] == want


def test_upload_type_is_checked_by_content_not_name(client, tmp_path):
    msg = _error(client.post("/api/similar", files={"file": ("notes.wav", b"hello, this is text\n" * 50)}), 415)
    assert "not an audio file" in msg
    playlist = b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n"
    _error(client.post("/api/similar", files={"file": ("list.m3u8", playlist)}), 415)
    corrupt = b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(400)
    assert "could not be decoded" in _error(client.post("/api/similar", files={"file": ("x.wav", corrupt)}), 415)
    # A real FLAC named .txt is still audio.
    resp = client.post("/api/similar", params={"limit": 2}, files={"file": ("speech.txt", FLAC.read_bytes())})
    assert resp.status_code == 200, resp.text
    assert "no file" in _error(client.post("/api/similar", files={"other": (None, "value")}), 400)
    assert "empty" in _error(client.post("/api/similar", files={"file": ("empty.wav", b"")}), 400)


def test_upload_limits(demo_lib, tmp_path):
    app = server.create_app(demo_lib, max_upload_mb=1, warm=False)
    with TestClient(app) as c:
        big = b"RIFF" + b"\x00" * (2 * 1024 * 1024)
        assert "too large" in _error(c.post("/api/similar", files={"file": ("big.wav", big)}), 413)

        def chunks():  # no Content-Length: the limit holds while streaming
            for _ in range(40):
                yield b"\x00" * 65536

        assert "too large" in _error(c.post("/api/similar", content=chunks()), 413)
        assert "too large" in _error(
            c.post("/api/similar", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xyz"}),
            413,
        )
    long_clip = write_audio(tmp_path / "long.flac", np.zeros(8000 * 601, np.float32), 8000)
    assert long_clip.stat().st_size < 1024 * 1024
    with TestClient(server.create_app(demo_lib, warm=False)) as c:
        msg = _error(c.post("/api/similar", files={"file": ("long.flac", long_clip.read_bytes())}), 413)
        assert "10 minutes" in msg


def test_upload_temp_files_are_removed(client, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    client.post("/api/similar", params={"limit": 1}, files={"file": ("a.wav", HELLO.read_bytes())})
    client.post("/api/similar", files={"file": ("a.txt", b"not audio at all, really" * 10)})
    assert list(tmp_path.iterdir()) == []


# -- items ----------------------------------------------------------------------------------------


def test_item_details(client, demo_lib):
    hello = _id(demo_lib, HELLO)
    body = client.get(f"/api/items/{hello}").json()
    shown = demo_lib.show(hello)
    assert {k: body[k] for k in shown} == json.loads(json.dumps(shown))
    assert body["transcript"] == demo_lib.transcript(hello) and body["transcript"]
    assert "hello" in " ".join(p["text"].lower() for p in body["transcript"])
    assert body["audio_url"] == f"/api/items/{hello}/audio" and body["mime"] == "audio/wav"
    assert "no item" in _error(client.get("/api/items/424242"), 404)


def test_audio_streams_with_ranges(client, demo_lib):
    dog = _id(demo_lib, DOG)
    data = DOG.read_bytes()
    full = client.get(f"/api/items/{dog}/audio")
    assert full.status_code == 200 and full.content == data
    assert full.headers["content-type"] == "audio/ogg" and full.headers["accept-ranges"] == "bytes"
    part = client.get(f"/api/items/{dog}/audio", headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == data[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
    assert part.headers["content-length"] == "1000"
    tail = client.get(f"/api/items/{dog}/audio", headers={"Range": "bytes=-300"})
    assert tail.status_code == 206 and tail.content == data[-300:]
    rest = client.get(f"/api/items/{dog}/audio", headers={"Range": f"bytes={len(data) - 10}-"})
    assert rest.content == data[-10:]
    clipped = client.get(f"/api/items/{dog}/audio", headers={"Range": f"bytes=10-{len(data) + 500}"})
    assert clipped.status_code == 206 and clipped.content == data[10:]
    for bad in (f"bytes={len(data)}-", "bytes=500-100", "bytes=abc", "bytes=-0"):
        resp = client.get(f"/api/items/{dog}/audio", headers={"Range": bad})
        _error(resp, 416)
        assert resp.headers["content-range"] == f"bytes */{len(data)}"
    head = client.head(f"/api/items/{dog}/audio", headers={"Range": "bytes=0-9"})
    assert head.status_code == 206 and head.headers["content-length"] == "10" and head.content == b""
    for path, mime in ((HELLO, "audio/wav"), (FLAC, "audio/flac")):
        got = client.get(f"/api/items/{_id(demo_lib, path)}/audio", headers={"Range": "bytes=0-3"})
        assert got.headers["content-type"] == mime and got.content == path.read_bytes()[:4]
    _error(client.get("/api/items/999999/audio"), 404)


def test_waveform_svg(client, demo_lib):
    whale = _id(demo_lib, DEMO / "nature" / "glacier-bay-humpback.ogg")
    resp = client.get(f"/api/items/{whale}/waveform.svg", params={"start": 55, "end": 60})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("image/svg+xml")
    svg = resp.text
    assert svg.startswith("<svg") and 'class="band"' in svg and svg.count("<rect") > 100
    assert "script" not in svg.lower()
    plain = client.get(f"/api/items/{whale}/waveform.svg").text
    assert 'class="band"' not in plain
    cached = list((demo_lib.data_dir / "cache" / "waveforms").glob("*.npy"))
    assert cached, "peaks are cached on disk by content hash"
    _error(client.get(f"/api/items/{whale}/waveform.svg", params={"start": 9, "end": 3}), 400)
    _error(client.get("/api/items/999999/waveform.svg"), 404)


def test_stats_failures_labels_config(client, demo_lib):
    assert client.get("/api/stats").json() == json.loads(json.dumps(demo_lib.stats()))
    assert client.get("/api/failures").json() == {"total": 0, "failures": []}
    labels = client.get("/api/labels").json()["labels"]
    assert "Dog" in labels and "Speech" in labels
    cfg = client.get("/api/config").json()
    assert cfg["token_required"] is False and cfg["indexing"] is False and cfg["max_upload_mb"] == 20


# -- indexing, paths, tokens ----------------------------------------------------------------------


@pytest.fixture
def guarded(demo_lib, tmp_path):
    root = tmp_path / "allowed"
    (root / "inside").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    app = server.create_app(demo_lib, token="s3cret", allow_roots=[root], warm=False)
    with TestClient(app) as c:
        yield c, root, outside


AUTH = {"Authorization": "Bearer s3cret"}


def test_index_needs_the_token(guarded):
    c, root, _ = guarded
    body = {"paths": [str(root / "inside")]}
    resp = c.post("/api/index", json=body)
    assert "token" in _error(resp, 401) and resp.headers["www-authenticate"].startswith("Bearer")
    _error(c.post("/api/index", json=body, headers={"Authorization": "Bearer nope"}), 403)
    _error(c.post("/api/index", json=body, headers={"Authorization": "Basic czNjcmV0"}), 401)
    assert c.get("/api/config").json()["token_required"] is True
    _error(c.post("/api/jobs/1-abc/cancel"), 401)


def test_index_rejects_paths_outside_the_allowed_roots(guarded):
    c, root, outside = guarded
    cases = {
        "../../etc": 400,  # relative
        str(root / ".." / ".." / "etc"): 403,  # traversal
        "/etc": 403,
        str(root / "escape"): 403,  # symlink leading out
        str(root / "escape" / "sub"): 403,  # under the link
        str(outside): 403,
        str(root / "missing"): 400,
        "": 400,
        "/tmp/\x00evil": 400,
    }
    for path, status in cases.items():
        _error(c.post("/api/index", json={"paths": [path]}, headers=AUTH), status)
    for body in ({"paths": "/etc"}, {"paths": []}, {"nothing": 1}, [1, 2], {"paths": [1]}):
        _error(c.post("/api/index", json=body, headers=AUTH), 400)
    _error(c.post("/api/index", content=b"{not json", headers={**AUTH, "content-type": "application/json"}), 400)
    resp = c.post(
        "/api/index", content=json.dumps({"paths": [str(root)]}), headers={**AUTH, "content-type": "text/plain"}
    )
    assert "JSON" in _error(resp, 415)
    assert c.get("/api/jobs").json() == {"jobs": []}  # nothing was started


def test_index_is_off_without_allowed_roots(client):
    assert "off" in _error(client.post("/api/index", json={"paths": ["/tmp"]}), 403)


def test_index_job_end_to_end_and_symlink_escape(demo_lib, tmp_path):
    """A job started over HTTP indexes a folder; a file symlinked from outside that folder is indexed
    by the walker but never streamed."""
    root = tmp_path / "library"
    (root / "dogs").mkdir(parents=True)
    shutil.copy(DOG, root / "dogs" / "dog.ogg")
    elsewhere = tmp_path / "private"
    elsewhere.mkdir()
    shutil.copy(HELLO, elsewhere / "secret.wav")
    (root / "dogs" / "linked.wav").symlink_to(elsewhere / "secret.wav")
    (root / "dogs" / "broken.wav").write_bytes(b"not audio")
    lib = Library(
        tmp_path / "data", analyzers=demo_lib.analyzers, music_analyzers=demo_lib.music_analyzers, asr_model="none"
    )
    try:
        with TestClient(server.create_app(lib, allow_roots=[root], warm=False)) as c:
            resp = c.post("/api/index", json={"paths": [str(root)]})
            assert resp.status_code == 202, resp.text
            job = resp.json()
            assert resp.headers["location"] == f"/api/jobs/{job['id']}"
            deadline = time.monotonic() + 180
            while job["state"] in ("queued", "scanning", "running") and time.monotonic() < deadline:
                time.sleep(0.3)
                job = c.get(f"/api/jobs/{job['id']}").json()
            assert job["state"] == "done", job
            assert job["done"] == job["total"] == 3 and job["failed"] == 1
            assert job["report"]["indexed"] == 2 and job["speed_x_realtime"] > 0
            assert c.get("/api/jobs").json()["jobs"][0]["id"] == job["id"]
            failures = c.get("/api/failures").json()
            assert failures["total"] == 1 and failures["failures"][0]["path"].endswith("broken.wav")
            assert c.get("/api/stats").json()["items"] == 2
            hits = c.get("/api/search", params={"q": "dog barking", "limit": 5}).json()["results"]
            assert hits[0]["path"] == str(root / "dogs" / "dog.ogg")
            ids = {os.path.basename(r.path): r.id for r in lib.store.catalog.items()}
            ok = c.get(f"/api/items/{ids['dog.ogg']}/audio")
            assert ok.status_code == 200 and ok.content == DOG.read_bytes()
            assert "outside" in _error(c.get(f"/api/items/{ids['linked.wav']}/audio"), 403)
            _error(c.get(f"/api/items/{ids['linked.wav']}/waveform.svg"), 403)
            _error(c.get("/api/jobs/nope"), 404)
            os.remove(root / "dogs" / "dog.ogg")
            assert "gone" in _error(c.get(f"/api/items/{ids['dog.ogg']}/audio"), 404)
    finally:
        lib.close()


# -- the rest -------------------------------------------------------------------------------------


def test_openapi_docs_and_page(client):
    schema = client.get("/openapi.json").json()
    for path in ("/api/search", "/api/similar/{item_id}", "/api/similar", "/api/items/{item_id}/audio", "/api/index"):
        assert path in schema["paths"], path
    assert "multipart/form-data" in schema["paths"]["/api/similar"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'id="q"' in page.text
    for asset in ("app.js", "app.css", "favicon.svg"):
        assert client.get(f"/static/{asset}").status_code == 200
    assert page.headers["x-content-type-options"] == "nosniff"


def test_unknown_routes_and_methods_are_json_errors(client):
    _error(client.get("/api/nothing-here"), 404)
    _error(client.delete("/api/search"), 405)
    _error(client.get("/static/../server.py"), 404)


def test_concurrent_searches_stay_correct(demo_lib):
    """20 clients at once: calls are serialized on the library worker, every answer is right."""
    app = server.create_app(demo_lib, warm=False)
    queries = ["dog barking", "rain", "狗叫", "piano music", "helicopter"] * 4
    want = {q: [r.path for r in demo_lib.search(q, limit=5)] for q in set(queries)}

    async def go() -> list[tuple[str, list[str]]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:

            async def one(q: str) -> tuple[str, list[str]]:
                resp = await c.get("/api/search", params={"q": q, "limit": 5})
                assert resp.status_code == 200
                return q, [r["path"] for r in resp.json()["results"]]

            return await asyncio.gather(*(one(q) for q in queries))

    for q, paths in asyncio.run(go()):
        assert paths == want[q]


def test_host_header_guard(demo_lib):
    app = server.create_app(demo_lib, allowed_hosts=["127.0.0.1", "localhost"], warm=False)
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/api/config").status_code == 200
        assert "Host" in _error(c.get("/api/config", headers={"host": "evil.example:8000"}), 400)


def test_serve_never_listens_beyond_loopback_without_a_token(demo_lib, monkeypatch, capsys):
    import uvicorn

    seen: dict = {}

    def fake_run(app, **kwargs):
        seen["app"], seen["kwargs"] = app, kwargs

    monkeypatch.setattr(uvicorn, "run", fake_run)
    server.serve(demo_lib, host="0.0.0.0", port=9)
    token = seen["app"].state.soundscope.token
    assert token and len(token) >= 20 and token in capsys.readouterr().err
    assert seen["kwargs"]["host"] == "0.0.0.0"
    server.serve(demo_lib, host="127.0.0.1", port=9, token=None)
    st = seen["app"].state.soundscope
    assert st.token is None and st.allow_roots == [os.path.realpath(DEMO)]  # default: the indexed roots
    server.serve(demo_lib, host="192.168.1.5", port=9, token="mine")
    assert seen["app"].state.soundscope.token == "mine"
    assert not demo_lib.store.catalog.conn.in_transaction  # the library given is left open and usable
    assert demo_lib.stats()["items"] > 0


# -- pure helpers ---------------------------------------------------------------------------------


def test_parse_range():
    pr = server.parse_range
    assert pr(None, 100) is None and pr("items=0-5", 100) is None and pr("bytes=0-1,5-6", 100) is None
    assert pr("bytes=0-9", 100) == (0, 9)
    assert pr("bytes=90-", 100) == (90, 99)
    assert pr("bytes=-10", 100) == (90, 99)
    assert pr("bytes=-500", 100) == (0, 99)
    assert pr("bytes=50-5000", 100) == (50, 99)
    for bad in ("bytes=100-", "bytes=5-1", "bytes=x-1", "bytes=-", "bytes=-0", "bytes="):
        with pytest.raises(server.ApiError) as err:
            pr(bad, 100)
        assert err.value.status == 416
    with pytest.raises(server.ApiError):
        pr("bytes=0-0", 0)


def test_sniff_audio(tmp_path):
    for suffix in (".wav", ".flac", ".mp3", ".m4a", ".aiff", ".opus"):
        path = write_audio(tmp_path / f"t{suffix}", tone(440, 0.5), 16000)
        assert server.sniff_audio(path.read_bytes()[:64]) is not None, suffix
    assert server.sniff_audio(DOG.read_bytes()[:64]) == ".ogg"
    for junk in (b"", b"hello world, plain text", b"#EXTM3U\n#EXT-X-VERSION:3\n", b"ffconcat version 1.0\n", b"<html>"):
        assert server.sniff_audio(junk.ljust(16, b" ")) is None


def test_is_loopback():
    assert all(server.is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.8.0.1", "[::1]"))
    assert not any(server.is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.2", "example.com", ""))


def test_waveform_svg_pure():
    peaks = np.abs(np.sin(np.linspace(0, 20, 256))).astype(np.float16)
    svg = server.waveform_svg(peaks, 100.0, start=10, end=20, bars=50)
    assert svg.count("<rect") == 51  # 50 bars + the highlight band
    assert server.waveform_svg(np.zeros(0, np.float16), 0.0).startswith("<svg")
    assert server.pool_peaks(np.arange(10, dtype=np.float32), 5).tolist() == [1, 3, 5, 7, 9]


def test_upload_stream_parser_handles_split_chunks(demo_lib):
    """The multipart parser sees the body in tiny pieces (as from a slow network) and still finds the file."""
    boundary = "----soundscopeboundary"
    body = io.BytesIO()
    body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n'.encode())
    body.write(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="h.wav"\r\n'
        f"Content-Type: audio/wav\r\n\r\n".encode()
    )
    body.write(HELLO.read_bytes())
    body.write(f"\r\n--{boundary}--\r\n".encode())
    raw = body.getvalue()

    def pieces():
        for i in range(0, len(raw), 777):
            yield raw[i : i + 777]

    with TestClient(server.create_app(demo_lib, warm=False)) as c:
        resp = c.post(
            "/api/similar",
            params={"limit": 3},
            content=pieces(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
    assert resp.status_code == 200, resp.text
    assert resp.json()["like"]["upload"] == "h.wav"
    assert resp.json()["results"][0]["path"] == str(HELLO)


def test_a_slow_library_call_does_not_block_the_server(demo_lib):
    """Library calls queue on their worker thread; endpoints that don't need the library answer at once."""
    app = server.create_app(demo_lib, warm=False)
    with TestClient(app) as c:
        app.state.soundscope.lib_worker.submit(time.sleep, 1.5)
        t0 = time.perf_counter()
        assert c.get("/api/config").status_code == 200
        assert time.perf_counter() - t0 < 0.5
        assert c.get("/api/stats").status_code == 200
        assert time.perf_counter() - t0 >= 1.0  # waited its turn behind the slow call
