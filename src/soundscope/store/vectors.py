"""Vector indexes: nearest-neighbour search over one embedding space.

SQLite holds every vector (the source of truth); an index here is an accelerator that can
always be rebuilt from it. A backend is one class with ``add``/``remove``/``search``/``save``.
usearch is the default: a single small wheel with no BLAS or GPU dependencies, HNSW with
int8 storage, exact search when the collection is small, incremental add and remove, and
memory-mapped loading of large indexes. Milvus (for scale-out) implements the same protocol.

int8 (issue 10, disk) halves the index next to float16 (YAMNet: 1,172 against 2,196 bytes a vector),
but ranks alone with recall@10 of only about 0.93 on real vectors: the cosine of a 1024-d unit vector
quantised to int8 is off by ~1e-2, more than the gaps between near neighbours. The true 10 nearest
were always among its best 50, so :class:`LiveIndex` re-ranks the head of what the index returns
(:data:`RERANK` keys) with the catalog's own vectors.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from .. import faults

EXACT_BELOW = 50_000  # brute-force (exact) search below this many vectors: fast and recall 1.0
DELTA_MAX = 512  # vectors newer than the saved index, searched exactly, before the writer folds them in
VIEW_ABOVE = 100_000  # readers memory-map saved indexes this large instead of loading them
DTYPE = "i8"  # how a new index stores vectors (an older one keeps the dtype its sidecar names)
RERANK = 100  # the best keys of a quantised index that are re-scored with the catalog's exact vectors
# HNSW search breadth (usearch's default is 64). At 10^6 synthetic items, whose copies of one source form
# dense clusters, 64 and 128 gave description recall@10 0.976 and 256 gave 0.996, at about the same cost
EXPANSION_SEARCH = 256


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

    def __init__(self, path: Path, dim: int, dtype: str = DTYPE) -> None:
        from usearch.index import Index

        self.path = Path(path)
        self.dim = dim
        self.dtype = dtype
        self._index = Index(ndim=dim, metric="cos", dtype=dtype, connectivity=16, expansion_add=128,
                            expansion_search=EXPANSION_SEARCH)  # fmt: skip
        self.generation = -1
        self.upto = 0  # highest key the saved index has seen (keys are never reused)
        self.tomb_seq = 0  # catalog tombstones applied up to this sequence number
        self.catalog = ""  # the catalog it was built from (its created_at)
        self.view = False

    @classmethod
    def open(cls, path: Path, dim: int, *, view: bool | None = None) -> UsearchIndex:
        """Load from disk if present and readable; otherwise an empty index (generation -1).
        ``view``: memory-map read-only instead of loading (default: for indexes over :data:`VIEW_ABOVE`)."""
        meta = Path(f"{path}.json")
        try:
            info = json.loads(meta.read_text())
            dtype = str(info.get("dtype", "f16"))  # sidecars written before int8 indexes held float16
        except (OSError, ValueError, AttributeError):
            info, dtype = None, DTYPE
        idx = cls(path, dim, dtype if dtype in ("f16", "i8") else DTYPE)
        data = data_file(idx.path)
        if data.exists() and info is not None:
            try:
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

    @property
    def quantized(self) -> bool:
        """Whether its cosines are approximate (int8 storage): the head of a search needs a re-rank."""
        return self.dtype == "i8"

    def keys(self) -> np.ndarray:
        """(n,) every key held."""
        return np.asarray(self._index.keys, dtype=np.int64) if len(self._index) else np.zeros(0, np.int64)

    def writable(self) -> UsearchIndex:
        """This index, loaded for writing if it was memory-mapped."""
        if not self.view:
            return self
        return UsearchIndex.open(self.path, self.dim, view=False)

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
        old = data_file(self.path)
        data = self.path.with_name(f"{self.path.stem}.{generation}-{secrets.token_hex(4)}{self.path.suffix}")
        faults.point("vectors.save")
        self._index.save(str(data))
        faults.point("vectors.sidecar")  # the new data file written, the sidecar still names the old one
        self._write_sidecar(generation, upto=upto, tomb_seq=tomb_seq, catalog=catalog, data=data)
        faults.point("vectors.saved")
        self._drop_unnamed(keep=data, old=old)

    def advance(self, generation: int, *, upto: int, tomb_seq: int, catalog: str) -> None:
        """Move the watermarks of an index that has nothing to fold in (no vector added or deleted since,
        e.g. a music model's index while only sounds arrive): a new sidecar naming the same data file,
        instead of rewriting it. Without this a space that stays empty kept watermark 0, and every
        reader and flush scanned every segment of the library for its delta (1.8 s at 10^6 items)."""
        data = data_file(self.path)
        if self.generation < 0 or not data.exists():
            self.save(generation, upto=upto, tomb_seq=tomb_seq, catalog=catalog)  # nothing saved yet: small
            return
        self._write_sidecar(generation, upto=upto, tomb_seq=tomb_seq, catalog=catalog, data=data)

    def _write_sidecar(self, generation: int, *, upto: int, tomb_seq: int, catalog: str, data: Path) -> None:
        """Replace the sidecar (temp file + rename: the commit point) with one naming ``data``."""
        suffix = f".{os.getpid()}.{threading.get_ident()}.tmp"  # concurrent savers never share a temp file
        meta_tmp = Path(f"{self.path}.json{suffix}")
        info = {
            "generation": generation,
            "count": len(self._index),
            "dim": self.dim,
            "dtype": self.dtype,
            "upto": upto,
            "tomb_seq": tomb_seq,
            "catalog": catalog,
            "file": data.name,
        }
        meta_tmp.write_text(json.dumps(info))
        os.replace(meta_tmp, f"{self.path}.json")  # the commit point
        self.generation, self.upto, self.tomb_seq, self.catalog = generation, upto, tomb_seq, catalog


class LiveIndex:
    """A saved index plus what the catalog gained and lost since it was saved.

    Keys above the index's watermark (``upto``) are held as a small exact matrix, and keys deleted
    since (the catalog's tombstones) are filtered from results, so a reader is current at once without
    touching the graph; the writer folds the delta in (:meth:`Store.flush`). Implements the search side
    of :class:`VectorIndex`."""

    def __init__(
        self,
        base: UsearchIndex,
        delta_keys: np.ndarray,
        delta: np.ndarray,
        dead: np.ndarray,
        generation: int,
        exact: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        """``exact``: keys (m,) -> (the keys found (m',), their exact vectors (m', dim)), for re-ranking
        the head of a quantised base's results (see :data:`RERANK`)."""
        self.base = base
        self.exact = exact
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
        rerank = self.exact is not None and getattr(self.base, "quantized", False)
        want = max(k, RERANK) if rerank else k  # the re-scored head: the true nearest are among it
        keys, sims = (
            self.base.search(q, min(want + self._dead_in_base, self._base_len))
            if self._base_len
            else (
                np.zeros(0, np.int64),
                np.zeros(0, np.float32),
            )
        )
        if rerank and keys.size:
            sims = self._rerank(q, keys, sims)
        if self.delta_keys.size:
            dsims = self.delta @ q / np.maximum(np.linalg.norm(self.delta, axis=1), 1e-12)
            keys, sims = np.concatenate([keys, self.delta_keys]), np.concatenate([sims, dsims.astype(np.float32)])
        if self.dead.size:
            keep = ~np.isin(keys, self.dead)
            keys, sims = keys[keep], sims[keep]
        order = np.argsort(-sims, kind="stable")[:k]
        return keys[order], sims[order]

    def _rerank(self, q: np.ndarray, keys: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """(m,) sims of a quantised base's results (best first) with the first :data:`RERANK` replaced by
        exact cosines from the catalog's vectors; the rest kept below them, in the index's order."""
        head = keys[:RERANK]
        found, vecs = self.exact(head)  # type: ignore[misc]
        if not found.size:
            return sims
        exact = vecs @ q / np.maximum(np.linalg.norm(vecs, axis=1), 1e-12)
        out = sims.astype(np.float32, copy=True)
        at = {int(k): i for i, k in enumerate(head.tolist())}
        out[[at[int(k)] for k in found.tolist()]] = exact
        if keys.size > RERANK:  # an approximate tail never overtakes the re-scored head
            out[RERANK:] = np.minimum(out[RERANK:], out[:RERANK].min())
        return out

    @property
    def stale(self) -> int:
        """How many changes the saved index lacks: delta vectors plus deletions of keys it holds (a
        deleted file with no vector in this space changes nothing here)."""
        return int(self.delta_keys.size + self._dead_in_base)
