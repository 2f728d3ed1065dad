"""Milvus vector index: the scale-out backend behind the :class:`~.vectors.VectorIndex` protocol.

One collection per embedding space (``<prefix>_<space>``, see :func:`collection_name`) holds

    key       INT64 primary key: our segment, item or passage id
    vector    FLOAT_VECTOR(dim), COSINE metric (vectors are L2-normalised float32 rows)
    item_id   INT64    the item a row belongs to (-1 when not given)
    duration  FLOAT    seconds (0 when not given)
    kind      VARCHAR  "segment", "item", "passage" ("" when not given)

The scalar fields exist so that :meth:`MilvusIndex.search` can take a Milvus boolean filter
(``expr="item_id in [3, 4] and duration > 2"``) that is applied inside the ANN search. ``add`` is an
upsert (a resumed run never duplicates a key); searches run at Session consistency (this client sees
its own writes at once: a search right after ``add`` finds the rows; another process sees them within
the server's time tick, 200 ms by default) and counts at Strong consistency; ``save`` flushes and
records the catalog generation and watermarks in the collection's properties, so a reader can tell
whether the collection is behind the catalog.

Verified against the Milvus 2.3.5 standalone server that the ``milvus`` wheel ships (run by
:class:`LocalMilvus`) with pymilvus 3.0.2; the same client code talks to a Milvus cluster. pymilvus is
imported lazily: nothing here is loaded unless a Milvus backend is configured. Milvus 2.3 has no
float16 vectors that work, no hybrid (multi-vector) search and no BM25 full-text search: text search
stays in SQLite FTS5.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import IncompatibleIndexError

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "soundscope"
DEFAULT_TIMEOUT = 10.0  # seconds for connecting and for each call (pymilvus retries within it)
SLOW_TIMEOUT = 900.0  # seconds for the calls that wait on background work, below
# create_collection with a schema and index also loads the collection (it waits like load_collection)
SLOW_CALLS = frozenset(
    {"flush", "load_collection", "create_collection", "create_index", "release_collection", "drop_index"}
)
MAX_TOPK = 16_384  # Milvus' limit on k (and on one query page)
BATCH_BYTES = 8 << 20  # rows per upsert request: well under the gRPC and proxy message limits
DELETE_BATCH = 8_192  # keys per delete expression
KIND_MAX = 64
META_PROPERTY = "soundscope.meta"

# index name -> (build params, search params); "auto" is HNSW (the embedded default is IVF-SQ8, store/ivf.py)
INDEXES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "FLAT": ({}, {}),
    "IVF_FLAT": ({"nlist": 1024}, {"nprobe": 8}),
    "IVF_SQ8": ({"nlist": 1024}, {"nprobe": 8}),
    "HNSW": ({"M": 16, "efConstruction": 128}, {"ef": 64}),
}
AUTO_INDEX = "HNSW"


class MilvusUnavailableError(ConnectionError):
    """The Milvus server cannot be reached (not running, wrong address, or not answering in time)."""


def collection_name(space: str, prefix: str = DEFAULT_PREFIX) -> str:
    """``<prefix>_<space>`` made a valid Milvus name (letters, digits, ``_``; a letter or ``_`` first).
    When the space had to be changed, a short hash of it is appended so two spaces never collide."""
    raw = f"{prefix}_{space}" if prefix else space
    name = re.sub(r"[^0-9A-Za-z_]", "_", raw)
    if not re.match(r"[A-Za-z_]", name):
        name = "_" + name
    if name != raw:
        name = f"{name}_{zlib.crc32(raw.encode()):08x}"
    if len(name) > 255:
        name = f"{name[:246]}_{zlib.crc32(raw.encode()):08x}"
    return name


def parse_uri(uri: str) -> dict[str, Any]:
    """``milvus://[user:password@]host[:port][/db]?token=...&db=...&prefix=...&index=...&timeout=...``
    -> keyword arguments for :class:`MilvusIndex` plus ``prefix``. ``milvus+https://`` (or ``milvuss://``)
    is TLS; ``http(s)://`` addresses are passed through. The default port is 19530."""
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("milvus", "milvus+http"):
        http = "http"
    elif scheme in ("milvus+https", "milvuss", "https"):
        http = "https"
    elif scheme == "http":
        http = "http"
    else:
        raise ValueError(f"not a Milvus address: {uri!r} (expected milvus://host:19530)")
    if not parts.hostname:
        raise ValueError(f"no host in Milvus address {uri!r}")
    query = dict(urllib.parse.parse_qsl(parts.query))
    token = query.pop("token", None)
    if token is None and parts.username:
        token = urllib.parse.unquote(parts.username) + ":" + urllib.parse.unquote(parts.password or "")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    out: dict[str, Any] = {
        "uri": f"{http}://{host}:{parts.port or 19530}",
        "token": token or None,
        "db_name": query.pop("db", None) or parts.path.strip("/") or "",
        "prefix": query.pop("prefix", DEFAULT_PREFIX),
    }
    if "index" in query:
        out["index"] = query.pop("index")
    if "timeout" in query:
        out["timeout"] = float(query.pop("timeout"))
    if query:
        raise ValueError(f"unknown Milvus address option(s) {sorted(query)} in {uri!r}")
    return out


def from_uri(uri: str, space: str, dim: int, **overrides: Any) -> MilvusIndex:
    """The index of ``space`` at a ``milvus://host:19530?token=...`` address (see :func:`parse_uri`)."""
    opts = {**parse_uri(uri), **overrides}
    prefix = opts.pop("prefix")
    return MilvusIndex(opts.pop("uri"), collection_name(space, prefix), dim, **opts)


class MilvusIndex:
    """Cosine nearest-neighbour index of one embedding space in a Milvus collection.

    ``index``: "auto" (HNSW for a new collection, whatever an existing one has), "FLAT" (exact),
    "IVF_FLAT", "IVF_SQ8" or "HNSW"; an existing collection built with another explicit type has its
    index rebuilt. ``search_params`` overrides the per-type search settings (``nprobe``, ``ef``).
    ``consistency`` of searches: "Session" (default: read your own writes), "Strong" (also every other
    client's, at the cost of waiting for the next time tick), "Bounded" or "Eventually"."""

    def __init__(
        self,
        uri: str,
        collection: str,
        dim: int,
        *,
        token: str | None = None,
        index: str = "auto",
        db_name: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        index_params: dict[str, Any] | None = None,
        search_params: dict[str, Any] | None = None,
        consistency: str = "Session",
    ) -> None:
        index = index.upper() if index.lower() != "auto" else "auto"
        if index != "auto" and index not in INDEXES:
            raise ValueError(f"unknown Milvus index type {index!r}; one of auto, {', '.join(INDEXES)}")
        if int(dim) <= 0:
            raise ValueError(f"dim must be positive, not {dim}")
        self.uri = uri
        self.collection = collection
        self.dim = int(dim)
        self.timeout = float(timeout)
        self.consistency = consistency  # of searches; Strong waits for the next time tick (200-400 ms)
        self.generation = -1
        self.upto = 0  # highest key the saved collection has seen (as IvfIndex)
        self.tomb_seq = 0  # catalog tombstones applied up to this sequence number
        self.catalog = ""  # the catalog it was built from (its created_at)
        self.view = False
        self._client = self._connect(token, db_name)
        try:
            self.index_type = self._open(index, index_params or {})
            self._search_params = {**INDEXES.get(self.index_type, ({}, {}))[1], **(search_params or {})}
            self.refresh()
        except BaseException:
            self.close()
            raise

    # -- connection -------------------------------------------------------------------------------

    def _connect(self, token: str | None, db_name: str) -> Any:
        try:
            from pymilvus import MilvusClient
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("the Milvus backend needs pymilvus: pip install 'soundscope[milvus]'") from e
        if not os.environ.get("SOUNDSCOPE_MILVUS_DEBUG"):
            # pymilvus logs every failed call with a traceback (its import configures that); the errors
            # raised here say what failed. SOUNDSCOPE_MILVUS_DEBUG=1 keeps its logs.
            for name in ("pymilvus", "pymilvus.milvus_client"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
        try:
            return MilvusClient(uri=self.uri, token=token or "", db_name=db_name, timeout=self.timeout)
        except Exception as e:
            raise MilvusUnavailableError(
                f"cannot reach Milvus at {self.uri} (timeout {self.timeout:g} s): {_reason(e)}"
            ) from e

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``self._client.<method>(...)`` with the timeout (longer for calls that wait on the server's
        background work: flush, load, index build); lost connections become MilvusUnavailableError."""
        if self._client is None:
            raise MilvusUnavailableError(f"the connection to Milvus at {self.uri} is closed")
        timeout = max(self.timeout, SLOW_TIMEOUT) if method in SLOW_CALLS else self.timeout
        try:
            return getattr(self._client, method)(*args, timeout=timeout, **kwargs)
        except Exception as e:
            if _unavailable(e):
                raise MilvusUnavailableError(
                    f"cannot reach Milvus at {self.uri} ({method}, timeout {timeout:g} s): {_reason(e)}"
                ) from e
            raise

    def close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def __enter__(self) -> MilvusIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- collection -------------------------------------------------------------------------------

    def _open(self, index: str, index_params: dict[str, Any]) -> str:
        """Create the collection (and its index) if missing, check an existing one, load it; -> index type."""
        if not self._call("has_collection", self.collection):
            index = AUTO_INDEX if index == "auto" else index
            self._create(index, index_params)
            return index
        info = self._call("describe_collection", self.collection)
        fields = {f["name"]: f for f in info.get("fields", [])}
        vec = fields.get("vector")
        want = {"key", "vector", "item_id", "duration", "kind"}
        if vec is None or not want <= set(fields) or not fields["key"].get("is_primary"):
            raise IncompatibleIndexError(
                f"Milvus collection {self.collection!r} at {self.uri} was not made by soundscope "
                f"(fields {sorted(fields)}); drop it or use another prefix"
            )
        dim = int(vec.get("params", {}).get("dim", -1))
        if dim != self.dim:
            raise IncompatibleIndexError(
                f"Milvus collection {self.collection!r} holds {dim}-d vectors, not {self.dim}-d: "
                "it was built by another model; drop it or use another prefix"
            )
        current = self._index_info()
        if current is None:  # a collection whose index was dropped
            index = AUTO_INDEX if index == "auto" else index
            self._build_index(index, index_params, rebuild=False)
        else:
            if current.get("metric_type") != "COSINE":
                raise IncompatibleIndexError(
                    f"Milvus collection {self.collection!r} uses metric {current.get('metric_type')}, not COSINE"
                )
            have = str(current.get("index_type", "")).upper()
            if index not in ("auto", have):
                self._build_index(index, index_params, rebuild=True)
            else:
                index = have  # may be a type set up by an administrator (DISKANN, AUTOINDEX, ...)
        self._ensure_loaded()
        return index

    def _schema_and_index(self, index: str, index_params: dict[str, Any]) -> tuple[Any, Any]:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description="soundscope")
        schema.add_field("key", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("item_id", DataType.INT64)
        schema.add_field("duration", DataType.FLOAT)
        schema.add_field("kind", DataType.VARCHAR, max_length=KIND_MAX)
        return schema, self._index_params(index, index_params)

    def _index_params(self, index: str, index_params: dict[str, Any]) -> Any:
        params = self._client.prepare_index_params()
        params.add_index(
            field_name="vector",
            index_name="vector",
            index_type=index,
            metric_type="COSINE",
            params={**INDEXES[index][0], **index_params},
        )
        return params

    def _create(self, index: str, index_params: dict[str, Any]) -> None:
        schema, params = self._schema_and_index(index, index_params)
        try:
            self._call(
                "create_collection", self.collection, schema=schema, index_params=params, consistency_level="Session"
            )
        except MilvusUnavailableError:
            raise
        except Exception:
            if not self._call("has_collection", self.collection):  # another process may have won the race
                raise
        self._ensure_loaded()

    def _index_info(self) -> dict[str, Any] | None:
        names = self._call("list_indexes", self.collection, field_name="vector")
        return self._call("describe_index", self.collection, names[0]) if names else None

    def _build_index(self, index: str, index_params: dict[str, Any], *, rebuild: bool) -> None:
        if rebuild:
            self._call("release_collection", self.collection)
            for name in self._call("list_indexes", self.collection, field_name="vector"):
                self._call("drop_index", self.collection, name)
        self._call("create_index", self.collection, self._index_params(index, index_params))

    def _ensure_loaded(self) -> None:
        state = str(self._call("get_load_state", self.collection).get("state", ""))
        if not state.endswith("Loaded"):
            self._call("load_collection", self.collection)  # waits until loaded

    def rebuild_index(
        self, index: str, index_params: dict[str, Any] | None = None, search_params: dict[str, Any] | None = None
    ) -> None:
        """Replace the ANN index (type and build parameters), then reload: searches fail until loaded."""
        index = index.upper()
        if index not in INDEXES:
            raise ValueError(f"unknown Milvus index type {index!r}; one of {', '.join(INDEXES)}")
        self._build_index(index, index_params or {}, rebuild=True)
        self._ensure_loaded()
        self.index_type = index
        self._search_params = {**INDEXES[index][1], **(search_params or {})}

    def index_progress(self) -> tuple[int, int]:
        """(rows indexed, rows in sealed segments): Milvus builds the ANN index per sealed segment in the
        background; rows not yet indexed (and growing segments) are searched by brute force meanwhile."""
        info = self._index_info() or {}
        return int(info.get("indexed_rows", 0)), int(info.get("total_rows", 0))

    def wait_indexed(self, timeout: float = 600.0) -> bool:
        """Wait until every sealed row is indexed (call after :meth:`save`); -> whether it was in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self._index_info() or {}
            if int(info.get("pending_index_rows", 0)) == 0 and info.get("indexed_rows") == info.get("total_rows"):
                return True
            time.sleep(0.5)
        return False

    def drop(self) -> None:
        """Delete the collection and everything in it (then this object is closed)."""
        self._call("drop_collection", self.collection)
        self.close()

    def clear(self) -> None:
        """Remove every row and forget the saved generation (for a rebuild from the catalog). The new
        collection gets the same index type (HNSW if it was one soundscope does not make)."""
        self._call("drop_collection", self.collection)
        self.index_type = self.index_type if self.index_type in INDEXES else AUTO_INDEX
        self._create(self.index_type, {})
        self.generation, self.upto, self.tomb_seq, self.catalog = -1, 0, 0, ""

    # -- VectorIndex ------------------------------------------------------------------------------

    def __len__(self) -> int:
        res = self._call("query", self.collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
        return int(res[0]["count(*)"]) if res else 0

    def add(
        self,
        keys: np.ndarray,
        vectors: np.ndarray,
        *,
        item_ids: np.ndarray | int | None = None,
        durations: np.ndarray | float | None = None,
        kinds: np.ndarray | list[str] | str | None = None,
    ) -> None:
        """Upsert rows: a key already present is replaced, never duplicated (within a call the last
        occurrence of a key wins). Optional per-row (or one for all) scalar fields for filters."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        n = len(keys)
        if n == 0:
            return
        vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(n, -1))
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vectors are {vectors.shape[1]}-d, the index is {self.dim}-d")
        items = np.broadcast_to(np.asarray(-1 if item_ids is None else item_ids, np.int64), (n,))
        durs = np.broadcast_to(np.asarray(0.0 if durations is None else durations, np.float32), (n,))
        kind = np.broadcast_to(np.asarray("" if kinds is None else kinds, dtype=object), (n,))
        if any(len(str(k)) > KIND_MAX for k in set(kind.tolist())):
            raise ValueError(f"a kind is longer than {KIND_MAX} characters")
        # last occurrence of each key wins: Milvus does not deduplicate inside one request
        _, last = np.unique(keys[::-1], return_index=True)
        pick = np.sort(n - 1 - last)
        step = max(1, BATCH_BYTES // (4 * self.dim + 64))
        for lo in range(0, len(pick), step):
            sel = pick[lo : lo + step]
            rows = [
                {"key": k, "vector": v, "item_id": i, "duration": d, "kind": str(t)}
                for k, v, i, d, t in zip(
                    keys[sel].tolist(),
                    vectors[sel],
                    items[sel].tolist(),
                    durs[sel].tolist(),
                    kind[sel].tolist(),
                    strict=True,
                )
            ]
            self._call("upsert", self.collection, rows)

    def remove(self, keys: np.ndarray) -> None:
        keys = np.unique(np.asarray(keys, dtype=np.int64).reshape(-1))
        for lo in range(0, len(keys), DELETE_BATCH):
            self._call("delete", self.collection, filter=f"key in {keys[lo : lo + DELETE_BATCH].tolist()}")

    def search(self, query: np.ndarray, k: int, *, expr: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(dim,) query -> (keys (m,), cosine similarities (m,)), best first, m <= k. ``expr``: a Milvus
        boolean filter over ``key``, ``item_id``, ``duration``, ``kind`` (e.g. ``"kind == 'segment'"``)."""
        keys, sims = self.search_many(np.asarray(query, np.float32).reshape(1, -1), k, expr=expr)
        return keys[0], sims[0]

    def search_many(
        self, queries: np.ndarray, k: int, *, expr: str | None = None
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(n, dim) queries in one request -> n (keys, cosine similarities) pairs, as :meth:`search`."""
        q = np.asarray(queries, dtype=np.float32)
        q = q.reshape(len(q), -1) if q.ndim > 1 else q.reshape(1, -1)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries are {q.shape[1]}-d, the index is {self.dim}-d")
        if k <= 0 or len(q) == 0:
            return [np.zeros(0, np.int64)] * len(q), [np.zeros(0, np.float32)] * len(q)
        k = min(int(k), MAX_TOPK)
        params = dict(self._search_params)
        if "ef" in params:
            params["ef"] = max(int(params["ef"]), k)
        try:
            res = self._call(
                "search",
                self.collection,
                data=[row for row in q],
                limit=k,
                filter=expr or "",
                output_fields=[],
                search_params={"metric_type": "COSINE", "params": params},
                consistency_level=self.consistency,
            )
        except MilvusUnavailableError:
            raise
        except Exception as e:
            if expr:
                raise ValueError(f"Milvus rejected the search filter {expr!r}: {_reason(e)}") from e
            raise
        keys = [np.fromiter((h["id"] for h in hits), np.int64, len(hits)) for hits in res]
        sims = [np.fromiter((h["distance"] for h in hits), np.float32, len(hits)) for hits in res]
        return keys, sims

    def keys(self, *, expr: str | None = None) -> np.ndarray:
        """(n,) every key held (or those matching ``expr``), in no particular order."""
        it = self._call(
            "query_iterator",
            self.collection,
            batch_size=MAX_TOPK,
            filter=expr or "",
            output_fields=["key"],
            consistency_level="Strong",
        )
        out: list[np.ndarray] = []
        try:
            while True:
                page = it.next()
                if not page:
                    break
                out.append(np.fromiter((r["key"] for r in page), np.int64, len(page)))
        finally:
            it.close()
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def writable(self) -> MilvusIndex:
        return self

    # -- generation -------------------------------------------------------------------------------

    def save(self, generation: int, *, upto: int = 0, tomb_seq: int = 0, catalog: str = "") -> None:
        """Flush (seal and persist what was added) and record, in the collection's properties, the catalog
        generation and watermarks this collection now reflects, with its row count."""
        self._call("flush", self.collection)
        info = {
            "generation": int(generation),
            "count": len(self),
            "dim": self.dim,
            "upto": int(upto),
            "tomb_seq": int(tomb_seq),
            "catalog": catalog,
        }
        self._call("alter_collection_properties", self.collection, properties={META_PROPERTY: json.dumps(info)})
        self.generation, self.upto, self.tomb_seq, self.catalog = generation, int(upto), int(tomb_seq), catalog

    def saved(self) -> dict[str, Any]:
        """What the last :meth:`save` (by any process) recorded, {} if none."""
        props = self._call("describe_collection", self.collection).get("properties") or {}
        try:
            info = json.loads(props.get(META_PROPERTY, "{}"))
        except ValueError:
            return {}
        return info if isinstance(info, dict) else {}

    def refresh(self) -> int:
        """Re-read the saved generation and watermarks (another process may have saved since); -> generation.
        A collection changed after its last save (row count differs) reads as generation -1: behind."""
        info = self.saved()
        try:
            ok = int(info.get("dim", -1)) == self.dim and int(info["count"]) == len(self)
            if ok:
                self.generation = int(info["generation"])
                self.upto, self.tomb_seq = int(info.get("upto", -1)), int(info.get("tomb_seq", -1))
                self.catalog = str(info.get("catalog", ""))
                return self.generation
        except (KeyError, TypeError, ValueError):
            pass
        self.generation, self.upto, self.tomb_seq, self.catalog = -1, 0, 0, ""
        return -1


def _reason(e: BaseException) -> str:
    """One line saying why a pymilvus or gRPC call failed."""
    code, details = getattr(e, "code", None), getattr(e, "details", None)
    if callable(code) and callable(details):  # grpc.RpcError
        with contextlib.suppress(Exception):
            return f"{code().name}: {details()}"
    message = getattr(e, "message", None)
    text = str(message if message else e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _unavailable(e: BaseException) -> bool:
    """Whether a pymilvus error means the server is gone or not answering (rather than a bad request)."""
    text = f"{type(e).__name__} {e}".lower()
    code = getattr(e, "code", None)
    return (
        code in (1, 2)  # pymilvus: UNEXPECTED_ERROR from a dead channel, CONNECT_FAILED
        and any(s in text for s in ("unavailable", "connect", "deadline", "timeout", "retry"))
    ) or any(s in text for s in ("statuscode.unavailable", "deadline_exceeded", "fail connecting", "retry timeout"))


# -- the embedded standalone server of the ``milvus`` wheel ---------------------------------------


def _cache_dir() -> Path:
    env = os.environ.get("SOUNDSCOPE_MILVUS_CACHE")
    if env:
        return Path(env).expanduser()
    import milvus

    from ..text import cache_dir

    return cache_dir() / f"milvus-{milvus.__version__}"


def _binaries() -> Path:
    """The wheel's server binary and libraries, decompressed once into a cache (about 250 MB); -> bin dir."""
    import fcntl

    import milvus

    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two starters never write the same files
        milvus._initialize_data_files(str(cache))  # skips files whose checksum matches
    return cache / "bin"


LOCAL_COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


PORT_LOW = 10_000  # listening ports are drawn from here up to the start of the OS's ephemeral range
_PORT_LOCK = threading.Lock()
_HANDED: set[int] = set()  # ports this process gave a server: two threads never get the same one


def _ephemeral_range() -> tuple[int, int]:
    """The OS's range for outgoing connections' local ports (Linux; the IANA range elsewhere)."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 49_152, 65_535


def _free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports, free on every interface a moment ago, none handed out before by this process.

    They are drawn at random below the OS's ephemeral range: a port the OS hands out (bind to 0) may
    be taken by any process's next outgoing connection before the server binds it, and a running Milvus
    opens many (a second server started beside it lost its metrics port that way and never reported
    healthy). All ``n`` sockets are held until the draw ends, so the ports differ from each other."""
    lo, _ = _ephemeral_range()
    low, high = (PORT_LOW, lo - 1) if lo - PORT_LOW >= 1_000 else (lo, 65_535)
    rng = random.SystemRandom()
    held: list[socket.socket] = []
    with _PORT_LOCK:
        try:
            for _ in range(50 * n):
                if len(held) == n:
                    break
                port = rng.randint(low, high)
                if port in _HANDED:
                    continue
                sock = socket.socket()
                try:
                    sock.bind(("", port))
                except OSError:
                    sock.close()
                    continue
                _HANDED.add(port)
                held.append(sock)
            if len(held) < n:
                raise OSError(f"found only {len(held)} of {n} free TCP ports in {low}-{high}")
            return [int(sock.getsockname()[1]) for sock in held]
        finally:
            for sock in held:
                sock.close()


class PortTakenError(OSError):
    """A port chosen for the local server was taken by another process before the server bound it."""


class LocalMilvus:
    """The real Milvus standalone server shipped in the ``milvus`` wheel, run as a child process with its
    data under ``data_dir``, reached (and its components reaching each other) over loopback; it needs no
    other network. Milvus 2.3 binds its ports on every interface: firewall them on a shared host. For
    tests, benchmarks and single-machine use::

        with LocalMilvus(tmp) as server:
            index = MilvusIndex(server.uri, "soundscope_yamnet", 1024)

    The server runs in its own process group; :meth:`stop` kills the whole group (SIGTERM, then SIGKILL
    after ``grace`` seconds: a 2.3 server often ignores SIGTERM), and is also run at interpreter exit. With
    ``die_with_parent`` (Linux) the kernel kills the server when the thread that started it ends, so even
    a SIGKILLed test run leaves no server behind: start it from the main thread."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        startup_timeout: float = 120.0,
        attempts: int = 3,
        extra_config: dict[str, Any] | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.die_with_parent = die_with_parent
        self.port = port
        self.fixed_port = port  # the proxy port the caller asked for (None: drawn at each start)
        self.startup_timeout = startup_timeout
        self.attempts = max(1, attempts)
        self.extra_config = dict(extra_config or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self._log_scanned = 0  # logs/milvus.log up to here is scanned for a port taken (this start's lines)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> LocalMilvus:
        """Start the server and wait until it reports healthy. A start whose port another process took
        in the meantime is retried with fresh ports, up to ``attempts`` times (ports the caller fixed stay)."""
        import atexit

        if self.proc is not None:
            return self
        bin_dir = _binaries()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        state = self.data_dir / "data"  # etcd's and the message queue's files
        fresh = not state.exists() or not any(state.iterdir())
        atexit.register(self.stop)
        for attempt in range(1, self.attempts + 1):
            try:
                self._start_once(bin_dir)
                return self
            except PortTakenError as e:
                self.stop()
                if attempt == self.attempts:
                    raise
                logger.info("Milvus start %d of %d: %s; retrying with fresh ports", attempt, self.attempts, e)
                if fresh:  # the killed start's sessions would hold the next one up for their ~60 s lease
                    shutil.rmtree(state, ignore_errors=True)
            except BaseException:
                self.stop()
                raise
        return self  # pragma: no cover - the loop returns or raises

    def _configure(self) -> None:
        """Write ``<data_dir>/configs`` with fresh ports for every listener (the proxy's stays when fixed)."""
        from milvus import MilvusServerConfig

        fixed = self.fixed_port
        cfg = MilvusServerConfig(data_dir=str(self.data_dir), **({"proxy_port": fixed} if fixed else {}))
        # The wheel looks for free ports upwards from fixed defaults (2379 for etcd, 19530, ...), so two
        # servers started at once picked the same ones and the second died ("bind: address already in
        # use"). Every listener gets a port drawn by _free_ports instead.
        keys = [key for key in cfg.configurable_items if key.endswith("_port") and not (key == "proxy_port" and fixed)]
        ports = _free_ports(len(keys) + 2)
        for key, port in zip(keys, ports, strict=False):
            cfg.set(key, port)
        # components talk to each other over loopback (the default is the first non-loopback address)
        loopback = {f"{c}.ip": "127.0.0.1" for c in LOCAL_COMPONENTS}
        for key, value in {**loopback, **self.extra_config}.items():
            cfg.set(key, value)
        try:
            cfg.resolve()  # checks the ports are free, writes <data_dir>/configs/milvus.yaml
        except RuntimeError as e:  # "set etcd_port=..., but bind failed": taken since the draw
            if "bind failed" in str(e) and not (fixed and f"={fixed}," in str(e)):
                raise PortTakenError(str(e)) from e
            raise
        self.port = int(cfg.get("proxy_port"))
        self.metrics_port = ports[-1]
        self._embedded_etcd(int(cfg.get("etcd_port")), ports[-2])

    def _start_once(self, bin_dir: Path) -> None:
        self._configure()
        env = dict(
            os.environ,
            DEPLOY_MODE="STANDALONE",
            METRICS_PORT=str(self.metrics_port),
            MILVUS_RUN_DIR=str(self.data_dir / "run"),
            MILVUSCONF=str(self.data_dir / "configs"),
            LD_LIBRARY_PATH=":".join(p for p in (str(bin_dir), os.environ.get("LD_LIBRARY_PATH", "")) if p),
        )
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        self._log_scanned = log.tell()
        try:
            self.proc = subprocess.Popen(
                [str(bin_dir / "milvus"), "run", "standalone"],
                cwd=self.data_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() kills everything it started
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        finally:
            log.close()
        self._wait_healthy()

    def _embedded_etcd(self, client_port: int, peer: int) -> None:
        """Give the embedded etcd the client port the config names and a free peer port: the wheel's
        template leaves etcd on its defaults (2379, 2380), so a second server would fail to start."""
        etcd_yaml = self.data_dir / "configs" / "etcd.yaml"
        client, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer}"
        etcd_yaml.write_text(
            "name: soundscope\n"
            f"listen-client-urls: {client}\nadvertise-client-urls: {client}\n"
            f"listen-peer-urls: {peer_url}\ninitial-advertise-peer-urls: {peer_url}\n"
            f"initial-cluster: soundscope={peer_url}\n"
        )
        conf = self.data_dir / "configs" / "milvus.yaml"
        text = conf.read_text()
        if "\n  config:\n    path:" not in text:
            text = text.replace("\netcd:\n", f"\netcd:\n  config:\n    path: {etcd_yaml}\n", 1)
            conf.write_text(text)

    def _wait_healthy(self) -> None:
        """Poll ``/healthz`` on the metrics port until it says OK. The server logs a listener it could not
        bind and goes on without it (a lost metrics port leaves it running but never healthy): such a
        line in this start's log raises :class:`PortTakenError` at once."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
        url = f"http://127.0.0.1:{self.metrics_port}/healthz"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                self._raise_if_port_taken()
                raise RuntimeError(f"the Milvus server exited during startup; see its log:\n{self.log_tail()}")
            try:
                with opener.open(url, timeout=2) as resp:
                    if b"OK" in resp.read():
                        return
            except OSError:
                pass
            self._raise_if_port_taken()
            time.sleep(0.2)
        raise TimeoutError(f"the Milvus server did not start in {self.startup_timeout:g} s:\n{self.log_tail()}")

    def _raise_if_port_taken(self) -> None:
        """Scan the log lines written since the last call (whole lines only) for a listener that could not bind."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_scanned)
                chunk = f.read()
        except OSError:
            return
        whole = chunk[: chunk.rfind(b"\n") + 1]
        self._log_scanned += len(whole)
        found = re.search(rb"listen tcp [^ \"]*:(\d+): bind: address already in use", whole)
        if found:
            raise PortTakenError(f"port {found.group(1).decode()} was taken before the server bound it")

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / "milvus.log"

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, grace: float = 1.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=grace if sig == signal.SIGTERM else 30)
                if _group_gone(proc.pid):
                    break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything the server left in its group

    def cleanup(self) -> None:
        """Stop and delete the data directory."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalMilvus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the server child before exec: ask Linux to SIGKILL it when its parent goes (PR_SET_PDEATHSIG)."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
