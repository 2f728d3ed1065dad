"""Store: one data directory holding the SQLite catalog and one vector index per embedding space.

Layout of ``<data_dir>``::

    catalog.sqlite            items, segments, scores, vectors (truth), FTS5, failures, model registry
    vectors/<space>.usearch   nearest-neighbour index for <space>, rebuilt from the catalog when stale
"""

from __future__ import annotations

import os
from pathlib import Path

from .catalog import Catalog, IncompatibleIndexError, ItemRow, SegmentData
from .vectors import UsearchIndex, VectorIndex

__all__ = [
    "Catalog",
    "IncompatibleIndexError",
    "ItemRow",
    "NoLibraryError",
    "SegmentData",
    "Store",
    "VectorIndex",
    "default_data_dir",
]


class NoLibraryError(FileNotFoundError):
    """A read-only command was pointed at a data directory that holds no library (a typo in a path
    must not silently create an empty one)."""


def default_data_dir() -> Path:
    """``$SOUNDSCOPE_DATA_DIR``, else ``$XDG_DATA_HOME/soundscope``, else ``~/.local/share/soundscope``."""
    env = os.environ.get("SOUNDSCOPE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "soundscope"


class Store:
    """The catalog plus lazily opened, self-healing vector indexes."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None, *, create: bool = True) -> None:
        """``create=False``: raise :class:`NoLibraryError` instead of creating a library that is not there."""
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
        if not create and not (self.data_dir / "catalog.sqlite").is_file():
            raise NoLibraryError(f"no library at {self.data_dir}; run soundscope index first")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.data_dir / "catalog.sqlite")
        self._indexes: dict[str, VectorIndex] = {}

    def vectors(self, space: str) -> VectorIndex:
        """The index of segment vectors for ``space``, rebuilt from the catalog if it is behind."""
        idx = self._indexes.get(space)
        generation = self.catalog.generation(space)
        if idx is not None and getattr(idx, "generation", None) == generation:
            return idx
        model = self.catalog.models().get(space)
        if model is None:
            raise KeyError(f"no vectors of space {space!r} in {self.data_dir}")
        idx = UsearchIndex.open(self.data_dir / "vectors" / f"{space}.usearch", model["dim"])
        if idx.generation != generation:
            idx = UsearchIndex(idx.path, model["dim"])
            keys, vecs = self.catalog.segment_vectors(space)
            idx.add(keys, vecs)
            idx.save(generation)
        self._indexes[space] = idx
        return idx

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
