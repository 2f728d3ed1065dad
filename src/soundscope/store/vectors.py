"""Vector indexes: nearest-neighbour search over one embedding space.

SQLite holds every vector (the source of truth); an index here is an accelerator that can
always be rebuilt from it. A backend is one class with ``add``/``remove``/``search``/``save``:
:class:`~.ivf.IvfIndex` (faiss IVF-SQ8, the embedded default) and
:class:`~.milvus.MilvusIndex` (scale-out). :class:`LiveIndex` puts what the catalog gained and lost
since a save in front of either.

An 8-bit index ranks alone with recall@10 of only about 0.93 on real vectors: the cosine of a
quantised vector is off by ~1e-2, more than the gaps between near neighbours. The true 10 nearest
were always among its best 50, so :class:`LiveIndex` re-ranks the head of what the index returns
(:data:`RERANK` keys) with the catalog's own vectors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

DELTA_MAX = 512  # vectors newer than the saved index, searched exactly, before the writer folds them in
VIEW_ABOVE = 100_000  # readers memory-map saved indexes this large instead of loading them
RERANK = 100  # the best keys of a quantised index that are re-scored with the catalog's exact vectors


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


class LiveIndex:
    """A saved index plus what the catalog gained and lost since it was saved.

    Keys above the index's watermark (``upto``) are held as a small exact matrix, and keys deleted
    since (the catalog's tombstones) are filtered from results, so a reader is current at once without
    touching the saved index; the writer folds the delta in (:meth:`Store.flush`). Implements the search side
    of :class:`VectorIndex`."""

    def __init__(
        self,
        base: Any,  # IvfIndex or MilvusIndex: a VectorIndex with keys(), upto, tomb_seq
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
        return self._search(query, k)

    def search_vectors(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """As :meth:`search`, plus the exact vectors (m, dim) of the keys returned, for a caller that
        scores them again (query expansion in :meth:`Searcher.similar`). The re-ranked head and the delta
        are already in hand; other keys are read from the catalog. None where no vector source is known."""
        known: dict[int, np.ndarray] = {}
        keys, sims = self._search(query, k, known)
        missing = [int(x) for x in keys.tolist() if int(x) not in known]
        if missing and self.exact is not None:
            found, vecs = self.exact(np.asarray(missing, np.int64))
            known.update(zip(found.tolist(), vecs, strict=True))
        if any(int(x) not in known for x in keys.tolist()):
            return keys, sims, None
        vecs = np.stack([known[int(x)] for x in keys.tolist()]) if keys.size else np.zeros((0, self.dim), np.float32)
        return keys, sims, vecs.astype(np.float32, copy=False)

    def _search(
        self, query: np.ndarray, k: int, known: dict[int, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(keys (m,), cosine (m,)); the exact vectors read on the way (re-ranked head, delta) are added to
        ``known`` (key -> vector) when one is given."""
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
            sims = self._rerank(q, keys, sims, known)
        if self.delta_keys.size:
            dsims = self.delta @ q / np.maximum(np.linalg.norm(self.delta, axis=1), 1e-12)
            keys, sims = np.concatenate([keys, self.delta_keys]), np.concatenate([sims, dsims.astype(np.float32)])
            if known is not None:
                known.update(zip(self.delta_keys.tolist(), self.delta, strict=True))
        if self.dead.size:
            keep = ~np.isin(keys, self.dead)
            keys, sims = keys[keep], sims[keep]
        order = np.argsort(-sims, kind="stable")[:k]
        return keys[order], sims[order]

    def _rerank(
        self, q: np.ndarray, keys: np.ndarray, sims: np.ndarray, known: dict[int, np.ndarray] | None
    ) -> np.ndarray:
        """(m,) sims of a quantised base's results (best first) with the first :data:`RERANK` replaced by
        exact cosines from the catalog's vectors; the rest kept below them, in the index's order. The
        vectors read are added to ``known`` (key -> vector), if given."""
        head = keys[:RERANK]
        found, vecs = self.exact(head)  # type: ignore[misc]
        if not found.size:
            return sims
        if known is not None:
            known.update(zip(found.tolist(), vecs, strict=True))
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
