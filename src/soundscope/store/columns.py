"""Columns: what text queries read about every item, as memory-mapped arrays instead of SQLite rows.

A query scores every item on a few label columns and filters on a few scalars (duration, kind,
tempo, loudness). Reading those from SQLite (and parsing each item's JSON) on every catalog change
costs seconds at 10^5 items; here they live in column *parts* under ``<data_dir>/columns/``:

    columns/manifest.json          parts, the highest item id they cover, the tombstone watermark
    columns/<part>/ids.npy         (n,) int64 item ids, ascending
    columns/<part>/duration.npy    (n,) float32 seconds; tempo, tempo_conf, lufs likewise
    columns/<part>/kind.npy        (n,) uint8 codes into :data:`KINDS`
    columns/<part>/scores.<space>.npy   (n_labels, n) float16, label-major: a query reads k rows
    columns/<part>/closure.<space>.npy  (n_multi, n) float16: each ontology subtree's highest score
    columns/<part>/top_rows.<space>.npy, top_scores.<space>.npy, sums.<space>.npy: impact lists
                                   (see :mod:`soundscope.store.entries`)

Parts are immutable and opened with ``mmap``, so opening a large library reads almost nothing. Items
added since the last part (ids above the manifest's watermark) are read from SQLite as a small delta;
items deleted since are masked out through the catalog's tombstones. The writer (an index run) calls
:meth:`ColumnStore.flush` at the end: it writes the delta as a new part once it is big enough and
merges parts when there are too many. Like the vector indexes, the columns are an accelerator that
can always be rebuilt from the catalog (delete the folder).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import faults
from .catalog import Catalog
from .entries import LIST_STEPS, EntryMap, Term, best_of, closure_rows, entry_map, entry_rows, impact_lists

KINDS = ("sound", "music", "speech")
FORMAT = 2  # bump when the part layout changes: older parts are then rebuilt
SCALARS = ("duration", "tempo", "tempo_conf", "lufs")
FLUSH_MIN = 2000  # a delta of at least this many items (or 1/8 of the library) becomes a part
MAX_PARTS = 8  # more parts than this are merged into one
READ_CHUNK = 50_000  # item ids read from the catalog at a time when building a part


def kind_codes(kinds: np.ndarray) -> np.ndarray:
    """(n,) kind names -> (n,) uint8 codes into :data:`KINDS` (unknown names -> "sound")."""
    lookup = {k: i for i, k in enumerate(KINDS)}
    return np.asarray([lookup.get(str(k), 0) for k in kinds], np.uint8)


@dataclass
class Part:
    """One immutable block of items (or the in-memory delta)."""

    ids: np.ndarray
    scalars: dict[str, np.ndarray]
    kind: np.ndarray  # uint8
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # space -> (n_labels, n) float16
    closure: dict[str, np.ndarray] = field(default_factory=dict)  # space -> (n_multi, n) float16
    top_rows: dict[str, np.ndarray] = field(default_factory=dict)  # space -> (n_entries, d) int32 (persisted parts)
    top_scores: dict[str, np.ndarray] = field(default_factory=dict)  # space -> (n_entries, d) float16
    sums: dict[str, np.ndarray] = field(default_factory=dict)  # space -> (n_entries,) float64

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])

    def entries(self, space: str, emap: EntryMap, entries, cols=None) -> np.ndarray:
        """(k, n) float32 entry scores of this part (or (k, m) for local columns ``cols``)."""
        return entry_rows(scores=self.scores[space], closure=self.closure[space], emap=emap, entries=entries, cols=cols)


@dataclass
class Columns:
    """Every live item's query columns, concatenated over parts (rows follow ascending item id).

    Scalars are (n,) arrays; label scores stay per part (label-major) and are read through
    :meth:`label_scores`, :meth:`label_row` and :meth:`label_column`."""

    generation: int
    ids: np.ndarray  # (n,) int64 ascending; dead items included (see ``alive``)
    alive: np.ndarray  # (n,) bool: False for items deleted since their part was written
    durations: np.ndarray
    kinds_code: np.ndarray  # (n,) uint8
    tempo: np.ndarray
    tempo_conf: np.ndarray
    lufs: np.ndarray
    parts: list[Part]
    widths: dict[str, int]  # space -> number of labels
    offsets: np.ndarray  # (len(parts) + 1,) row offset of each part
    emaps: dict[str, EntryMap] = field(default_factory=dict)  # space -> its label entries (ontology tree)

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])

    def kind_is(self, kind: str) -> np.ndarray:
        return self.kinds_code == KINDS.index(kind) if kind in KINDS else np.zeros(self.n, bool)

    def positions(self, item_ids) -> np.ndarray:
        """Rows of ``item_ids`` (-1 where absent or deleted)."""
        wanted = np.atleast_1d(np.asarray(item_ids, np.int64))
        if self.ids.size == 0:
            return np.full(wanted.shape[0], -1, np.int64)
        pos = np.searchsorted(self.ids, wanted)
        clipped = np.minimum(pos, self.ids.shape[0] - 1)
        found = (pos < self.ids.shape[0]) & (self.ids[clipped] == wanted) & self.alive[clipped]
        return np.where(found, pos, -1)

    def position(self, item_id: int) -> int:
        return int(self.positions(item_id)[0])

    def label_scores(self, space: str, indices: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(n,) float32: each item's weighted sum of the label columns ``indices`` (k,) with ``weights`` (k,).
        Reads k label rows per part: O(n k) with contiguous memory, never a row per item."""
        out = np.zeros(self.n, np.float32)
        w = np.asarray(weights, np.float32)
        for p, lo in zip(self.parts, self.offsets[:-1], strict=False):
            mat = p.scores.get(space)
            if mat is None or p.n == 0:
                continue
            out[lo : lo + p.n] = w @ np.asarray(mat[np.asarray(indices)], np.float32)
        return out

    def entry_scores(self, space: str, entries, rows: np.ndarray | None = None) -> np.ndarray:
        """(k, n) float32 scores of the label-tree ``entries`` (k,) of ``space`` for every item, or (k, m)
        for the rows ``rows`` (m,): an entry's score is its group's highest label score (a label and its
        ontology descendants; see :mod:`soundscope.store.entries`), read from one stored row per entry."""
        entries = np.asarray(entries, np.int64)
        if rows is None:
            out = np.zeros((entries.size, self.n), np.float32)
            for p, lo in zip(self.parts, self.offsets[:-1], strict=False):
                if p.n and space in p.scores:
                    out[:, lo : lo + p.n] = p.entries(space, self.emaps[space], entries)
            return out
        rows = np.asarray(rows, np.int64)
        out = np.zeros((entries.size, rows.size), np.float32)
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        for k in np.unique(which).tolist():
            p, sel = self.parts[k], np.flatnonzero(which == k)
            if space in p.scores:
                out[:, sel] = p.entries(space, self.emaps[space], entries, rows[sel] - self.offsets[k])
        return out

    def weighted(self, terms: list[Term], rows: np.ndarray | None = None) -> np.ndarray:
        """(n,) float32 sum over ``terms`` of weight x entry score for every item (or (m,) for ``rows``)."""
        n = self.n if rows is None else len(rows)
        out = np.zeros(n, np.float32)
        for t in terms:
            if t.entries.size and self.has_space(t.space):
                out += np.asarray(t.weights, np.float32) @ self.entry_scores(t.space, t.entries, rows)
        return out

    def prevalence(self, space: str, entries) -> np.ndarray:
        """(k,) mean score of each entry over every row (dead rows of persisted parts included)."""
        entries = np.asarray(entries, np.int64)
        total = np.zeros(entries.size, np.float64)
        for p in self.parts:
            if not p.n or space not in p.scores:
                continue
            if space in p.sums:
                total += p.sums[space][entries]
            else:
                total += p.entries(space, self.emaps[space], entries).sum(axis=1, dtype=np.float64)
        return total / max(self.n, 1)

    def top_weighted(self, terms: list[Term], *, ok: np.ndarray, k: int, floor: float) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` rows by :meth:`weighted` among those where ``ok`` (n,) holds and the score is
        >= ``floor``: (rows, scores), best first. Exact: impact lists with the threshold rule (see
        :mod:`soundscope.store.entries`), deepened in :data:`LIST_STEPS`, then a full scan."""
        terms = [t for t in terms if t.entries.size and self.has_space(t.space)]
        for depth in LIST_STEPS:
            got = self._candidates(terms, depth)
            if got is None:
                break
            cand, bound = got
            cand = cand[ok[cand]]
            score = self.weighted(terms, cand)
            if bound < floor or int((score >= bound).sum()) >= k:
                keep = score >= floor
                cand, score = cand[keep], score[keep]
                order = np.lexsort((cand, -score))[:k]
                return cand[order], score[order]
        score = self.weighted(terms)
        return best_of(score, np.flatnonzero(ok & (score >= floor)), k)

    def _candidates(self, terms: list[Term], depth: int) -> tuple[np.ndarray, float] | None:
        """(rows, bound): the union of every term's first ``depth`` list rows in every part (all rows of a
        part without lists), and the highest weighted score an item outside them can have. None when a
        listed part is shallower than ``depth`` would need (the caller scans instead)."""
        chunks, bound = [], 0.0
        for p, lo in zip(self.parts, self.offsets[:-1], strict=False):
            if not p.n:
                continue
            listed = all(t.space in p.top_rows for t in terms)
            if not listed or p.n <= depth:
                chunks.append(lo + np.arange(p.n))
                continue
            part_bound = 0.0
            for t in terms:
                lists = p.top_rows[t.space]
                if lists.shape[1] < depth:
                    return None
                chunks.append(lo + np.asarray(lists[t.entries, :depth], np.int64).ravel())
                floor = np.asarray(p.top_scores[t.space][t.entries, depth - 1], np.float32)
                part_bound += float(np.asarray(t.weights, np.float32) @ floor)
            bound = max(bound, part_bound)
        if not chunks:
            return np.zeros(0, np.int64), 0.0
        return np.unique(np.concatenate(chunks)), bound

    def label_column(self, space: str, j: int) -> np.ndarray:
        """(n,) float32 probability of label ``j`` of ``space`` for every item."""
        return self.label_scores(space, np.array([j]), np.array([1.0], np.float32))

    def label_row(self, space: str, pos: int) -> np.ndarray:
        """(n_labels,) float32 scores of the item at row ``pos`` (zeros if it has none in ``space``)."""
        return self.label_rows(space, np.array([pos]))[0]

    def label_rows(self, space: str, rows) -> np.ndarray:
        """(m, n_labels) float32 scores of the items at rows ``rows`` (m,) (zeros for a row of -1, as
        :meth:`positions` gives for an absent item, or in a part with none in ``space``): one gather of m
        columns per part holding some of them, instead of a catalog look-up per item (what a
        query-by-example re-ranking of its ~100 neighbours needs)."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        out = np.zeros((rows.shape[0], self.widths.get(space, 0)), np.float32)
        if space not in self.widths:
            return out
        part_of = np.where(rows >= 0, np.searchsorted(self.offsets, rows, side="right") - 1, -1)
        for k in np.unique(part_of[part_of >= 0]).tolist():
            mat = self.parts[k].scores.get(space)
            if mat is None:
                continue
            sel = np.flatnonzero(part_of == k)
            out[sel] = np.asarray(mat[:, rows[sel] - self.offsets[k]], np.float32).T
        return out

    def has_space(self, space: str) -> bool:
        return space in self.widths


def space_maps(catalog: Catalog) -> dict[str, EntryMap]:
    """Label space -> its entries (the ontology tree of its labels), in registration order."""
    return {k: entry_map(tuple(v["labels"])) for k, v in catalog.models().items() if v["labels"]}


def _add_closures(part: Part, emaps: dict[str, EntryMap]) -> Part:
    """Fill in the closure rows of every space the part has scores for (and zeros where it has none)."""
    for space, emap in emaps.items():
        if space not in part.closure and space in part.scores:
            part.closure[space] = closure_rows(scores=part.scores[space], emap=emap)
    return part


def read_part(catalog: Catalog, spaces: dict[str, int], *, after: int, upto: int) -> Part:
    """Items with after < id <= upto, read from SQLite into a part (label-major float16 scores)."""
    cols = catalog.item_columns(after=after, upto=upto)
    ids = cols["ids"]
    part = Part(ids, {k: cols[k] for k in SCALARS}, kind_codes(cols["kind"]))
    for space, width in spaces.items():
        mat = np.zeros((width, ids.shape[0]), np.float16)
        for lo in range(after, upto, READ_CHUNK):  # bounded memory: never all rows as float32 at once
            got, rows = catalog.item_matrix_range(space, "scores", after=lo, upto=min(upto, lo + READ_CHUNK))
            if got.size:
                pos = np.searchsorted(ids, got)
                ok = (pos < ids.shape[0]) & (ids[np.minimum(pos, ids.shape[0] - 1)] == got)
                mat[:, pos[ok]] = rows[ok].T.astype(np.float16)
        part.scores[space] = mat
    return _add_closures(part, space_maps(catalog))


class ColumnStore:
    """The column parts of one data directory, kept in step with its catalog."""

    def __init__(self, catalog: Catalog, directory: Path) -> None:
        self.catalog = catalog
        self.dir = Path(directory)
        self._lock = threading.Lock()
        self._cached: Columns | None = None
        self._parts: list[Part] = []
        self._manifest: dict | None = None

    # -- reading ---------------------------------------------------------------------------------
    def spaces(self) -> dict[str, int]:
        """Label spaces (space -> number of labels) registered in the catalog, in registration order."""
        return {k: len(v["labels"]) for k, v in self.catalog.models().items() if v["labels"]}

    def current(self) -> Columns:
        """Columns reflecting the catalog now (cached until the catalog's item generation changes)."""
        gen = self.catalog.generation("items")
        with self._lock:
            if self._cached is not None and self._cached.generation == gen:
                return self._cached
            self._cached = self._build(gen)
            return self._cached

    def _load_manifest(self, spaces: dict[str, int]) -> dict:
        """The persisted parts (memory-mapped) if they match this catalog; else none."""
        empty = {"format": FORMAT, "parts": [], "upto": 0, "tomb_seq": 0, "spaces": spaces, "dead": []}
        path = self.dir / "manifest.json"
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            self._parts = []
            return empty
        if self._manifest == m and self._parts:
            return m
        stale = (
            m.get("format") != FORMAT
            or m.get("catalog") != self.catalog.get_meta("created_at")
            or any(m["spaces"].get(s, w) != w for s, w in spaces.items())
            or m.get("upto", 0) > self.catalog.max_id("items")
        )
        if stale:
            self._parts = []
            return empty
        try:
            self._parts = [self._open_part(self.dir / name, m["spaces"]) for name in m["parts"]]
        except (OSError, ValueError, KeyError):  # replaced under us by a flush: the next build retries
            self._parts = []
            return empty
        self._manifest = m
        return m

    @staticmethod
    def _open_part(path: Path, spaces: dict[str, int]) -> Part:
        def load(name: str) -> np.ndarray:
            return np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)

        part = Part(load("ids"), {k: load(k) for k in SCALARS}, load("kind"))
        for space in spaces:
            if (path / f"scores.{space}.npy").exists():
                part.scores[space] = load(f"scores.{space}")
                part.closure[space] = load(f"closure.{space}")
                part.top_rows[space] = load(f"top_rows.{space}")
                part.top_scores[space] = load(f"top_scores.{space}")
                part.sums[space] = np.array(load(f"sums.{space}"))
        return part

    def _build(self, gen: int) -> Columns:
        spaces = self.spaces()
        m = self._load_manifest(spaces)
        upto_now = self.catalog.max_id("items")
        delta = read_part(self.catalog, spaces, after=int(m["upto"]), upto=upto_now)
        parts = [*self._parts, delta]
        emaps = space_maps(self.catalog)
        for p in parts:  # a space registered after a part was written: its items have no scores there
            for space, width in spaces.items():
                if space not in p.scores:
                    p.scores[space] = np.zeros((width, p.n), np.float16)
                    p.closure[space] = np.zeros((len(emaps[space].multi), p.n), np.float16)
        ids = np.concatenate([p.ids for p in parts])
        offsets = np.concatenate([[0], np.cumsum([p.n for p in parts])]).astype(np.int64)
        dead = np.concatenate(
            [np.asarray(m.get("dead", []), np.int64), self.catalog.tombstones("items", since=int(m["tomb_seq"]))]
        )
        alive = ~np.isin(ids, dead) if dead.size and ids.size else np.ones(ids.shape[0], bool)
        scalar = {k: np.concatenate([p.scalars[k] for p in parts]) for k in SCALARS}
        return Columns(
            generation=gen,
            ids=ids,
            alive=alive,
            durations=scalar["duration"],
            kinds_code=np.concatenate([p.kind for p in parts]),
            tempo=scalar["tempo"],
            tempo_conf=scalar["tempo_conf"],
            lufs=scalar["lufs"],
            parts=parts,
            widths=spaces,
            offsets=offsets,
            emaps=emaps,
        )

    # -- writing ---------------------------------------------------------------------------------
    def flush(self, *, force: bool = False) -> bool:
        """Persist the delta as a part once it holds :data:`FLUSH_MIN` items (or ``force``), merging
        parts beyond :data:`MAX_PARTS`; the manifest is replaced atomically. Returns whether anything
        was written. Called by the writer at the end of an index run, and by a reader that found a
        large unpersisted delta; one flusher at a time (others skip), and a read-only folder is no error."""
        import fcntl

        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dir / ".flush.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # another process is flushing
            return self._flush_locked(force)
        except OSError:
            return False  # e.g. a full or read-only disk: the columns stay an in-memory delta
        finally:
            os.close(fd)

    def _flush_locked(self, force: bool) -> bool:
        spaces = self.spaces()
        m = self._load_manifest(spaces)
        upto = self.catalog.max_id("items")
        tomb = self.catalog.tombstone_seq()
        pending = upto - int(m["upto"])
        if not force and pending < FLUSH_MIN:
            return False
        new = read_part(self.catalog, spaces, after=int(m["upto"]), upto=upto)
        gone = self.catalog.tombstones("items", since=int(m["tomb_seq"]), until=tomb)
        dead = np.concatenate([np.asarray(m.get("dead", []), np.int64), gone])
        parts, names = [*self._parts], list(m["parts"])
        if new.n:
            parts.append(new)
            names.append("")
        if parts and (len(parts) > MAX_PARTS or force):  # tiered: merge the small newer parts, or everything
            big = int(np.argmax([p.n for p in parts])) if parts else 0
            rest = sum(p.n for k, p in enumerate(parts) if k != big)
            start = big + 1 if parts and rest < parts[big].n and big + 1 < len(parts) and not force else 0
            merged = self._merge(parts[start:], dead, spaces, space_maps(self.catalog))
            parts, names = [*parts[:start], merged], [*names[:start], ""]
            if start == 0:
                dead = np.zeros(0, np.int64)
        emaps = space_maps(self.catalog)
        names = [name or self._write_part(p, emaps) for name, p in zip(names, parts, strict=True) if p.n or name]
        manifest = {
            "format": FORMAT,
            "catalog": self.catalog.get_meta("created_at"),
            "parts": names,
            "upto": upto,
            "tomb_seq": tomb,
            "spaces": spaces,
            "dead": sorted(int(x) for x in np.unique(dead)),
            "written_at": time.time(),
        }
        faults.point("columns.manifest")  # parts written, the manifest naming them not yet
        tmp = self.dir / f"manifest.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(manifest))
        os.replace(tmp, self.dir / "manifest.json")
        self._gc(set(names))
        with self._lock:
            self._manifest, self._cached = None, None
        return True

    @staticmethod
    def _merge(parts: list[Part], dead: np.ndarray, spaces: dict[str, int], emaps: dict[str, EntryMap]) -> Part:
        ids = np.concatenate([p.ids for p in parts])
        keep = ~np.isin(ids, dead) if dead.size else np.ones(ids.shape[0], bool)
        out = Part(
            ids[keep],
            {k: np.concatenate([p.scalars[k] for p in parts])[keep] for k in SCALARS},
            np.concatenate([p.kind for p in parts])[keep],
        )
        for space, width in spaces.items():
            mats = [p.scores[space] if space in p.scores else np.zeros((width, p.n), np.float16) for p in parts]
            out.scores[space] = np.concatenate(mats, axis=1)[:, keep]
        return _add_closures(out, emaps)

    def _write_part(self, part: Part, emaps: dict[str, EntryMap]) -> str:
        name = f"part-{int(part.ids[0]):010d}-{int(part.ids[-1]):010d}-{os.getpid()}-{time.time_ns() % 10**9}"
        tmp = self.dir / f".{name}.tmp"
        tmp.mkdir(parents=True)
        np.save(tmp / "ids.npy", np.ascontiguousarray(part.ids))
        for k in SCALARS:
            np.save(tmp / f"{k}.npy", np.ascontiguousarray(part.scalars[k]))
        np.save(tmp / "kind.npy", np.ascontiguousarray(part.kind))
        for space, mat in part.scores.items():
            np.save(tmp / f"scores.{space}.npy", np.ascontiguousarray(mat))
            closure = part.closure[space]
            np.save(tmp / f"closure.{space}.npy", np.ascontiguousarray(closure))
            rows, top, sums = impact_lists(scores=mat, closure=closure, emap=emaps[space])
            for what, arr in (("top_rows", rows), ("top_scores", top), ("sums", sums)):
                np.save(tmp / f"{what}.{space}.npy", arr)
        os.replace(tmp, self.dir / name)
        return name

    def _gc(self, keep: set[str]) -> None:
        """Remove parts no manifest names any more (a reader that mapped one keeps its open mapping)."""
        for entry in self.dir.iterdir():
            if entry.is_dir() and entry.name not in keep and entry.name.lstrip(".").startswith("part-"):
                shutil.rmtree(entry, ignore_errors=True)
