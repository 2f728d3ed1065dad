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
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

EXACT_BELOW = 50_000  # brute-force (exact) search below this many vectors: fast and recall 1.0


class VectorIndex(Protocol):
    dim: int

    def __len__(self) -> int: ...
    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None: ...
    def remove(self, keys: np.ndarray) -> None: ...
    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(dim,) query -> (keys (m,), cosine similarities (m,)), best first, m <= k."""
        ...

    def save(self, generation: int) -> None: ...


class UsearchIndex:
    """Cosine HNSW index (usearch) persisted as ``<path>`` plus ``<path>.json`` (generation, count)."""

    def __init__(self, path: Path, dim: int) -> None:
        from usearch.index import Index

        self.path = Path(path)
        self.dim = dim
        self._index = Index(ndim=dim, metric="cos", dtype="f16", connectivity=16, expansion_add=128)
        self.generation = -1

    @classmethod
    def open(cls, path: Path, dim: int) -> UsearchIndex:
        """Load from disk if present and readable; otherwise an empty index (generation -1)."""
        idx = cls(path, dim)
        meta = Path(f"{path}.json")
        if idx.path.exists() and meta.exists():
            try:
                info = json.loads(meta.read_text())
                idx._index.load(str(idx.path))
                if int(info.get("dim", -1)) == dim and len(idx._index) == int(info["count"]):
                    idx.generation = int(info["generation"])
                else:
                    idx._index.clear()
            except (OSError, ValueError, KeyError, RuntimeError):
                idx._index.clear()
        return idx

    def __len__(self) -> int:
        return len(self._index)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if len(keys):
            self._index.add(np.asarray(keys, dtype=np.uint64), np.asarray(vectors, dtype=np.float32), threads=1)

    def remove(self, keys: np.ndarray) -> None:
        for key in np.asarray(keys, dtype=np.uint64):
            if int(key) in self._index:
                self._index.remove(int(key))

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self._index)
        if n == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        k = min(k, n)
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        matches = self._index.search(q, k, exact=n < EXACT_BELOW, threads=1)
        return np.asarray(matches.keys, dtype=np.int64), (1.0 - np.asarray(matches.distances, dtype=np.float32))

    def save(self, generation: int) -> None:
        """Write index and sidecar atomically (temp file + rename), tagged with the catalog generation."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        suffix = f".{os.getpid()}.{threading.get_ident()}.tmp"  # concurrent savers never share a temp file
        tmp = self.path.with_name(self.path.name + suffix)
        self._index.save(str(tmp))
        os.replace(tmp, self.path)
        meta_tmp = Path(f"{self.path}.json{suffix}")
        meta_tmp.write_text(json.dumps({"generation": generation, "count": len(self._index), "dim": self.dim}))
        os.replace(meta_tmp, f"{self.path}.json")
        self.generation = generation
