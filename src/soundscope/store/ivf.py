"""The embedded vector index: faiss IVF with 8-bit scalar quantisation (IVF-SQ8), one file per space.

Why IVF and not a graph (HNSW, usearch until schema 6): a text query's description vector lies far
from every item (cosine ~0.4), and a library holds clusters of near-identical items (one source's
copies, a sound pack's variations, templated descriptions). HNSW walks into one cluster and stays:
at 10^6 synthetic items its text-query recall@10 was 0.50 (0.76 searching 2,048 wide), while its
recall for item-like queries was 0.996. IVF ranks the coarse centroids by the query itself and scans
the best lists exhaustively, so a far query finds every cluster near it: recall@10 1.0 at 10^5
(256 lists, 16 probed, 0.4 ms) and 10^6 (1,024 lists, 16 probed, 1.4 ms). It also builds in
seconds, not HNSW's ~25 min per 10^6 vectors (train 6 s + add 12 s at 10^6 x 512-d), which makes
a full rebuild cheap enough to retrain as a library grows.

Layout: ``<space>.ivf.json`` (the sidecar: generation, watermarks, count, the data file's name,
lists) names ``<space>.<generation>-<hex>.ivf`` (``faiss.write_index``). A save writes a new data
file, then replaces the sidecar (the commit point), then removes the old file. Readers memory-map
large indexes (``IO_FLAG_MMAP_IFC``: 6 ms and ~0 RSS to open 10^6 vectors).

Stored vectors are unit-normalised, so inner product is cosine. SQ8 scores are approximate (one
byte a dimension over each dimension's trained range), so :class:`~.vectors.LiveIndex` re-ranks the
head of a search with the catalog's vectors (``quantized``).
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import threading
from pathlib import Path

import numpy as np

from .. import faults
from .vectors import VIEW_ABOVE, data_file

KIND = "faiss-ivf-sq8"  # what the sidecar records; an index of another kind is rebuilt
SINGLE_LIST_BELOW = 4_096  # fewer vectors: one list, i.e. an exhaustive scan of 8-bit codes
TRAIN_PER_LIST = 50  # training sample per list (faiss wants >= 39), at most TRAIN_MAX vectors
TRAIN_MAX = 100_000
MIN_PROBE = 16  # lists scanned per query: max(MIN_PROBE, lists / PROBE_SHARE)
PROBE_SHARE = 64
REBUILD_GROWTH = 4.0  # retrain once the index holds this many times what it was trained for
RANGE_MARGIN = 0.1  # 8-bit range per dimension: the training sample's, widened by this share each side


def lists_for(n: int) -> int:
    """Inverted lists for ``n`` vectors: 1 below :data:`SINGLE_LIST_BELOW`, else the power of two
    nearest sqrt(n) (10^4: 128, 10^5: 256, 10^6: 1,024)."""
    if n < SINGLE_LIST_BELOW:
        return 1
    return 2 ** round(math.log2(math.sqrt(n)))


def probes_for(lists: int) -> int:
    """Lists scanned per query (all of them up to :data:`MIN_PROBE`)."""
    return min(lists, max(MIN_PROBE, lists // PROBE_SHARE))


def _faiss():
    import faiss

    faiss.omp_set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS") or 1)))  # 1 thread a worker
    return faiss


def _unit(vectors: np.ndarray) -> np.ndarray:
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


class IvfIndex:
    """Cosine IVF-SQ8 index persisted as a data file plus ``<path>.json`` (generation, count,
    watermarks, lists, the vectors it was trained for and the data file's name).

    An index is empty until :meth:`train` (the writer trains on a sample of the catalog before
    adding); :meth:`needs_rebuild` says when the library outgrew the lists it was trained with."""

    quantized = True  # SQ8 cosines are approximate: the head of a search needs a re-rank

    def __init__(self, path: Path, dim: int) -> None:
        self.path = Path(path)
        self.dim = dim
        self._index = None  # faiss.IndexIVFScalarQuantizer once trained
        self._keys: np.ndarray | None = None  # every key held (cached)
        self.trained_for = 0  # vectors the lists were sized and trained for
        self.generation = -1
        self.upto = 0  # highest key the saved index has seen (keys are never reused)
        self.tomb_seq = 0  # catalog tombstones applied up to this sequence number
        self.catalog = ""  # the catalog it was built from (its created_at)
        self.view = False

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, dim: int, *, view: bool | None = None) -> IvfIndex:
        """Load from disk if present and readable; otherwise an empty index (generation -1).
        ``view``: memory-map read-only instead of loading (default: for indexes over
        :data:`.vectors.VIEW_ABOVE`)."""
        idx = cls(path, dim)
        try:
            info = json.loads(Path(f"{path}.json").read_text())
            if info.get("kind") != KIND or int(info.get("dim", -1)) != dim:
                return idx
            count = int(info["count"])
            data = data_file(idx.path)
            if count:
                idx.view = (count > VIEW_ABOVE) if view is None else view
                idx._read(data)
            elif not data.exists():
                return idx
            if len(idx) != count:
                return cls(path, dim)
            idx.trained_for = int(info.get("trained_for", count))
            idx.generation = int(info["generation"])
            idx.upto, idx.tomb_seq = int(info.get("upto", -1)), int(info.get("tomb_seq", -1))
            idx.catalog = str(info.get("catalog", ""))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError):
            return cls(path, dim)
        return idx

    def _read(self, data: Path) -> None:
        faiss = _faiss()
        flags = (faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY) if self.view else 0
        index = faiss.read_index(str(data), flags)
        if not isinstance(index, faiss.IndexIVFScalarQuantizer) or index.d != self.dim:
            raise ValueError(f"{data.name} is not a {self.dim}-d IVF-SQ8 index")
        index.nprobe = probes_for(index.nlist)  # today's rule, not the one saved with the file
        self._index = index

    def writable(self) -> IvfIndex:
        """This index, loaded for writing if it was memory-mapped."""
        return IvfIndex.open(self.path, self.dim, view=False) if self.view else self

    # -- contents -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def lists(self) -> int:
        return 0 if self._index is None else int(self._index.nlist)

    def keys(self) -> np.ndarray:
        """(n,) every key held, in list order."""
        if self._keys is None:
            if not len(self):
                self._keys = np.zeros(0, np.int64)
            else:
                faiss, lists = _faiss(), self._index.invlists
                parts = [
                    faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                    for i in range(self._index.nlist)
                    if lists.list_size(i)
                ]
                self._keys = np.concatenate(parts).astype(np.int64)
        return self._keys

    def needs_rebuild(self, n: int) -> bool:
        """Whether an index about to hold ``n`` vectors should be retrained from the catalog: never
        trained, or ``n`` is :data:`REBUILD_GROWTH` times what it was trained for (or as many times
        less): its lists and 8-bit ranges were fitted to a library that is not this one any more."""
        if self._index is None:
            return n > 0
        trained = max(self.trained_for, 1)
        return n >= REBUILD_GROWTH * trained or n * REBUILD_GROWTH <= trained

    def train(self, sample: np.ndarray, n: int) -> None:
        """Start afresh with lists sized for ``n`` vectors, trained on ``sample`` (m, dim): the coarse
        centroids (k-means) and each dimension's 8-bit range."""
        faiss = _faiss()
        lists = lists_for(n)
        index = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(self.dim), self.dim, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.seed = 1234  # reproducible centroids (k-means starts from a random sample)
        index.sq.rangestat = faiss.ScalarQuantizer.RS_minmax  # each dimension's range: the sample's min..max
        index.sq.rangestat_arg = RANGE_MARGIN  # widened, so vectors added later are rarely clipped
        sample = _unit(sample)
        if lists == 1:  # one centroid: the mean, set directly (k-means of one warns on a small sample)
            index.quantizer.add(sample.mean(axis=0, keepdims=True))
        index.train(sample)
        index.nprobe = probes_for(lists)
        self._index, self._keys, self.trained_for = index, None, n

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Add ``vectors`` (m, dim) under ``keys`` (m,); the index must be trained."""
        if not len(keys):
            return
        if self._index is None:
            raise RuntimeError("train the index before adding to it")
        self._index.add_with_ids(_unit(vectors), np.ascontiguousarray(keys, dtype=np.int64))
        self._keys = None

    def remove(self, keys: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        if keys.size and len(self):
            faiss = _faiss()
            self._index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(keys)))
            self._keys = None

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(dim,) query -> (keys (m,), approximate cosines (m,)), best first, m <= k."""
        n = len(self)
        if n == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = _unit(np.asarray(query, np.float32).reshape(1, -1))
        sims, keys = self._index.search(q, min(k, n))
        found = keys[0] >= 0
        return keys[0][found].astype(np.int64), sims[0][found].astype(np.float32)

    # -- saving ---------------------------------------------------------------------------------
    def save(self, generation: int, *, upto: int = 0, tomb_seq: int = 0, catalog: str = "") -> None:
        """Write a new data file and then the sidecar naming it (atomically: temp file + rename),
        tagged with the catalog generation and the watermarks it reflects: every key <= ``upto``,
        tombstones up to ``tomb_seq``. An untrained (empty) index writes an empty data file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        old = data_file(self.path)
        data = self.path.with_name(f"{self.path.stem}.{generation}-{secrets.token_hex(4)}{self.path.suffix}")
        faults.point("vectors.save")
        if self._index is None:
            data.write_bytes(b"")
        else:
            _faiss().write_index(self._index, str(data))
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
            "kind": KIND,
            "generation": generation,
            "count": len(self),
            "dim": self.dim,
            "lists": self.lists,
            "trained_for": self.trained_for,
            "upto": upto,
            "tomb_seq": tomb_seq,
            "catalog": catalog,
            "file": data.name,
        }
        meta_tmp.write_text(json.dumps(info))
        os.replace(meta_tmp, f"{self.path}.json")  # the commit point
        self.generation, self.upto, self.tomb_seq, self.catalog = generation, upto, tomb_seq, catalog

    def _drop_unnamed(self, *, keep: Path, old: Path) -> None:
        """Remove the replaced data file and what interrupted saves left (their data and temp files)."""
        saved = re.compile(rf"{re.escape(self.path.stem)}\.-?\d+-[0-9a-f]{{8}}{re.escape(self.path.suffix)}")
        for entry in self.path.parent.iterdir():
            name = entry.name
            leftover = saved.fullmatch(name) or (name.startswith(self.path.name) and name.endswith(".tmp"))
            if entry != keep and (entry == old or leftover):
                entry.unlink(missing_ok=True)  # a reader that mapped it keeps its mapping
