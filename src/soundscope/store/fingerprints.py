"""The fingerprint index: landmark hashes of every item, as immutable memory-mapped sorted parts.

Layout of ``<data_dir>/fingerprints/``::

    manifest.json        parts, the catalog it belongs to, the tombstone sequence it has applied,
                         item ids still in parts but deleted from the catalog (``dead``)
    <part>-h.npy         uint32 hashes, sorted
    <part>-i.npy         uint32 item ids, aligned with the hashes
    <part>-t.npy         uint32 anchor frames (32 ms), aligned with the hashes
    <part>-ids.npy       uint32 distinct item ids of the part, sorted
    <part>-s.npy         uint64 (8, w) sketch windows (fingerprint.sketch_bits), word-major, ordered by
    <part>-si.npy        ... uint32 item id (w,) and
    <part>-sw.npy        ... uint32 window number in the item (w,): an item's windows are consecutive

12 bytes per hash, ~30 hashes per second of audio: ~1.3 MB per audio hour, plus 72 bytes per sketch
window (one a second: 0.26 MB per hour), so 10^5 tracks of 4 minutes (6,700 h) take ~11 GB. A hash
look-up is a binary search per part (``np.searchsorted`` on a memory-mapped array): no table in RAM,
and the cost grows with log(size) plus the hits returned. The sketch look-up
(:meth:`FingerprintIndex.sketch_search`, only for queries the landmarks leave unsure) is a scan, linear
in the size (measured with ``scripts/bench_identify_growth.py``).

Kept beside the catalog, not in it (a table of 10^9 rows in SQLite would be larger and slower), and
in step with it the same way the vector indexes are: the writer appends a part per batch of items;
items deleted from the catalog are found through its tombstones (``Catalog.tombstones("items")``)
and masked at read time until a merge purges them. More than :data:`MAX_PARTS` parts are merged
tierwise (the smallest together). A part is written under a temporary name and the manifest replaced
atomically, so a crash leaves the previous manifest valid; items committed to the catalog whose
fingerprints were not yet written are reported by :meth:`FingerprintIndex.missing` and re-fingerprinted
by the next index run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..fingerprint import PARAMS, SKETCH_WORDS, Fingerprint, sketch_hits, sketch_places
from .catalog import Catalog

MAX_PARTS = 8
PRESENT = np.uint32(0xFFFFFFFF)  # one entry per item with this hash (no real hash has it, see fingerprint.pack):
# an item whose audio gave no hashes (silence) is still known to be fingerprinted
BUFFER_MAX = 2_000_000  # hashes held by the writer before a part is written
PURGE_SHARE = 0.1  # dead hashes above this share of the index trigger a full merge
HASH_SPACE = 1 << 20  # distinct hash values (fingerprint.pack)
BUCKET_CAP = 3  # a look-up skips hashes stored more than this many times the average (and >= 64): the
# commonest landmarks (low notes, short gaps) say little about which recording it is and cost the most hits


COLUMNS = ("h", "i", "t", "ids", "s", "si", "sw")  # a part's files, <part>-<column>.npy


@dataclass
class _Part:
    name: str
    hashes: np.ndarray
    items: np.ndarray
    times: np.ndarray
    ids: np.ndarray
    sketch: np.ndarray  # (SKETCH_WORDS, w) uint64
    sketch_items: np.ndarray  # (w,) uint32
    sketch_windows: np.ndarray  # (w,) uint32

    def __len__(self) -> int:
        return int(self.hashes.shape[0])


def _part_problems(part: _Part, entry: dict[str, Any]) -> list[str]:
    """What is wrong inside one opened part (lengths, order, its ids column, the manifest's count)."""
    n = len(part)
    if part.items.shape[0] != n or part.times.shape[0] != n:
        return [f"columns of unequal length ({n}, {part.items.shape[0]}, {part.times.shape[0]})"]
    out = []
    if entry.get("n", n) != n:
        out.append(f"holds {n} entries, the manifest says {entry.get('n')}")
    step = 1 << 24  # read in blocks: bounded memory on a part of 10^9 entries
    seen = []
    for lo in range(0, n, step):
        h = np.asarray(part.hashes[lo : min(n, lo + step + 1)])
        if h.size > 1 and bool((h[1:] < h[:-1]).any()):
            out.append("hashes not sorted")
            break
        seen.append(np.unique(np.asarray(part.items[lo : lo + step])))
    items = np.unique(np.concatenate(seen)) if seen else np.zeros(0, np.uint32)
    if not np.array_equal(items, np.asarray(part.ids)):
        out.append("its item list does not match its entries")
    return out + _sketch_problems(part)


def _sketch_problems(part: _Part) -> list[str]:
    """What is wrong with a part's sketch columns (shape, lengths, order, items the part does not hold)."""
    w = part.sketch_items.shape[0]
    if part.sketch.ndim != 2 or part.sketch.shape != (SKETCH_WORDS, w) or part.sketch_windows.shape[0] != w:
        return [f"sketch columns of unequal shape ({part.sketch.shape}, {w}, {part.sketch_windows.shape[0]})"]
    i, k = np.asarray(part.sketch_items, np.int64), np.asarray(part.sketch_windows, np.int64)
    if w > 1 and bool(((i[1:] < i[:-1]) | ((i[1:] == i[:-1]) & (k[1:] != k[:-1] + 1))).any()):
        return ["sketch windows not in (item, window) order"]
    if not np.isin(np.unique(i), np.asarray(part.ids, np.int64)).all():
        return ["sketch windows of items the part does not hold"]
    return []


class FingerprintIndex:
    """Reader and (under the index lock) writer of ``<data_dir>/fingerprints``."""

    def __init__(self, directory: str | os.PathLike[str], catalog: Catalog) -> None:
        self.dir = Path(directory)
        self.catalog = catalog
        self._buffer: list[tuple[int, Fingerprint]] = []
        self._buffered = 0
        self._stamp: int | None = None
        self._written: list[str] = []  # parts written by the flush under way
        self._load()

    # -- reading -------------------------------------------------------------------------------
    def _manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def _load(self) -> None:
        path = self._manifest_path()
        try:
            stamp = os.stat(path).st_mtime_ns
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            stamp, manifest = -1, {}
        created = self.catalog.get_meta("created_at") or ""
        if manifest.get("catalog") != created or manifest.get("params") != PARAMS:
            manifest = {}  # built for another catalog or other settings: start over
        self.manifest: dict[str, Any] = {
            "catalog": created,
            "params": PARAMS,
            "parts": manifest.get("parts", []),
            "tomb_seq": int(manifest.get("tomb_seq", 0)),
            "dead": manifest.get("dead", []),
        }
        self.parts, self.broken = [], []  # an unreadable part is left out: its items become missing()
        for p in self.manifest["parts"]:
            try:
                self.parts.append(self._open_part(p["name"]))
            except (OSError, ValueError):
                self.broken.append(p["name"])
        self.manifest["parts"] = [p for p in self.manifest["parts"] if p["name"] not in self.broken]
        self._stamp = stamp
        self._dead_cache: tuple[int, np.ndarray] | None = None

    def _open_part(self, name: str) -> _Part:
        cols = [np.load(self.dir / f"{name}-{c}.npy", mmap_mode="r") for c in COLUMNS]
        return _Part(name, *cols)

    def refresh(self) -> None:
        """Reopen the manifest if a writer replaced it since."""
        try:
            stamp = os.stat(self._manifest_path()).st_mtime_ns
        except OSError:
            stamp = -1
        if stamp != self._stamp:
            self._load()

    def dead(self) -> np.ndarray:
        """Sorted item ids still in parts but deleted from the catalog (masked out of every look-up)."""
        seq = self.catalog.tombstone_seq()
        if self._dead_cache is None or self._dead_cache[0] != seq:
            since = self.catalog.tombstones("items", since=self.manifest["tomb_seq"])
            self._dead_cache = (seq, np.union1d(np.asarray(self.manifest["dead"], np.int64), since).astype(np.int64))
        return self._dead_cache[1]

    def item_ids(self) -> np.ndarray:
        """Sorted ids of the live items that have fingerprints (written parts and the writer's buffer)."""
        ids = [p.ids for p in self.parts] + [np.asarray([i for i, _ in self._buffer], np.uint32)]
        every = np.unique(np.concatenate(ids).astype(np.int64)) if ids else np.zeros(0, np.int64)
        return np.setdiff1d(every, self.dead(), assume_unique=True)

    def missing(self) -> np.ndarray:
        """Ids of catalog items that have no fingerprint (indexed before fingerprints existed, or a crash
        between the catalog commit and the part write)."""
        every = np.asarray([r[0] for r in self.catalog.conn.execute("SELECT id FROM items")], np.int64)
        return np.setdiff1d(every, self.item_ids())

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored occurrence of each of ``hashes`` (m,) uint32: (query index (k,), item id (k,),
        anchor frame (k,)), dead items masked out."""
        q_idx, items, times = [], [], []
        hashes = np.asarray(hashes, np.uint32)
        for part in self.parts:
            lo = np.searchsorted(part.hashes, hashes, side="left")
            hi = np.searchsorted(part.hashes, hashes, side="right")
            counts = hi - lo
            counts[counts > max(64, BUCKET_CAP * len(part) // HASH_SPACE)] = 0
            total = int(counts.sum())
            if total == 0:
                continue
            which = np.repeat(np.arange(hashes.size), counts)
            starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
            pos = starts + np.arange(total)
            q_idx.append(which)
            items.append(np.asarray(part.items[pos]))
            times.append(np.asarray(part.times[pos]))
        if not q_idx:
            z = np.zeros(0, np.int64)
            return z, z.astype(np.uint32), z.astype(np.uint32)
        q, it, tt = np.concatenate(q_idx), np.concatenate(items), np.concatenate(times)
        dead = self.dead()
        if dead.size:
            live = ~np.isin(it, dead)
            q, it, tt = q[live], it[live], tt[live]
        return q, it, tt

    def sketch_search(self, query: list[tuple[int, np.ndarray]]) -> list[tuple[int, float, float]]:
        """``(item id, offset_s, similarity)`` of the recordings whose sketch windows best match ``query``
        (:func:`~soundscope.fingerprint.query_sketch`), best first (:func:`~soundscope.fingerprint.sketch_places`);
        dead items left out. A scan of every part's sketch columns (an item's windows are in one part)."""
        hits: list[tuple[float, int, int]] = []
        dead = self.dead()
        for part in self.parts:
            hits += sketch_hits(
                query=query, words=part.sketch, items=part.sketch_items, windows=part.sketch_windows, dead=dead
            )
        return sketch_places(hits)

    def hashes_of(self, item_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(hashes, anchor frames) stored for one item (a scan of each part holding it; for duplicates)."""
        hs, ts = [], []
        for part in self.parts:
            k = np.searchsorted(part.ids, item_id)
            if k < part.ids.size and int(part.ids[k]) == item_id:
                sel = np.flatnonzero((np.asarray(part.items) == item_id) & (np.asarray(part.hashes) != PRESENT))
                hs.append(np.asarray(part.hashes[sel]))
                ts.append(np.asarray(part.times[sel]))
        if not hs:
            return np.zeros(0, np.uint32), np.zeros(0, np.uint32)
        return np.concatenate(hs), np.concatenate(ts)

    def by_item(
        self, *, max_entries: int = 20_000_000
    ) -> tuple[dict[int, int], Iterator[tuple[int, np.ndarray, np.ndarray]]]:
        """Every live item's (hashes, anchor frames), one item at a time, in bounded memory.

        Returns (hash count per item id, iterator of (item id, hashes (n,) uint32, frames (n,) uint32)
        in id order). Each part is read once, in blocks of ``max_entries``; when the index holds more
        than ``max_entries`` live entries they are first spread by item-id range over temporary bucket
        files beside the index (as much disk as the index), so memory stays about ``max_entries`` x 12 bytes
        whatever the size of the index. The counts are complete before the iterator starts.
        """
        ids = self.item_ids()
        total = sum(len(p) for p in self.parts)
        n_buckets = max(1, -(-total // max_entries))
        bounds = ids[(np.arange(1, n_buckets) * ids.size) // n_buckets] if ids.size else np.zeros(0, np.int64)
        tmp = Path(tempfile.mkdtemp(prefix=".by-item-", dir=self.dir)) if n_buckets > 1 else None
        held: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        counts: dict[int, int] = {}
        dead = self.dead()
        try:
            for part in self.parts:
                for lo in range(0, len(part), max_entries):
                    h = np.asarray(part.hashes[lo : lo + max_entries])
                    i = np.asarray(part.items[lo : lo + max_entries])
                    t = np.asarray(part.times[lo : lo + max_entries])
                    live = (h != PRESENT) & ~np.isin(i, dead)
                    h, i, t = h[live], i[live], t[live]
                    u, c = np.unique(i, return_counts=True)
                    for item, n in zip(u.tolist(), c.tolist(), strict=True):
                        counts[item] = counts.get(item, 0) + n
                    if tmp is None:
                        held.append((h, i, t))
                        continue
                    bucket = np.searchsorted(bounds, i, side="right")
                    for b in np.unique(bucket).tolist():
                        sel = bucket == b
                        with open(tmp / f"{b}.bin", "ab") as f:
                            np.stack([h[sel], i[sel], t[sel]], axis=1).astype(np.uint32).tofile(f)
        except BaseException:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        return counts, self._iter_buckets(held, tmp, n_buckets)

    @staticmethod
    def _iter_buckets(held: list, tmp: Path | None, n_buckets: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        try:
            for b in range(n_buckets):
                if tmp is None:
                    cols = [np.concatenate([x[k] for x in held]) if held else np.zeros(0, np.uint32) for k in range(3)]
                    held.clear()
                else:
                    path = tmp / f"{b}.bin"
                    rows = np.fromfile(path, np.uint32).reshape(-1, 3) if path.exists() else np.zeros((0, 3), np.uint32)
                    cols = [rows[:, k] for k in range(3)]
                h, i, t = cols
                order = np.lexsort((t, i))
                h, i, t = h[order], i[order], t[order]
                cut = np.flatnonzero(np.diff(i)) + 1
                for s, e in zip(np.concatenate([[0], cut]), np.concatenate([cut, [i.size]]), strict=True):
                    if e > s:
                        yield int(i[s]), h[s:e], t[s:e]
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def stats(self) -> dict[str, Any]:
        n = sum(len(p) - p.ids.size for p in self.parts)  # one PRESENT entry per item is not a hash
        size = 0
        for p in self.parts:
            for c in COLUMNS:
                with contextlib.suppress(OSError):
                    size += os.path.getsize(self.dir / f"{p.name}-{c}.npy")
        return {
            "fingerprint_items": int(self.item_ids().size),
            "fingerprint_hashes": int(n),
            "fingerprint_sketch_windows": int(sum(p.sketch_items.shape[0] for p in self.parts)),
            "fingerprint_parts": len(self.parts),
            "fingerprint_bytes": int(size),
        }

    # -- verification (soundscope check) -------------------------------------------------------
    def verify(self) -> list[str]:
        """Problems of the saved index, as sentences ([] when consistent); reads the files afresh.

        Checked: the manifest parses and was built for this catalog with today's settings; each part's
        four columns load, have matching lengths, the hashes are sorted and ``ids`` is the set of its
        items; the masked items (``dead`` plus tombstones since) are all deleted from the catalog, and
        every item in a part that the catalog no longer holds is masked. Items not fingerprinted yet
        are not a problem here (:meth:`pending`).
        """
        path = self._manifest_path()
        if not path.exists():
            return []  # nothing saved yet (a new library, or killed before the first flush): pending()
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            return [f"manifest unreadable ({type(exc).__name__}: {exc})"]
        problems = []
        if manifest.get("catalog") != (self.catalog.get_meta("created_at") or ""):
            problems.append("manifest belongs to another catalog")
        if manifest.get("params") != PARAMS:
            problems.append(f"built with other settings ({manifest.get('params', {}).get('version')}, now "
                            f"{PARAMS['version']}): the next index run re-fingerprints every item")  # fmt: skip
        ids = []
        for entry in manifest.get("parts", []):
            name = entry.get("name", "?")
            try:
                part = self._open_part(name)
            except (OSError, ValueError) as exc:
                problems.append(f"part {name} unreadable ({type(exc).__name__})")
                continue
            problems += [f"part {name}: {p}" for p in _part_problems(part, entry)]
            ids.append(np.asarray(part.ids, np.int64))
        in_parts = np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)
        catalog = np.asarray([r[0] for r in self.catalog.conn.execute("SELECT id FROM items")], np.int64)
        since = self.catalog.tombstones("items", since=int(manifest.get("tomb_seq", 0)))
        masked = np.union1d(np.asarray(manifest.get("dead", []), np.int64), since)
        if (live_masked := np.intersect1d(masked, catalog)).size:
            problems.append(f"{live_masked.size} catalog item(s) masked as deleted (e.g. id {int(live_masked[0])})")
        if (unmasked := np.setdiff1d(np.setdiff1d(in_parts, catalog), masked)).size:
            problems.append(f"{unmasked.size} deleted item(s) still matched (e.g. id {int(unmasked[0])})")
        return problems

    def pending(self) -> int:
        """Catalog items not fingerprinted yet, the writer's buffer counted as done. Not a fault: a run
        killed between the catalog commit and the part write leaves some, and the next index run
        fingerprints them (``check --repair`` too, after it drops a bad part)."""
        buffered = np.asarray([i for i, _ in self._buffer], np.int64)
        return int(np.setdiff1d(self.missing(), buffered).size)

    def repair(self) -> int:
        """Rewrite the manifest from the parts that pass :meth:`verify`'s checks (the others are dropped,
        and their items become :meth:`missing`), with the masked set recomputed from the catalog. Returns
        the parts dropped. The caller holds the index lock and re-fingerprints :meth:`missing` items."""
        try:
            manifest = json.loads(self._manifest_path().read_text())
        except (OSError, ValueError):
            manifest = {}
        same = (
            manifest.get("catalog") == (self.catalog.get_meta("created_at") or "") and manifest.get("params") == PARAMS
        )
        good, dropped = [], 0
        for entry in manifest.get("parts", []) if same else []:
            try:
                part = self._open_part(entry["name"])
                ok = not _part_problems(part, entry)
            except (OSError, ValueError, KeyError):
                ok = False
            good += [part] if ok else []
            dropped += not ok
        dropped += 0 if same else len(manifest.get("parts", []))
        catalog = np.asarray([r[0] for r in self.catalog.conn.execute("SELECT id FROM items")], np.int64)
        in_parts = np.unique(np.concatenate([np.asarray(p.ids, np.int64) for p in good])) if good else catalog[:0]
        self.manifest = {"catalog": self.catalog.get_meta("created_at") or "", "params": PARAMS,
                         "parts": [{"name": p.name, "n": len(p), "items": int(p.ids.size)} for p in good],
                         "tomb_seq": self.catalog.tombstone_seq(),
                         "dead": [int(x) for x in np.setdiff1d(in_parts, catalog)]}  # fmt: skip
        self._write_manifest()
        self._load()
        return dropped

    # -- writing (the caller holds the index lock) ------------------------------------------
    def add(self, item_id: int, fp: Fingerprint) -> None:
        """Queue one item's fingerprint; written as part of the next part (at :data:`BUFFER_MAX` or
        :meth:`flush`). An item already indexed is not added twice."""
        if any(int(p.ids[min(np.searchsorted(p.ids, item_id), p.ids.size - 1)]) == item_id
               for p in self.parts if p.ids.size):  # fmt: skip
            return
        self._buffer.append((item_id, fp))
        self._buffered += int(fp.hashes.size)
        if self._buffered >= BUFFER_MAX:
            self.flush()

    def flush(self) -> None:
        """Write the buffered fingerprints as a part, record new tombstones, merge when needed."""
        self.refresh()
        parts = list(self.parts)
        self._written = []
        if self._buffer:
            h = np.concatenate([np.append(fp.hashes, PRESENT) for _, fp in self._buffer]).astype(np.uint32)
            t = np.concatenate([np.append(fp.times, 0) for _, fp in self._buffer]).astype(np.uint32)
            i = np.concatenate([np.full(fp.hashes.size + 1, item, np.uint32) for item, fp in self._buffer])
            sketch = np.concatenate([fp.sketch.reshape(-1, SKETCH_WORDS) for _, fp in self._buffer]).T
            si = np.concatenate([np.full(fp.sketch.shape[0], item, np.uint32) for item, fp in self._buffer])
            sw = np.concatenate([np.arange(fp.sketch.shape[0], dtype=np.uint32) for _, fp in self._buffer])
            parts.append(self._write_part(h, i, t, (sketch, si, sw)))
        seq = self.catalog.tombstone_seq()
        dead = self.dead()
        present = np.unique(np.concatenate([p.ids for p in parts]).astype(np.int64)) if parts else np.zeros(0)
        dead = np.intersect1d(dead, present)
        parts = self._merge(parts, dead)
        still = np.unique(np.concatenate([p.ids for p in parts]).astype(np.int64)) if parts else np.zeros(0)
        dead = np.intersect1d(dead, still)
        old = ({p.name for p in self.parts} | set(self._written)) - {p.name for p in parts}
        self.manifest.update(
            parts=[{"name": p.name, "n": len(p), "items": int(p.ids.size)} for p in parts],
            tomb_seq=seq,
            dead=[int(x) for x in dead],
        )
        self._write_manifest()
        self.parts = parts
        self._buffer, self._buffered = [], 0
        self._dead_cache = None
        for name in old:  # readers that mapped them keep their pages (POSIX)
            for c in COLUMNS:
                with contextlib.suppress(OSError):
                    os.unlink(self.dir / f"{name}-{c}.npy")

    def _merge(self, parts: list[_Part], dead: np.ndarray) -> list[_Part]:
        total = sum(len(p) for p in parts)
        dead_n = sum(int(np.isin(np.asarray(p.items), dead).sum()) for p in parts) if dead.size else 0
        if total and dead_n > PURGE_SHARE * total:
            return [self._combine(parts, dead)] if total > dead_n else []
        parts = sorted(parts, key=len, reverse=True)
        while len(parts) > MAX_PARTS:
            k = len(parts) - MAX_PARTS + 1  # the k smallest become one
            parts = [*parts[:-k], self._combine(parts[-k:], dead)]
            parts.sort(key=len, reverse=True)
        return parts

    def _combine(self, parts: list[_Part], dead: np.ndarray) -> _Part:
        h = np.concatenate([np.asarray(p.hashes) for p in parts])
        i = np.concatenate([np.asarray(p.items) for p in parts])
        t = np.concatenate([np.asarray(p.times) for p in parts])
        sketch = np.concatenate([np.asarray(p.sketch) for p in parts], axis=1)
        si = np.concatenate([np.asarray(p.sketch_items) for p in parts])
        sw = np.concatenate([np.asarray(p.sketch_windows) for p in parts])
        if dead.size:
            live = ~np.isin(i, dead)
            h, i, t = h[live], i[live], t[live]
            live = ~np.isin(si, dead)
            sketch, si, sw = sketch[:, live], si[live], sw[live]
        return self._write_part(h, i, t, (sketch, si, sw), presorted=False)

    def _write_part(
        self, h: np.ndarray, i: np.ndarray, t: np.ndarray, sketches: tuple[np.ndarray, np.ndarray, np.ndarray],
        *, presorted: bool = False,
    ) -> _Part:  # fmt: skip
        """Write a part from its hash columns and ``sketches`` = (words (SKETCH_WORDS, w) uint64, item ids
        (w,), window numbers (w,)); ``presorted``: the hashes are already in order (sketches are put in
        (item, window) order here)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not presorted:
            order = np.lexsort((t, i, h))
            h, i, t = h[order], i[order], t[order]
        sketch, si, sw = sketches
        order = np.lexsort((sw, si))
        sketch, si, sw = np.asarray(sketch, np.uint64).reshape(SKETCH_WORDS, -1)[:, order], si[order], sw[order]
        name = f"p{time.time_ns():x}-{uuid.uuid4().hex[:6]}"
        self._written.append(name)
        ids = np.unique(i).astype(np.uint32)
        columns = (("h", h), ("i", i), ("t", t), ("ids", ids), ("s", sketch), ("si", si), ("sw", sw))
        for c, arr in columns:
            tmp = self.dir / f".{name}-{c}.npy.tmp"
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(arr, dtype=np.uint64 if c == "s" else np.uint32))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / f"{name}-{c}.npy")
        return self._open_part(name)

    def _write_manifest(self) -> None:
        tmp = self.dir / ".manifest.json.tmp"
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(self.manifest, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._manifest_path())
        self._stamp = os.stat(self._manifest_path()).st_mtime_ns
