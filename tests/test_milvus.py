"""The Milvus backend against the real Milvus 2.3.5 standalone server shipped in the ``milvus`` wheel.

One server is started for the module on free loopback ports in a temp dir (never a mock); each test
uses its own collection. The suite's scripts/test.sh installs the ``milvus`` extra, so under CI a
missing install fails instead of skipping.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from soundscope.store import IncompatibleIndexError
from soundscope.store.milvus import (
    LocalMilvus,
    MilvusIndex,
    MilvusUnavailableError,
    collection_name,
    from_uri,
    parse_uri,
)
from tests.conftest import skip_unless_ci

DIM = 1024  # YAMNet's embedding size


def _need_wheel() -> None:
    try:
        import milvus  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError as e:
        skip_unless_ci(f"the milvus extra is not installed (pip install -e '.[milvus]'): {e}")


def _start(path, **kw) -> LocalMilvus:
    _need_wheel()
    server = LocalMilvus(path, **kw)
    try:
        return server.start()
    except OSError as e:  # the wheel's binary cannot run on this platform (not Linux/macOS x86_64, ...)
        skip_unless_ci(f"the Milvus server binary of the milvus wheel cannot run here: {e}")


def _gone(pid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while True:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = _start(tmp_path_factory.mktemp("milvus"))
    yield srv
    pid = srv.pid
    srv.stop()
    assert pid is not None and _gone(pid), "the Milvus server outlived the test module"


def embeddings(n: int, seed: int = 0) -> np.ndarray:
    """L2-normalised float32 rows in 20 Gaussian clusters, like embeddings of a few kinds of sound."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((20, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 20, n)] + rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact(keys: np.ndarray, vecs: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = vecs @ q
    order = np.argsort(-sims, kind="stable")[:k]
    return keys[order], sims[order]


def test_import_is_lazy():
    code = "import sys, soundscope.store, soundscope.store.milvus; print('pymilvus' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_names_and_uris():
    assert collection_name("yamnet") == "soundscope_yamnet"
    assert collection_name("musicnn_msd", "lib2") == "lib2_musicnn_msd"
    odd = collection_name("use-m3.v2")
    assert odd.startswith("soundscope_use_m3_v2_") and odd != collection_name("use_m3.v2")
    assert collection_name("x", "9lib")[0] == "_"
    opts = parse_uri("milvus://db.example:19999/lib?token=root:Milvus&prefix=p&index=ivf_flat&timeout=3")
    assert opts == {
        "uri": "http://db.example:19999",
        "token": "root:Milvus",
        "db_name": "lib",
        "prefix": "p",
        "index": "ivf_flat",
        "timeout": 3.0,
    }
    assert parse_uri("milvus+https://u:pw@h")["uri"] == "https://h:19530"
    assert parse_uri("milvus+https://u:pw@h")["token"] == "u:pw"
    with pytest.raises(ValueError, match="not a Milvus address"):
        parse_uri("postgres://h")
    with pytest.raises(ValueError, match="unknown"):
        parse_uri("milvus://h?colour=red")


def test_round_trip_matches_exact_search(server):
    n = 3000
    vecs = embeddings(n)
    keys = np.arange(n, dtype=np.int64) * 3 + 10**12  # sparse, large int64 keys
    idx = MilvusIndex(server.uri, "t_round_trip", DIM, index="FLAT")
    assert idx.index_type == "FLAT" and idx.dim == DIM and len(idx) == 0 and idx.generation == -1
    assert idx.search(vecs[0], 10)[0].size == 0
    idx.add(keys[:1000], vecs[:1000])
    idx.add(keys[1000:], vecs[1000:])
    assert len(idx) == n  # seen at once: no flush needed
    got, sims = idx.search(vecs[7], 10)
    assert got[0] == keys[7] and sims[0] == pytest.approx(1.0, abs=1e-5)
    qs = embeddings(25, seed=1)
    for q in qs:
        got, sims = idx.search(q, 10)
        want, wsims = exact(keys, vecs, q, 10)
        assert set(got.tolist()) == set(want.tolist())  # recall@10 = 1.0
        assert np.all(np.diff(sims) <= 1e-6), "best first"
        np.testing.assert_allclose(sims, wsims, atol=1e-4)
        assert got.dtype == np.int64 and sims.dtype == np.float32
    many_keys, _ = idx.search_many(qs[:5], 10)
    assert [g.tolist() for g in many_keys] == [idx.search(q, 10)[0].tolist() for q in qs[:5]]
    assert idx.search(vecs[0], 0)[0].size == 0

    gone = keys[::2]
    idx.remove(gone)
    idx.remove(np.array([123], np.int64))  # a key that is not there: no error
    assert len(idx) == n - len(gone)
    got, _ = idx.search(vecs[0], 50)  # vecs[0] itself was removed
    assert not set(got.tolist()) & set(gone.tolist())
    rest = ~np.isin(keys, gone)
    for q in qs[:5]:
        assert set(idx.search(q, 10)[0].tolist()) == set(exact(keys[rest], vecs[rest], q, 10)[0].tolist())
    assert sorted(idx.keys().tolist()) == sorted(keys[rest].tolist())

    three = keys[rest][:3].tolist()
    assert sorted(idx.search(vecs[0], 100, expr=f"key in {three}")[0].tolist()) == three  # m <= k
    with pytest.raises(ValueError, match="1024-d"):
        idx.add(keys[:1], vecs[:1, :100])
    with pytest.raises(ValueError, match="1024-d"):
        idx.search(vecs[0, :100], 5)
    idx.drop()


def test_readd_is_idempotent(server):
    vecs = embeddings(500, seed=2)
    keys = np.arange(500, dtype=np.int64)
    idx = MilvusIndex(server.uri, "t_readd", DIM)
    idx.add(keys, vecs)
    idx.add(keys[:300], vecs[:300])  # a resumed run adds again
    assert len(idx) == 500
    idx.add(np.array([7, 7, 7]), np.stack([vecs[1], vecs[2], vecs[3]]))  # duplicates in one call: last wins
    assert len(idx) == 500
    got, sims = idx.search(vecs[3], 2)
    assert set(got.tolist()) == {3, 7} and sims[1] == pytest.approx(1.0, abs=1e-5)
    idx.save(1)  # sealed segments too: an upsert over flushed rows replaces them
    idx.add(keys, vecs)
    assert len(idx) == 500
    assert sorted(idx.keys().tolist()) == keys.tolist()
    got, sims = idx.search(vecs[7], 2)
    assert got[0] == 7 and sims[1] < 0.999
    idx.add(np.array([7]), vecs[1:2])  # the replacement is what is searched
    got, sims = idx.search(vecs[1], 2)
    assert set(got.tolist()) == {1, 7} and sims[1] == pytest.approx(1.0, abs=1e-5)


def test_filter_expression(server):
    n = 600
    vecs = embeddings(n, seed=3)
    keys = np.arange(n, dtype=np.int64) + 1
    items = keys // 10
    durs = (keys % 7).astype(np.float32)
    kinds = np.where(keys % 3 == 0, "passage", "segment")
    idx = MilvusIndex(server.uri, "t_filter", DIM, index="FLAT")
    idx.add(keys, vecs, item_ids=items, durations=durs, kinds=kinds)
    q = vecs[0]
    got, _ = idx.search(q, 10, expr="item_id in [3, 17, 42]")
    assert len(got) == 10 and set((got // 10).tolist()) <= {3, 17, 42}
    sel = np.isin(items, [3, 17, 42])
    assert got.tolist() == exact(keys[sel], vecs[sel], q, 10)[0].tolist()
    got, _ = idx.search(q, 50, expr="kind == 'passage' and duration > 4.5")
    assert len(got) == 50 and np.all(got % 3 == 0) and np.all(got % 7 > 4)
    assert idx.search(q, 5, expr="item_id == -5")[0].size == 0
    assert sorted(idx.keys(expr="item_id == 2").tolist()) == list(range(20, 30))
    with pytest.raises(ValueError, match="filter"):
        idx.search(q, 5, expr="item_id ==== 3")
    idx.add(keys[:4] + 10_000, vecs[:4], item_ids=999, durations=1.5, kinds="item")  # one value for all rows
    assert sorted(idx.search(q, 10, expr="item_id == 999 and kind == 'item'")[0].tolist()) == [
        10_001,
        10_002,
        10_003,
        10_004,
    ]
    idx.add(keys[:1] + 10_000, vecs[:1])  # an upsert replaces the scalar fields too
    assert sorted(idx.search(q, 10, expr="item_id == 999")[0].tolist()) == [10_002, 10_003, 10_004]


def test_generation_round_trip(server):
    vecs = embeddings(200, seed=4)
    idx = MilvusIndex(server.uri, "t_generation", DIM)
    assert idx.generation == -1 and idx.saved() == {}
    idx.add(np.arange(200), vecs)
    idx.save(7, upto=199, tomb_seq=3, catalog="2026-01-01T00:00:00")
    assert idx.generation == 7
    reader = MilvusIndex(server.uri, "t_generation", DIM)  # another process opening the collection
    assert (reader.generation, reader.upto, reader.tomb_seq, reader.catalog) == (7, 199, 3, "2026-01-01T00:00:00")
    assert reader.index_type == "HNSW"  # "auto" keeps what the collection has
    idx.add(np.array([500]), vecs[:1])  # written after the save: a reader can tell it is behind
    assert reader.refresh() == -1 and reader.generation == -1
    idx.save(8, upto=500)
    assert reader.refresh() == 8 and reader.upto == 500
    with pytest.raises(IncompatibleIndexError, match="1024-d"):
        MilvusIndex(server.uri, "t_generation", 512)
    rebuilt = MilvusIndex(server.uri, "t_generation", DIM, index="IVF_FLAT")  # explicit type: index rebuilt
    assert rebuilt.index_type == "IVF_FLAT" and len(rebuilt) == 201 and rebuilt.generation == 8
    assert rebuilt.search(vecs[5], 1)[0].tolist() == [5]
    rebuilt.clear()
    assert len(rebuilt) == 0 and rebuilt.generation == -1 and rebuilt.refresh() == -1
    via_uri = from_uri(server.uri.replace("http://", "milvus://") + "?prefix=t", "generation", DIM)
    assert via_uri.collection == "t_generation" and len(via_uri) == 0
    via_uri.close()


def test_unreachable_server_is_a_clear_error():
    _need_wheel()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    t = time.monotonic()
    with pytest.raises(MilvusUnavailableError, match=rf"cannot reach Milvus at http://127.0.0.1:{port}"):
        MilvusIndex(f"http://127.0.0.1:{port}", "x", DIM, timeout=2)
    with socket.socket() as silent:  # accepts connections but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(MilvusUnavailableError, match="cannot reach Milvus at"):
            MilvusIndex(uri, "x", DIM, timeout=1)
    assert time.monotonic() - t < 20
    with pytest.raises(ConnectionError):  # MilvusUnavailableError is a ConnectionError
        from_uri(f"milvus://127.0.0.1:{port}?timeout=1", "yamnet", DIM)


def test_two_servers_started_at_once_both_run(tmp_path):
    """Servers started at the same moment (two test runs, two users) take ports the OS hands out, not the
    wheel's fixed defaults: before, both took etcd's 2379 and the second died at startup."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # not tied to the pool's threads: a parent-death signal follows the thread
        servers = list(pool.map(lambda name: _start(tmp_path / name, die_with_parent=False), ["a", "b"]))
    try:
        etcd = [(srv.data_dir / "configs" / "etcd.yaml").read_text().split("listen-client-urls: ")[1].split()[0]
                for srv in servers]  # fmt: skip
        assert servers[0].port != servers[1].port and etcd[0] != etcd[1] and "2379" not in etcd[0] + etcd[1]
        for i, srv in enumerate(servers):
            idx = MilvusIndex(srv.uri, f"t_two_{i}", 4, timeout=30)
            idx.add(np.arange(3), np.eye(3, 4, dtype=np.float32))
            assert list(idx.search(np.eye(3, 4, dtype=np.float32)[1], 1)[0]) == [1]
    finally:
        for srv in servers:
            srv.stop()


def test_a_port_taken_before_the_server_binds_it_is_retried_with_fresh_ports(tmp_path, monkeypatch):
    """A server that lost its metrics port used to run on without it and never report healthy (120 s, then
    an error: the CI failure of stop 25). Here the first draw hands it a port another socket holds."""
    from soundscope.store import milvus as mod

    _need_wheel()
    taken = socket.socket()
    taken.bind(("", 0))
    taken.listen()
    draws: list[list[int]] = []

    def draw(n: int) -> list[int]:
        ports = real(n)
        if not draws:
            ports[-1] = taken.getsockname()[1]  # the metrics port: the one Milvus only logs a failure for
        draws.append(ports)
        return ports

    real = mod._free_ports
    monkeypatch.setattr(mod, "_free_ports", draw)
    t0 = time.monotonic()
    srv = _start(tmp_path / "m", startup_timeout=60)
    try:
        assert len(draws) == 2 and srv.metrics_port == draws[1][-1] != taken.getsockname()[1]
        assert time.monotonic() - t0 < 50, "the clash was found by waiting out the timeout, not from the log"
        assert "bind: address already in use" in (tmp_path / "m" / "logs" / "milvus.log").read_text()
        idx = MilvusIndex(srv.uri, "t_retry", 4, timeout=30)
        idx.add(np.arange(2), np.eye(2, 4, dtype=np.float32))
        assert list(idx.search(np.eye(2, 4, dtype=np.float32)[0], 1)[0]) == [0]
    finally:
        srv.stop()
        taken.close()


def test_free_ports_are_distinct_outside_the_ephemeral_range_and_never_handed_out_twice():
    from concurrent.futures import ThreadPoolExecutor

    from soundscope.store.milvus import _ephemeral_range, _free_ports

    with ThreadPoolExecutor(4) as pool:
        draws = list(pool.map(_free_ports, [12] * 8))
    ports = [p for d in draws for p in d]
    assert len(ports) == len(set(ports)) == 96
    lo, _ = _ephemeral_range()
    assert all(p < lo for p in ports) if lo > 11_000 else True
    assert not set(_free_ports(12)) & set(ports)


def test_stop_kills_the_server_and_calls_then_fail(tmp_path):
    srv = _start(tmp_path / "m")
    idx = MilvusIndex(srv.uri, "t_stop", 4, timeout=3)
    idx.add(np.arange(3), np.eye(3, 4, dtype=np.float32))
    pid = srv.pid
    srv.stop()
    assert _gone(pid), "stop() left the server's process group running"
    with pytest.raises(MilvusUnavailableError, match="cannot reach Milvus"):
        idx.search(np.ones(4, np.float32), 2)
    srv.stop()  # idempotent


def test_server_dies_with_a_killed_parent(tmp_path):
    _need_wheel()
    code = textwrap.dedent(
        f"""
        import sys, time
        from soundscope.store.milvus import LocalMilvus
        srv = LocalMilvus({str(tmp_path / "m")!r}).start()
        print(srv.pid, flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), f"server did not start: {line!r}"
        pid = int(line)
        proc.send_signal(signal.SIGKILL)  # no atexit, no finally: only the kernel can clean up
        proc.wait(timeout=30)
        assert _gone(pid), "the Milvus server outlived its SIGKILLed parent"
    finally:
        proc.kill()
        proc.wait()
        if pid is not None and not _gone(pid, within=0):
            os.killpg(pid, signal.SIGKILL)


def test_library_on_milvus_answers_like_the_embedded_store(server, demo_lib, tmp_path):
    """The same catalog with its vector indexes on the real Milvus server (``--store milvus://``): the demo
    queries give the same top 3 as the embedded store, query by example too, and a new item or a
    deletion is seen before and after the writer folds it in."""
    import shutil

    from soundscope.api import Library
    from soundscope.store import Store

    data = tmp_path / "lib"
    shutil.copytree(demo_lib.data_dir, data, ignore=shutil.ignore_patterns("vectors", "*.lock"))
    uri = server.uri.replace("http://", "milvus://")
    with Store(data, vector_store=uri) as store:
        store.flush(force=True)  # every vector space into its collection
        live = store.vectors("yamnet")
        assert live.stale == 0 and len(live) == len(demo_lib.store.vectors("yamnet"))
        assert type(live.base).__name__ == "MilvusIndex"
    queries = ["dog barking", "狗叫", "piano music", "下雨的声音", "someone speaking", "没有人声的钢琴曲"]
    with Library(data, vector_store=uri, create=False) as lib:
        for q in queries:
            assert [r.path for r in lib.search(q, limit=3)] == [r.path for r in demo_lib.search(q, limit=3)], q
        first = demo_lib.search("rain", limit=1)[0].item_id
        want = [r.item_id for r in demo_lib.similar(first, limit=3)]
        assert [r.item_id for r in lib.similar(first, limit=3)] == want
        lib.store.catalog.delete_items([want[0]])  # seen at once through the tombstones, then folded in
        assert want[0] not in [r.item_id for r in lib.similar(first, limit=3)]
        lib.store.flush(force=True)
        assert want[0] not in [r.item_id for r in lib.similar(first, limit=3)]
        assert lib.store.vectors("yamnet").stale == 0
