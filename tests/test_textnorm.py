"""jieba's fast-loading cache (textnorm._fast_initialize) and the str -> int table under it (strtable):
segmentation identical to jieba's own loading, the cache made once, a broken cache falling back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from soundscope import strtable, textnorm

jieba = textnorm._import_jieba()

# Short queries, mixed Chinese/English with digits, traditional characters, punctuation (full- and half-width),
# unknown words left to the HMM (噼啪, 嗡嗡), a run of single characters, empty and whitespace, and a paragraph.
TEXTS = [
    "给我推荐一首慢歌",
    "下雨的声音",
    "狗叫",
    "篝火噼啪声",
    "嗡嗡声和鸟叫声",
    "给我找一些 jazz 钢琴曲, 120 BPM 左右",
    "播放Taylor Swift的Love Story",
    "下雨天適合聽的輕音樂",
    "請給我推薦幾首古典音樂，謝謝！",
    "“雷声”、‘风声’；还有（海浪声）……？",
    "的的的的的了了了",
    "一二三四五六七八九十",
    "",
    "  \t\n ",
    "dog barking",
    "3.5mm耳机 & 蓝牙-5.0 音箱 #1 50%",
    "清晨的森林里，鸟儿在枝头欢快地歌唱，远处传来溪水潺潺流动的声音。一阵微风吹过，树叶沙沙作响，"
    "偶尔还能听到几声布谷鸟的啼叫。到了傍晚，天空下起了小雨，雨滴打在屋檐上发出清脆的滴答声，"
    "远处的雷声隆隆作响，人们纷纷回家，点起篝火，听着柴火噼啪噼啪地燃烧，享受这宁静的夜晚。",
]


def _cuts(tok) -> list:
    """Every segmentation soundscope or a jieba caller can ask for, text by text."""
    return [
        (
            tok.lcut(t),
            tok.lcut(t, HMM=False),
            tok.lcut(t, cut_all=True),
            list(tok.tokenize(t)),
            list(tok.tokenize(t, mode="search")),
            tok.lcut_for_search(t),
            tok.lcut_for_search(t, HMM=False),
        )
        for t in TEXTS
    ]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, object]]:
    """(cache root, reference): a first tokenizer through the fast path with an empty cache, which initialises
    it by jieba's own loading (the ~1 s reference, done once here) and makes the cache from it."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOUNDSCOPE_CACHE_DIR", str(root))
        reference = jieba.Tokenizer()
        textnorm._initialize(jieba, reference)
        assert type(reference.FREQ) is dict and reference.initialized
        yield root, reference


@pytest.fixture()
def fast(made: tuple[Path, object], monkeypatch: pytest.MonkeyPatch):
    """A tokenizer loaded from the made cache, as every later process loads jieba.dt."""
    monkeypatch.setenv("SOUNDSCOPE_CACHE_DIR", str(made[0]))
    tok = jieba.Tokenizer()
    textnorm._initialize(jieba, tok)
    assert isinstance(tok.FREQ, strtable.Memo) and tok.initialized  # not the fallback
    return tok


def _folder(root: Path) -> Path:
    (folder,) = root.glob("jieba-*")
    return folder


def test_segmentation_is_jiebas(fast, made) -> None:
    """lcut (HMM on and off, full mode), tokenize (both modes) and cut_for_search equal jieba's own, text by text."""
    reference = made[1]
    assert fast.total == reference.total
    for text, got, want in zip(TEXTS, _cuts(fast), _cuts(reference), strict=True):
        assert got == want, text


def test_table_answers_like_the_dict(fast, made) -> None:
    """Every key (prefixes of frequency 0 included) is ``in`` with its value; other strings are not, and ``get``
    gives None or the default for them."""
    freq, reference = fast.FREQ, made[1].FREQ
    assert all(key in freq and freq[key] == value and freq.get(key, -1) == value for key, value in reference.items())
    for miss in ["慢歌歌歌", "zzzqqq", "🐶", "的" * 40, "\x00", ""]:
        assert miss not in reference
        assert miss not in freq and freq.get(miss) is None and freq.get(miss, 7) == 7


def test_cache_is_made_once_and_reused(made, monkeypatch: pytest.MonkeyPatch) -> None:
    """One versioned folder, no temp folder left, and a later tokenizer reads it instead of writing it again."""
    root = made[0]
    folder = _folder(root)
    assert folder.name.startswith(f"jieba-{jieba.__version__}-") and (folder / "done").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def no_remake(*args) -> None:
        raise AssertionError("the cache was made again")

    monkeypatch.setattr(textnorm, "_make_jieba_cache", no_remake)
    monkeypatch.setenv("SOUNDSCOPE_CACHE_DIR", str(root))
    tok = jieba.Tokenizer()
    textnorm._initialize(jieba, tok)
    assert isinstance(tok.FREQ, strtable.Memo)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps


@pytest.mark.parametrize("damage", ["truncated slots", "bad meta", "missing values"])
def test_a_broken_cache_falls_back_to_jieba(damage: str, made, tmp_path: Path, monkeypatch) -> None:
    """A damaged cache fails the load, and the tokenizer is initialised by jieba's own loading instead (stubbed
    here with the reference's dict: the real one is the fixture's ~1 s)."""
    folder, reference = _folder(made[0]), made[1]
    broken = tmp_path / folder.name
    shutil.copytree(folder, broken)
    if damage == "truncated slots":
        (broken / "freq.slots.npy").write_bytes((folder / "freq.slots.npy").read_bytes()[:1000])
    elif damage == "bad meta":
        (broken / "meta").write_text("not numbers")
    else:
        (broken / "freq.values.npy").unlink()
    monkeypatch.setenv("SOUNDSCOPE_CACHE_DIR", str(tmp_path))
    tok = jieba.Tokenizer()

    def own_loading() -> None:
        tok.FREQ, tok.total, tok.initialized = reference.FREQ, reference.total, True

    monkeypatch.setattr(tok, "initialize", own_loading)
    textnorm._initialize(jieba, tok)
    assert tok.FREQ is reference.FREQ
    assert tok.lcut(TEXTS[0]) == reference.lcut(TEXTS[0])


def test_add_word_and_suggest_freq_work_after_the_fast_load(fast, made) -> None:
    """add_word / suggest_freq change the fast tokenizer as they change jieba's dict, and the added words
    survive the memo starting over."""
    reference = made[1]
    plain = jieba.Tokenizer()  # a copy of the reference, so the shared one stays jieba's own
    plain.FREQ, plain.total, plain.initialized = dict(reference.FREQ), reference.total, True
    fast.FREQ.limit = 3  # the memo starts over every few strings
    for tok in (fast, plain):
        tok.add_word("篝火噼啪声")
        tok.add_word("慢歌曲", freq=50_000)
        tok.suggest_freq(("中", "将"), tune=True)  # 494, not 0: a 0 would add to finalseg's global force-splits
        tok.suggest_freq("噼啪声", tune=True)
    assert fast.total == plain.total
    assert "篝火噼啪" in fast.FREQ and fast.FREQ["篝火噼啪"] == 0 and fast.FREQ.get("慢歌曲") == 50_000
    assert fast.FREQ["中将"] == plain.FREQ["中将"] == 494 and fast.FREQ["噼啪声"] == plain.FREQ["噼啪声"] > 0
    assert fast.lcut("篝火噼啪声和慢歌曲") == ["篝火噼啪声", "和", "慢歌曲"]
    assert _cuts(fast) == _cuts(plain)
    assert len(fast.FREQ) <= 3 + len(fast.FREQ.written)


def test_a_fresh_process_loads_jieba_from_the_cache(made) -> None:
    """In a new process _jieba() uses the cache, never imports pkg_resources, and jieba's bundled files (the
    HMM tables lcut uses, posseg's tables and dictionary) still load: posseg tags as with jieba's own loading."""
    import jieba.posseg

    root, reference = made
    code = (
        "import json, sys\n"
        "from soundscope import strtable, textnorm\n"
        "jb = textnorm._jieba()\n"
        "loaded = isinstance(jb.dt.FREQ, strtable.Memo) and 'pkg_resources' not in sys.modules\n"
        "import jieba.posseg\n"
        "texts = json.loads(sys.stdin.read())\n"
        "print(json.dumps([loaded, [jb.lcut(t) for t in texts], [list(map(tuple, jieba.posseg.lcut(t))) "
        "for t in texts]]))\n"
    )
    env = {**os.environ, "SOUNDSCOPE_CACHE_DIR": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(TEXTS), capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    loaded, cuts, tags = json.loads(out.stdout)
    assert loaded
    assert cuts == [reference.lcut(t) for t in TEXTS]
    pos = jieba.posseg.POSTokenizer(reference)
    assert tags == [[list(p) for p in pos.lcut(t)] for t in TEXTS]


def test_strtable_round_trip(tmp_path: Path) -> None:
    """A small table: every key and value back (empty, emoji, long and 0-valued keys), misses None, and a memo
    that starts over at its limit still answers."""
    table = {"": 1, "a": 0, "ab": -5, "狗叫": 2**31 - 1, "🐶" * 30: 7, "x" * 300: 3}
    max_len = strtable.save(tmp_path, "t", table)
    assert max_len == 300
    memo = strtable.Memo(tmp_path, "t", max_len, limit=2)
    for _ in range(2):
        assert all(key in memo and memo[key] == value for key, value in table.items())
    assert "abc" not in memo and memo.get("b") is None and memo.get("x" * 301, 0) == 0 and len(memo) <= 2
    with pytest.raises(ValueError):
        strtable.save(tmp_path, "big", {"a": 2**31})
