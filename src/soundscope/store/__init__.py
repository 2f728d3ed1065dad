"""Store: one data directory holding the SQLite catalog and one vector index per embedding space.

Layout of ``<data_dir>``::

    catalog.sqlite            items, segments, scores, vectors (truth), FTS5, failures, model registry
    vectors/<space>.ivf       nearest-neighbour index for <space> (segment, item or passage vectors)
    columns/                  memory-mapped query columns (durations, kinds, descriptors, label scores)
    fingerprints/             landmark hashes for identify / duplicates (see :mod:`.fingerprints`)

Both accelerators catch up incrementally: keys are never reused, so "what is above my watermark,
minus the catalog's tombstones since" is exactly what changed. Readers apply that delta in memory;
the writer folds it in at the end of an index run (:meth:`Store.flush`).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import vectors as _vectors
from .catalog import Catalog, IncompatibleIndexError, ItemRow, SegmentData
from .columns import Columns, ColumnStore
from .ivf import IvfIndex
from .vectors import LiveIndex, VectorIndex

if TYPE_CHECKING:  # imported when first used: it loads scipy.ndimage (0.2 s), which a text search never needs
    from .fingerprints import FingerprintIndex

__all__ = [
    "Catalog",
    "Columns",
    "IncompatibleIndexError",
    "ItemRow",
    "NoLibraryError",
    "SegmentData",
    "Store",
    "VectorIndex",
    "default_data_dir",
]


FOLD_CHUNK = 50_000  # key range read from the catalog at a time when folding a delta into an index


class NoLibraryError(FileNotFoundError):
    """A read-only command was pointed at a data directory that holds no library (a typo in a path
    must not silently create an empty one)."""


def _drop_legacy(folder: Path, space: str) -> None:
    """Remove the usearch (HNSW) files of ``space`` an older soundscope saved (its IVF index now serves it)."""
    for entry in folder.glob(f"{space}.*usearch*"):
        entry.unlink(missing_ok=True)


def default_data_dir() -> Path:
    """``$SOUNDSCOPE_DATA_DIR``, else ``$XDG_DATA_HOME/soundscope``, else ``~/.local/share/soundscope``."""
    env = os.environ.get("SOUNDSCOPE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "soundscope"


class Store:
    """The catalog plus lazily opened, self-healing vector indexes."""

    def __init__(
        self, data_dir: str | os.PathLike[str] | None = None, *, create: bool = True, vector_store: str | None = None
    ) -> None:
        """``create=False``: raise :class:`NoLibraryError` instead of creating a library that is not there.
        ``vector_store``: where the vector indexes live: None for the embedded usearch files, or a Milvus
        address ``milvus://host:19530[?token=...]`` (default ``$SOUNDSCOPE_STORE``); the catalog, columns
        and full-text indexes stay in the data directory either way."""
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
        if not create and not (self.data_dir / "catalog.sqlite").is_file():
            raise NoLibraryError(f"no library at {self.data_dir}; run soundscope index first")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.data_dir / "catalog.sqlite")
        self._columns = ColumnStore(self.catalog, self.data_dir / "columns")
        self._indexes: dict[str, LiveIndex] = {}
        self._bases: dict[str, Any] = {}  # space -> IvfIndex or MilvusIndex (the saved part)
        self._fingerprints: FingerprintIndex | None = None
        self.vector_store = vector_store if vector_store is not None else os.environ.get("SOUNDSCOPE_STORE") or None
        if self.vector_store in ("", "embedded", "usearch"):
            self.vector_store = None

    def fingerprints(self) -> FingerprintIndex:
        """The fingerprint index (``fingerprints/``), current with what a writer last saved."""
        if self._fingerprints is None:
            from .fingerprints import FingerprintIndex

            self._fingerprints = FingerprintIndex(self.data_dir / "fingerprints", self.catalog)
        else:
            self._fingerprints.refresh()
        return self._fingerprints

    def columns(self) -> Columns:
        """What text queries read about every item, current with the catalog (see :mod:`.columns`)."""
        return self._columns.current()

    def source(self, space: str) -> str:
        """Which rows hold the vectors of ``space``: "items" (one per item: descriptions), "passages"
        (transcript passages) or "segments" (audio models, one per segment)."""
        from ..ingest import DESCRIPTION_SPACE, TRANSCRIPT_SPACE

        return {DESCRIPTION_SPACE: "items", TRANSCRIPT_SPACE: "passages"}.get(space, "segments")

    def _dim(self, space: str) -> int:
        from ..ingest import DESCRIPTION_SPACE, TRANSCRIPT_SPACE

        models = self.catalog.models()
        model = models.get(space)
        if model is None:
            raise KeyError(f"no vectors of space {space!r} in {self.data_dir}")
        if space == TRANSCRIPT_SPACE:  # passages are embedded by the text encoder
            return int(models.get(DESCRIPTION_SPACE, {"dim": 512})["dim"])
        return int(model["dim"])

    def _base(self, space: str, dim: int):
        """The saved index of ``space`` (memory-mapped when large), reopened when a writer replaced it."""
        if self.vector_store:
            return self._milvus_base(space, dim)
        path = self.data_dir / "vectors" / f"{space}.ivf"
        base = self._bases.get(space)
        try:
            stamp = os.stat(f"{path}.json").st_mtime_ns
        except OSError:
            stamp = -1
        if base is None or getattr(base, "_stamp", None) != stamp:
            base = IvfIndex.open(path, dim)
            if base.catalog != (self.catalog.get_meta("created_at") or ""):
                base = IvfIndex(path, dim)  # built from another catalog (or none): start over
            base._stamp = stamp  # type: ignore[attr-defined]
            self._bases[space] = base
        return base

    def _milvus_base(self, space: str, dim: int):
        """The collection of ``space`` on the Milvus server, named for this library (two libraries on one
        server never share a collection); one built from another catalog is cleared and refilled."""
        import hashlib

        from .milvus import from_uri, parse_uri

        base = self._bases.get(space)
        created = self.catalog.get_meta("created_at") or ""
        if base is None:
            tag = hashlib.sha1(created.encode()).hexdigest()[:8]
            base = from_uri(self.vector_store, space, dim, prefix=f"{parse_uri(self.vector_store)['prefix']}_{tag}")
            self._bases[space] = base
        else:
            base.refresh()  # another process may have saved since
        if base.catalog not in ("", created) or (base.catalog == "" and base.generation < 0 and len(base)):
            base.clear()
        return base

    @staticmethod
    def _fresh(base, dim: int):
        """``base`` (a Milvus collection) emptied, for a rebuild (an embedded index is retrained instead)."""
        base.clear()
        return base

    def vectors(self, space: str) -> LiveIndex:
        """The nearest-neighbour index of ``space``, current with the catalog: the saved index plus the
        vectors added and the keys deleted since it was saved (no rebuild; see :meth:`flush`)."""
        generation = self.catalog.generation("passages" if self.source(space) == "passages" else space)
        idx = self._indexes.get(space)
        if idx is not None and idx.generation == generation and idx.base is self._bases.get(space):
            return idx
        base = self._base(space, self._dim(space))
        source = self.source(space)
        keys, vecs = self.catalog.vectors_range(source, space, after=base.upto)
        dead = self.catalog.tombstones(source, since=base.tomb_seq)
        idx = LiveIndex(base, keys, vecs, dead, generation, exact=partial(self.catalog.vectors_of, source, space))
        self._indexes[space] = idx
        return idx

    def flush(self, *, force: bool = False) -> None:
        """Fold what changed into the saved accelerators: each vector index whose delta exceeds
        :data:`.vectors.DELTA_MAX` (or any, with ``force``) is updated by key and saved, and the column
        delta is written as a part once large. The writer calls this at the end of an index run."""
        self._columns.flush(force=force)
        if self._fingerprints is not None:
            self._fingerprints.flush()
        for space in self.catalog.models():
            try:
                dim = self._dim(space)
            except KeyError:
                continue
            if dim <= 0:
                continue
            source = self.source(space)
            upto, tomb = self.catalog.max_id(source), self.catalog.tombstone_seq()  # before the delta is read
            live = self.vectors(space)
            behind = live.base.upto < upto or live.base.tomb_seq < tomb
            if live.stale == 0 and behind and isinstance(live.base, IvfIndex):
                self._advance(space, live.base, upto=upto, tomb=tomb)
                continue
            if live.stale == 0 or (live.stale <= _vectors.DELTA_MAX and not force):
                continue
            base = live.base
            ahead = base.upto > upto or base.tomb_seq > tomb  # cannot be (ids are never reused): rebuild
            if isinstance(base, IvfIndex) and (ahead or base.needs_rebuild(len(live))):
                base = self._retrain(space, base.path, dim, upto)  # first build, or outgrew its lists
            else:
                base = self._fresh(base, dim) if ahead else base.writable()
                self._fold(space, base, upto=upto, tomb=tomb)
            try:
                base.save(
                    self.catalog.generation(space),
                    upto=upto,
                    tomb_seq=tomb,
                    catalog=self.catalog.get_meta("created_at") or "",
                )
            except OSError:
                continue  # read-only or full disk: readers keep applying the delta themselves
            if not isinstance(base, IvfIndex):
                self._indexes.pop(space, None)
                continue
            self._bases.pop(space, None)
            self._indexes.pop(space, None)
            _drop_legacy(self.data_dir / "vectors", space)

    def _fold(self, space: str, base, *, upto: int, tomb: int) -> None:
        """Apply to ``base`` the catalog's deletions since its watermark and add its keys above it."""
        source = self.source(space)
        base.remove(self.catalog.tombstones(source, since=base.tomb_seq, until=tomb))
        for keys, vecs in self._vector_chunks(source, space, after=base.upto, upto=upto):
            if isinstance(base, IvfIndex):
                base.remove(keys)  # idempotent: a key that somehow is there already is replaced
            base.add(keys, vecs)  # (Milvus upserts)

    def _retrain(self, space: str, path: Path, dim: int, upto: int) -> IvfIndex:
        """A new index of ``space`` over every catalog vector with key <= ``upto``: lists sized for
        their count and trained on a random sample of them, then filled chunk by chunk (bounded memory)."""
        from . import ivf

        source = self.source(space)
        keys = self.catalog.vector_keys(source, space)
        keys = keys[keys <= upto]
        base = IvfIndex(path, dim)
        if keys.size == 0:
            return base  # nothing left: an empty index
        rng = np.random.default_rng(0)
        want = min(keys.size, ivf.TRAIN_MAX, ivf.TRAIN_PER_LIST * ivf.lists_for(keys.size))
        _, sample = self.catalog.vectors_of(source, space, rng.choice(keys, size=want, replace=False).tolist())
        base.train(sample, keys.size)
        for got, vecs in self._vector_chunks(source, space, after=0, upto=upto):
            base.add(got, vecs)
        return base

    def _vector_chunks(self, source: str, space: str, *, after: int, upto: int):
        """(keys (m,), vectors (m, d)) of ``space`` with after < key <= upto, :data:`FOLD_CHUNK` keys of range
        at a time: bounded memory on a large backlog or a rebuild."""
        for lo in range(after, upto, FOLD_CHUNK):
            yield self.catalog.vectors_range(source, space, after=lo, upto=min(upto, lo + FOLD_CHUNK))

    def _advance(self, space: str, base: IvfIndex, *, upto: int, tomb: int) -> None:
        """Nothing to fold into ``space``'s index: move its watermarks only (see :meth:`IvfIndex.advance`)."""
        if base.upto > upto or base.tomb_seq > tomb:
            return  # ahead of the catalog (cannot be: ids are never reused): not moved back
        created = self.catalog.get_meta("created_at") or ""  # _base already replaced another catalog's index
        try:
            base.advance(self.catalog.generation(space), upto=upto, tomb_seq=tomb, catalog=created)
        except OSError:
            return  # read-only or full disk: readers keep applying the (empty) delta themselves
        self._bases.pop(space, None)
        self._indexes.pop(space, None)
        _drop_legacy(self.data_dir / "vectors", space)

    def close(self) -> None:
        for base in self._bases.values():
            if not isinstance(base, IvfIndex):
                base.close()
        self.catalog.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
