"""Verify a library and repair what can be rebuilt: ``soundscope check [--repair [--prune]]``.

:func:`check` runs every check on a :class:`~soundscope.store.Store` and returns a
:class:`CheckReport`. With ``repair`` it first diagnoses everything (so the report shows what was
found), then fixes each problem that has a fix, then checks those again: a problem counts as
repaired only when its check passes afterwards. Repairs take the writer lock, so they never run
while an index run writes (:class:`~soundscope.store.lock.IndexLockedError` instead).

What is checked (and what ``repair`` does):

- **sqlite integrity**: ``PRAGMA integrity_check`` (``REINDEX``, which mends broken b-tree indexes;
  anything worse needs a backup or a fresh index).
- **foreign keys**: ``PRAGMA foreign_key_check`` (delete the orphan rows).
- **orphan rows**: segments, segment data, item data and passages whose parent row is gone (delete
  them, as ``ON DELETE CASCADE`` would have).
- **full-text: items** / **full-text: transcripts**: items (passages) missing from ``items_fts``
  (``passages_fts``), rows there with no item (passage), and FTS5's own ``integrity-check`` (rebuild
  the table from ``items`` or ``passages``).
- **vectors: <space>**, for each vector space of the ``models`` table: the saved IVF index file (both
  it and its ``.json`` sidecar, readable, dimension, count, no key above its watermark), then the keys
  a search sees (the saved index plus what the catalog gained and lost since) against the ids of the
  rows holding an embedding in that space (delete the file and write it afresh from SQLite).
- **fingerprints**: the identify index (:meth:`~soundscope.store.fingerprints.FingerprintIndex.verify`):
  parts readable and well formed, deleted items masked and live ones not; items not fingerprinted yet
  are reported, not failed (drop the bad parts, recompute the mask, re-fingerprint the items left
  without, from their files).
- **files on disk**: indexed files that are gone (reported; only ``prune`` drops their items).

No saved index at all is fine (a small library is searched from the catalog delta until the writer
saves one), and so is a saved index behind the catalog: readers apply what changed since.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .store import Store
from .store.lock import IndexLock, holder
from .store.vectors import data_file

EXAMPLES = 3  # paths or messages quoted in a detail


@dataclass
class Check:
    """One verified property of the library."""

    name: str
    ok: bool
    detail: str
    repaired: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckReport:
    data_dir: str
    checks: list[Check] = field(default_factory=list)
    repair: bool = False

    @property
    def ok(self) -> bool:
        """Every check passed or was repaired."""
        return all(c.ok or c.repaired for c in self.checks)

    @property
    def problems(self) -> list[Check]:
        """The checks that still fail."""
        return [c for c in self.checks if not (c.ok or c.repaired)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_dir": self.data_dir,
            "ok": self.ok,
            "repair": self.repair,
            "checks": [c.to_dict() for c in self.checks],
        }


Diagnose = Callable[[Store], tuple[bool, str]]
Fix = Callable[[Store], str]


@dataclass
class _Spec:
    name: str
    diagnose: Diagnose
    fix: Fix | None = None


def check(store: Store, *, repair: bool, prune: bool = False) -> CheckReport:
    """Check ``store``; with ``repair``, fix what can be rebuilt (``prune``: also drop the items
    whose file is gone from disk). Repairing holds the writer lock (refused while an index runs)."""
    if repair:
        with IndexLock(store.data_dir):
            return _run(store, repair=True, prune=prune)
    writer = holder(store.data_dir)
    report = _run(store, repair=False, prune=prune)
    if writer is not None:
        who = f"pid {writer}" if writer else "another process"
        report.checks.insert(
            0, Check("writer", True, f"an index run ({who}) is writing: what it has not finished may show up here")
        )
    return report


def _run(store: Store, *, repair: bool, prune: bool) -> CheckReport:
    specs = [
        _Spec("sqlite integrity", _integrity, _reindex),
        _Spec("foreign keys", _foreign_keys, _delete_orphans),
        _Spec("orphan rows", _orphans, _delete_orphans),
        _Spec("full-text: items", _items_fts, _rebuild_items_fts),
        _Spec("full-text: transcripts", _passages_fts, _rebuild_passages_fts),
    ]
    for space in _vector_spaces(store):
        specs.append(_Spec(f"vectors: {space}", _vectors_diagnose(space), _vectors_fix(space)))
    specs.append(_Spec("fingerprints", _fingerprints, _repair_fingerprints))
    specs.append(_Spec("files on disk", _files, _prune if prune else None))

    report = CheckReport(str(store.data_dir), repair=repair)
    found = [(spec, *_safely(spec.diagnose, store)) for spec in specs]
    actions: dict[Fix, str] = {}  # a fix shared by two checks (orphans) runs once
    for spec, ok, detail in found:
        if ok or not repair or spec.fix is None:
            if not ok and repair and spec.name == "files on disk":
                detail += "; not deleted: pass --prune to drop them from the catalog"
            report.checks.append(Check(spec.name, ok, detail))
            continue
        if spec.fix not in actions:
            actions[spec.fix] = _apply(spec.fix, store)
        report.checks.append(Check(spec.name, False, f"{detail}; {actions[spec.fix]}"))
    if actions:  # check everything again: a repair counts once its check passes
        for c, (spec, ok, _) in zip(report.checks, found, strict=True):
            now_ok, now = _safely(spec.diagnose, store)
            if ok and not now_ok:  # an earlier repair left this behind (e.g. deleted rows an index holds)
                c.ok, c.detail = False, f"after the repairs: {now}"
                if spec.fix is not None:
                    c.detail += f"; {_apply(spec.fix, store)}"
                    now_ok, now = _safely(spec.diagnose, store)
                    c.repaired = now_ok
            elif not ok and spec.fix is not None:
                c.repaired = now_ok
            if not now_ok and spec.fix is not None:
                c.detail += f"; still: {now}"
    return report


def _apply(fix: Fix, store: Store) -> str:
    try:
        return fix(store)
    except (sqlite3.Error, OSError, RuntimeError, ValueError) as exc:
        return f"repair failed: {type(exc).__name__}: {exc}"


def _safely(diagnose: Diagnose, store: Store) -> tuple[bool, str]:
    try:
        return diagnose(store)
    except (sqlite3.Error, OSError, ValueError) as exc:
        return False, f"could not check: {type(exc).__name__}: {exc}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _count(store: Store, sql: str, *args: Any) -> int:
    return int(store.catalog.conn.execute(sql, args).fetchone()[0])


# -- SQLite --------------------------------------------------------------------------------------


def _integrity(store: Store) -> tuple[bool, str]:
    rows = [r[0] for r in store.catalog.conn.execute("PRAGMA integrity_check").fetchall()]
    if rows == ["ok"]:
        return True, "ok"
    return False, f"{_plural(len(rows), 'error')}: " + "; ".join(rows[:EXAMPLES])


def _reindex(store: Store) -> str:
    store.catalog.conn.execute("REINDEX")
    return "ran REINDEX (if errors remain: restore a backup, or index again into a new --data-dir)"


def _foreign_keys(store: Store) -> tuple[bool, str]:
    rows = store.catalog.conn.execute("PRAGMA foreign_key_check").fetchall()
    if not rows:
        return True, "no violations"
    tables: dict[str, int] = {}
    for r in rows:
        tables[r[0]] = tables.get(r[0], 0) + 1
    verb = "points" if len(rows) == 1 else "point"
    return False, f"{_plural(len(rows), 'row')} {verb} at missing parents: " + ", ".join(
        f"{t} {n}" for t, n in sorted(tables.items())
    )


ORPHANS = {  # table -> the WHERE clause selecting its rows whose parent is gone
    "segments": "item_id NOT IN (SELECT id FROM items)",
    "segment_data": "segment_id NOT IN (SELECT id FROM segments)",
    "item_data": "item_id NOT IN (SELECT id FROM items)",
    "passages": "item_id NOT IN (SELECT id FROM items)",
}


def _orphan_counts(store: Store) -> dict[str, int]:
    return {t: _count(store, f"SELECT count(*) FROM {t} WHERE {where}") for t, where in ORPHANS.items()}


def _orphans(store: Store) -> tuple[bool, str]:
    counts = {t: n for t, n in _orphan_counts(store).items() if n}
    if not counts:
        return True, "none"
    return False, "rows whose parent is gone: " + ", ".join(f"{t} {n}" for t, n in counts.items())


def _delete_orphans(store: Store) -> str:
    """Delete rows whose parent is gone (what ``ON DELETE CASCADE`` would have removed), children
    first, and mark the spaces they touched as changed so readers reload them."""
    cat = store.catalog
    c = cat.conn
    deleted = 0
    with cat.transaction():
        orphan_segments = f"SELECT id FROM segments WHERE {ORPHANS['segments']}"
        spaces = {
            r[0]
            for r in c.execute(
                f"SELECT DISTINCT space FROM segment_data WHERE {ORPHANS['segment_data']} "
                f"OR segment_id IN ({orphan_segments}) UNION SELECT DISTINCT space FROM item_data "
                f"WHERE {ORPHANS['item_data']}"
            )
        }
        deleted += c.execute(
            f"DELETE FROM segment_data WHERE {ORPHANS['segment_data']} OR segment_id IN ({orphan_segments})"
        ).rowcount
        deleted += c.execute(f"DELETE FROM segments WHERE {ORPHANS['segments']}").rowcount
        deleted += c.execute(f"DELETE FROM item_data WHERE {ORPHANS['item_data']}").rowcount
        passages = f"SELECT id FROM passages WHERE {ORPHANS['passages']}"
        c.execute(f"DELETE FROM passages_fts WHERE rowid IN ({passages})")
        n_passages = c.execute(f"DELETE FROM passages WHERE {ORPHANS['passages']}").rowcount
        deleted += n_passages
        for space in spaces:
            cat.bump_generation(space)
        if n_passages:
            cat.bump_generation("passages")
        cat.bump_generation("items")
    return f"deleted {_plural(deleted, 'orphan row')}"


# -- full-text indexes ---------------------------------------------------------------------------


def _fts_state(store: Store, fts: str, table: str) -> tuple[bool, str]:
    missing = _count(store, f"SELECT count(*) FROM {table} WHERE id NOT IN (SELECT rowid FROM {fts})")
    extra = _count(store, f"SELECT count(*) FROM {fts} WHERE rowid NOT IN (SELECT id FROM {table})")
    problems = []
    if missing:
        problems.append(f"{_plural(missing, table.rstrip('s'))} missing from {fts}")
    if extra:
        problems.append(f"{_plural(extra, 'row')} of {fts} with no {table.rstrip('s')}")
    try:
        store.catalog.conn.execute(f"INSERT INTO {fts}({fts}) VALUES('integrity-check')")
    except sqlite3.OperationalError:
        raise  # cannot run it (busy, read-only): not a finding about the index
    except sqlite3.DatabaseError as exc:
        problems.append(f"FTS5 integrity-check: {exc}")
    if problems:
        return False, "; ".join(problems)
    return True, f"{_plural(_count(store, f'SELECT count(*) FROM {table}'), 'row')}, in step with {table}"


def _items_fts(store: Store) -> tuple[bool, str]:
    return _fts_state(store, "items_fts", "items")


def _passages_fts(store: Store) -> tuple[bool, str]:
    return _fts_state(store, "passages_fts", "passages")


def _recreate(store: Store, fts: str) -> None:
    """Drop and recreate an FTS5 table from its own schema (works even when its index is damaged)."""
    c = store.catalog.conn
    sql = c.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (fts,)).fetchone()[0]
    c.execute(f"DROP TABLE {fts}")
    c.execute(sql)


def _rebuild_items_fts(store: Store) -> str:
    cat = store.catalog
    with cat.transaction():
        _recreate(store, "items_fts")
        rows = cat.conn.execute("SELECT id, path, tags, description FROM items ORDER BY id").fetchall()
        for r in rows:
            cat._index_text(r["id"], r["path"], json.loads(r["tags"]), r["description"])
        cat.bump_generation("items")
    return f"rebuilt items_fts from {_plural(len(rows), 'item')}"


def _rebuild_passages_fts(store: Store) -> str:
    """Each passage's FTS row holds it with its neighbours, as ``Catalog.put_item`` writes it."""
    from .textnorm import index_text

    cat = store.catalog
    by_item: dict[int, list[tuple[int, str]]] = {}
    for pid, item_id, text in cat.conn.execute("SELECT id, item_id, text FROM passages ORDER BY item_id, id"):
        by_item.setdefault(item_id, []).append((pid, text))
    n = 0
    with cat.transaction():
        _recreate(store, "passages_fts")
        for passages in by_item.values():
            texts = [t for _, t in passages]
            for k, (pid, _) in enumerate(passages):
                context = " ".join(texts[max(0, k - 1) : k + 2])
                cat.conn.execute("INSERT INTO passages_fts(rowid, text) VALUES(?, ?)", (pid, index_text(context)))
                n += 1
        cat.bump_generation("passages")
    return f"rebuilt passages_fts from {_plural(n, 'passage')}"


# -- vector indexes ------------------------------------------------------------------------------


def _vector_spaces(store: Store) -> list[str]:
    """The spaces of the models table that have a vector index (the transcript space, registered with
    dimension 0, is searched through the text encoder's vectors)."""
    out = []
    for space in sorted(store.catalog.models()):
        try:
            dim = store._dim(space)
        except KeyError:
            continue
        if dim > 0:
            out.append(space)
    return out


def _index_paths(store: Store, space: str) -> tuple[Path, Path]:
    path = store.data_dir / "vectors" / f"{space}.ivf"
    return path, Path(f"{path}.json")


def _forget(store: Store, space: str) -> None:
    """Drop what ``store`` holds of ``space``'s index, so the next use reads the file and the catalog again."""
    store._indexes.pop(space, None)
    store._bases.pop(space, None)


def _catalog_keys(store: Store, space: str) -> set[int]:
    """The catalog's side of a vector index: the keys of the rows that hold its vectors."""
    return set(store.catalog.vector_keys(store.source(space), space).tolist())


def _saved_file(store: Store, space: str) -> tuple[str | None, int | None]:
    """(problem or None, vectors in the saved index or None when there is none) for the file itself."""
    from .store.ivf import IvfIndex

    path, meta = _index_paths(store, space)
    path = data_file(path)  # the data file the sidecar names
    if not path.exists() and not meta.exists():
        return None, None
    if not path.exists():
        return f"{path.name} is missing (its {meta.name} is there)", None
    if not meta.exists():
        return f"{meta.name} is missing next to {path.name}", None
    try:
        info = json.loads(meta.read_text())
        count = int(info["count"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{meta.name} is unreadable ({type(exc).__name__}: {exc})", None
    if count == 0:
        return None, 0  # an empty space saves an empty data file
    index = IvfIndex(path, store._dim(space))
    index.view = True
    try:
        index._read(path)
    except (OSError, RuntimeError, ValueError) as exc:
        return f"{path.name} is unreadable ({str(exc).splitlines()[0][:200]})", None
    if len(index) != count:
        return f"{path.name} holds {_plural(len(index), 'vector')}, its {meta.name} says {count}", None
    upto = int(info.get("upto", -1))
    if upto >= 0 and len(index) and int(index.keys().max()) > upto:
        return f"{path.name} holds keys above its watermark ({upto})", None
    return None, len(index)


def _vectors_diagnose(space: str) -> Diagnose:
    def diagnose(store: Store) -> tuple[bool, str]:
        problem, saved = _saved_file(store, space)
        if problem:
            return False, problem
        want = _catalog_keys(store, space)
        _forget(store, space)
        live = store.vectors(space)  # what a search sees: the saved index plus what changed since
        have = set(live.keys().tolist())
        if have != want:
            return False, (
                f"searches see {_plural(len(have), 'vector')}, the catalog holds {len(want)}: "
                f"{len(want - have)} missing, {len(have - want)} not in the catalog"
            )
        where = "no saved index yet" if saved is None else f"{saved} in the saved index"
        return True, f"{_plural(len(want), 'vector')} ({where}), the same keys as the catalog"

    return diagnose


def _vectors_fix(space: str) -> Fix:
    def fix(store: Store) -> str:
        path, meta = _index_paths(store, space)
        for p in (data_file(path), path, meta):
            p.unlink(missing_ok=True)
        _forget(store, space)
        store.flush(force=True)  # writes every index (and the columns) afresh from the catalog
        return f"rebuilt from the catalog ({_plural(len(store.vectors(space)), 'vector')})"

    return fix


# -- fingerprints (identify, duplicates) ---------------------------------------------------------


def _fingerprints(store: Store) -> tuple[bool, str]:
    index = store.fingerprints()
    problems = index.verify()
    if problems:
        return False, "; ".join(problems[:EXAMPLES]) + ("; ..." if len(problems) > EXAMPLES else "")
    st = index.stats()
    waiting = index.pending()
    return True, (f"{_plural(st['fingerprint_items'], 'item')}, {st['fingerprint_hashes']} hashes in "
                  f"{_plural(st['fingerprint_parts'], 'part')}, consistent with the catalog"
                  + (f"; {_plural(waiting, 'item')} not fingerprinted yet (the next index run does them)"
                     if waiting else ""))  # fmt: skip


def _repair_fingerprints(store: Store) -> str:
    from . import decode
    from .identify import fingerprint_file

    index = store.fingerprints()
    dropped = index.repair()
    redone = failed = 0
    for row in store.catalog.items(int(i) for i in index.missing()):
        try:
            index.add(row.id, fingerprint_file(row.path))
            redone += 1
        except (decode.DecodeError, OSError):
            failed += 1
    index.flush()
    return (f"dropped {_plural(dropped, 'bad part')}, re-fingerprinted {_plural(redone, 'item')}"
            + (f" ({failed} unreadable)" if failed else ""))  # fmt: skip


# -- files ---------------------------------------------------------------------------------------


def _gone(store: Store) -> list[tuple[int, str]]:
    rows = store.catalog.conn.execute("SELECT id, path FROM items ORDER BY id").fetchall()
    return [(int(r[0]), r[1]) for r in rows if not os.path.isfile(r[1])]


def _files(store: Store) -> tuple[bool, str]:
    gone = _gone(store)
    total = store.catalog.count()
    if not gone:
        return True, f"all {_plural(total, 'indexed file')} present"
    shown = ", ".join(p for _, p in gone[:EXAMPLES]) + (", ..." if len(gone) > EXAMPLES else "")
    return False, f"{len(gone)} of {_plural(total, 'indexed file')} gone from disk: {shown}"


def _prune(store: Store) -> str:
    gone = _gone(store)
    n = store.catalog.delete_items([i for i, _ in gone]) if gone else 0
    store.flush()  # as an index run ends: fold the deletions into the saved accelerators when worth it
    return f"dropped {_plural(n, 'item')} whose file is gone"


__all__ = ["Check", "CheckReport", "check"]
