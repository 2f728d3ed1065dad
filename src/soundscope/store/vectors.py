"""Vector indexes: nearest-neighbour search over one embedding space.

SQLite holds every vector (the source of truth); an index here is an accelerator that can
always be rebuilt from it. A backend is one class with ``add``/``remove``/``search``/``save``.
usearch is the default: a single small wheel with no BLAS or GPU dependencies, HNSW with
f16 storage, exact search when the collection is small, incremental add and remove, and
memory-mapped loading of large indexes. Milvus (for scale-out) implements the same protocol.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from .. import faults

EXACT_BELOW = 50_000  # brute-force (exact) search below this many vectors: fast and recall 1.0
DELTA_MAX = 512  # vectors newer than the saved index, searched exactly, before the writer folds them in
VIEW_ABOVE = 100_000  # readers memory-map saved indexes this large instead of loading them


class VectorIndex(Protocol):
    dim: int

    def __len__(self) -> int: ...
    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None: ...
    def remove(self, keys: np.ndarray) -> None: ...
    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(dim,) query -> (keys (m,), cosine similarities (m,)), best first, m <= k."""
        ...

    def save(self, generation: int) -> None: ...


def data_file(path: Path) -> Path:
    """The file holding the vectors of the index whose sidecar is ``<path>.json``: the one the sidecar
    names (``file``), or ``<path>`` itself for sidecars written before indexes were saved that way."""
    path = Path(path)
    try:
        name = json.loads(Path(f"{path}.json").read_text()).get("file")
    except (OSError, ValueError, AttributeError):
        name = None
    return path.with_name(os.path.basename(name)) if isinstance(name, str) and name else path


class UsearchIndex:
    """Cosine HNSW index (usearch) persisted as a data file plus ``<path>.json`` (generation, count,
    watermarks and the data file's name).

    A save writes a new data file under a name of its own, then replaces the sidecar naming it (the
    commit point), then removes the old data file: a crash at any moment leaves a sidecar and the data
    file it describes, never a new index beside an old sidecar (a kill test found that window when the
    file was replaced in place)."""

    def __init__(self, path: Path, dim: int) -> None:
        from usearch.index import Index

        self.path = Path(path)
        self.dim = dim
        self._index = Index(ndim=dim, metric="cos", dtype="f16", connectivity=16, expansion_add=128)
        self.generation = -1
        self.upto = 0  # highest key the saved index has seen (keys are never reused)
        self.tomb_seq = 0  # catalog tombstones applied up to this sequence number
        self.catalog = ""  # the catalog it was built from (its created_at)
        self.view = False

    @classmethod
    def open(cls, path: Path, dim: int, *, view: bool | None = None) -> UsearchIndex:
        """Load from disk if present and readable; otherwise an empty index (generation -1).
        ``view``: memory-map read-only instead of loading (default: for indexes over :data:`VIEW_ABOVE`)."""
        idx = cls(path, dim)
        meta = Path(f"{path}.json")
        data = data_file(idx.path)
        if data.exists() and meta.exists():
            try:
                info = json.loads(meta.read_text())
                count = int(info["count"])
                idx.view = (count > VIEW_ABOVE) if view is None else view
                if idx.view:
                    idx._index.view(str(data))
                else:
                    idx._index.load(str(data))
                if int(info.get("dim", -1)) == dim and len(idx._index) == count:
                    idx.generation = int(info["generation"])
                    idx.upto, idx.tomb_seq = int(info.get("upto", -1)), int(info.get("tomb_seq", -1))
                    idx.catalog = str(info.get("catalog", ""))
                else:
                    idx._reset()
            except (OSError, ValueError, KeyError, RuntimeError):
                idx._reset()
        return idx

    def _drop_unnamed(self, *, keep: Path, old: Path) -> None:
        """Remove the replaced data file and what interrupted saves left (their data and temp files)."""
        saved = re.compile(rf"{re.escape(self.path.stem)}\.-?\d+-[0-9a-f]{{8}}{re.escape(self.path.suffix)}")
        for entry in self.path.parent.iterdir():
            name = entry.name
            leftover = saved.fullmatch(name) or (name.startswith(self.path.name) and name.endswith(".tmp"))
            if entry != keep and (entry == old or leftover):
                entry.unlink(missing_ok=True)  # a reader that mapped it keeps its mapping

    def _reset(self) -> None:
        self.__init__(self.path, self.dim)  # type: ignore[misc]

    def keys(self) -> np.ndarray:
        """(n,) every key held."""
        return np.asarray(self._index.keys, dtype=np.int64) if len(self._index) else np.zeros(0, np.int64)

    def writable(self) -> UsearchIndex:
        """This index, loaded for writing if it was memory-mapped."""
        if not self.view:
            return self
        idx = UsearchIndex.open(self.path, self.dim, view=False)
        return idx

    def __len__(self) -> int:
        return len(self._index)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if len(keys):
            self._index.add(np.asarray(keys, dtype=np.uint64), np.asarray(vectors, dtype=np.float32), threads=1)

    def remove(self, keys: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        if keys.size and len(self._index):
            held = keys[np.isin(keys, self.keys())]
            if held.size:
                self._index.remove(held.astype(np.uint64))

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self._index)
        if n == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        k = min(k, n)
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        matches = self._index.search(q, k, exact=n < EXACT_BELOW, threads=1)
        return np.asarray(matches.keys, dtype=np.int64), (1.0 - np.asarray(matches.distances, dtype=np.float32))

    def save(self, generation: int, *, upto: int = 0, tomb_seq: int = 0, catalog: str = "") -> None:
        """Write index and sidecar atomically (temp file + rename), tagged with the catalog generation
        and the watermarks it reflects: every key <= ``upto``, tombstones up to ``tomb_seq``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        suffix = f".{os.getpid()}.{threading.get_ident()}.tmp"  # concurrent savers never share a temp file
        old = data_file(self.path)
        data = self.path.with_name(f"{self.path.stem}.{generation}-{secrets.token_hex(4)}{self.path.suffix}")
        faults.point("vectors.save")
        self._index.save(str(data))
        faults.point("vectors.sidecar")  # the new data file written, the sidecar still names the old one
        meta_tmp = Path(f"{self.path}.json{suffix}")
        info = {
            "generation": generation,
            "count": len(self._index),
            "dim": self.dim,
            "upto": upto,
            "tomb_seq": tomb_seq,
            "catalog": catalog,
            "file": data.name,
        }
        meta_tmp.write_text(json.dumps(info))
        os.replace(meta_tmp, f"{self.path}.json")  # the commit point
        faults.point("vectors.saved")
        self._drop_unnamed(keep=data, old=old)
        self.generation, self.upto, self.tomb_seq, self.catalog = generation, upto, tomb_seq, catalog


class LiveIndex:
    """A saved index plus what the catalog gained and lost since it was saved.

    Keys above the index's watermark (``upto``) are held as a small exact matrix, and keys deleted
    since (the catalog's tombstones) are filtered from results, so a reader is current at once without
    touching the graph; the writer folds the delta in (:meth:`Store.flush`). Implements the search side
    of :class:`VectorIndex`."""

    def __init__(
        self, base: UsearchIndex, delta_keys: np.ndarray, delta: np.ndarray, dead: np.ndarray, generation: int
    ) -> None:
        self.base = base
        self.dim = base.dim
        self.delta_keys = np.asarray(delta_keys, np.int64)
        self.delta = np.asarray(delta, np.float32).reshape(-1, base.dim) if len(delta_keys) else np.zeros((0, base.dim))
        self.dead = np.unique(np.asarray(dead, np.int64))
        self.generation = generation
        self._base_len = len(base)  # once: a remote backend (Milvus) answers a count with a round trip
        self._dead_in_base = int(np.isin(self.dead, base.keys()).sum()) if self.dead.size and self._base_len else 0

    def __len__(self) -> int:
        alive_delta = int((~np.isin(self.delta_keys, self.dead)).sum()) if self.dead.size else len(self.delta_keys)
        return self._base_len - self._dead_in_base + alive_delta

    def keys(self) -> np.ndarray:
        keys = np.concatenate([self.base.keys(), self.delta_keys])
        return keys[~np.isin(keys, self.dead)] if self.dead.size else keys

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(dim,) query -> (keys (m,), cosine (m,)), best first, m <= k, deleted keys left out."""
        q = np.asarray(query, np.float32).reshape(-1)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        keys, sims = (
            self.base.search(q, min(k + self._dead_in_base, self._base_len))
            if self._base_len
            else (
                np.zeros(0, np.int64),
                np.zeros(0, np.float32),
            )
        )
        if self.delta_keys.size:
            dsims = self.delta @ q / np.maximum(np.linalg.norm(self.delta, axis=1), 1e-12)
            keys, sims = np.concatenate([keys, self.delta_keys]), np.concatenate([sims, dsims.astype(np.float32)])
        if self.dead.size:
            keep = ~np.isin(keys, self.dead)
            keys, sims = keys[keep], sims[keep]
        order = np.argsort(-sims, kind="stable")[:k]
        return keys[order], sims[order]

    @property
    def stale(self) -> int:
        """How many changes the saved index lacks (delta vectors plus deletions to apply)."""
        return int(self.delta_keys.size + self.dead.size)
