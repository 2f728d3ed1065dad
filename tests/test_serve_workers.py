"""``soundscope serve --workers N`` (reads from several processes) and ``--read-token`` (reads need a
token; the page carries it from the printed ``/#token=`` address as a cookie)."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from soundscope import server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_read_token_guards_every_read_but_the_page_and_its_config(demo_lib):
    app = server.create_app(demo_lib, token="wr1te", read_token="r3ad", warm=False)
    with TestClient(app) as c:
        assert c.get("/").status_code == 200  # the page itself holds no data
        config = c.get("/api/config")
        assert config.status_code == 200 and config.json()["read_token_required"] is True
        denied = c.get("/api/search", params={"q": "dog"})
        assert denied.status_code == 401 and "read token" in denied.json()["error"]
        assert c.get("/api/stats").status_code == 401
        assert c.get("/api/search", params={"q": "dog"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = c.get("/api/search", params={"q": "dog"}, headers={"Authorization": "Bearer r3ad"})
        assert ok.status_code == 200 and ok.json()["results"]
        item = ok.json()["results"][0]["id"]
        assert c.get("/api/stats", headers={"Authorization": "Bearer wr1te"}).status_code == 200  # writers read
        c.cookies.set("soundscope_token", "r3ad")  # what the page sets: <audio> and <img> send no header
        assert c.get(f"/api/items/{item}/audio", headers={"Range": "bytes=0-99"}).status_code == 206
        assert c.get(f"/api/items/{item}/waveform.svg").status_code == 200
    js = (ROOT / "src" / "soundscope" / "web" / "app.js").read_text()
    assert "location.hash" in js and "soundscope_token=" in js  # the page turns /#token=... into the cookie


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(x) for x in (task / "children").read_text().split()]
    return out


def test_two_worker_processes_answer_reads_in_parallel(demo_lib):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "soundscope.cli", "serve", "--data-dir", str(demo_lib.data_dir), "--port", str(port),
           "--workers", "2", "--read-token", "r3ad", "--asr-model", "none"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": "Bearer r3ad"}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/api/search", params={"q": "rain"}, headers=auth, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.3)
        assert httpx.get(f"{base}/api/search", params={"q": "rain"}, timeout=5).status_code == 401  # passed on
        def search(q: str) -> int:
            return httpx.get(f"{base}/api/search", params={"q": q}, headers=auth, timeout=60).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(search, ["dog", "rain", "狗叫", "piano"] * 10))
        assert codes == [200] * 40
        pythons = [c for c in _children(proc.pid) if "python" in Path(f"/proc/{c}/exe").resolve().name]
        assert len(pythons) >= 2, pythons  # uvicorn's worker processes (each its own library, WAL reader)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
