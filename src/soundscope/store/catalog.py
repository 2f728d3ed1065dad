"""The SQLite catalog: items, segments, per-model scores and vectors, full-text index, failures.

One file, WAL mode, schema versioned by ``PRAGMA user_version`` with forward migrations.
Each indexed file is written in one transaction, so an interrupted run never leaves half an
item behind. Vectors and label scores are stored as blobs in the catalog's codec (8-bit companded for
catalogs created at schema 6 or later, float16 before: see :mod:`soundscope.store.blobs`); the vector
indexes in :mod:`soundscope.store.vectors` are rebuilt from them whenever they are stale.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import faults
from . import blobs as blob_codec


def _bind_numpy_scalars() -> None:
    """Let numpy scalars bind as SQLite integers and reals. They are not Python numbers (``np.float64``
    excepted) and they expose the buffer protocol, which :mod:`sqlite3` binds as a BLOB: ``WHERE id IN
    (?)`` with an ``np.int64`` then silently matches nothing, and an ``np.float32`` lands in a REAL column
    as 4 raw bytes. Every id array here is numpy, so this is set once, for the whole process."""
    for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_):
        sqlite3.register_adapter(t, int)
    for t in (np.float16, np.float32):
        sqlite3.register_adapter(t, float)


_bind_numpy_scalars()

SCHEMA_VERSION = 6
FTS_SCAN = 5_000  # matches of a keyword query scored by BM25 at most (see Catalog.fts)

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE models(
        space TEXT PRIMARY KEY,          -- analyzer or encoder name: 'yamnet', 'description', ...
        model_id TEXT NOT NULL,
        params TEXT NOT NULL,            -- JSON
        dim INTEGER NOT NULL,
        labels TEXT NOT NULL             -- JSON list of score column names
    );
    CREATE TABLE items(
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- ids are never reused: clients and vector keys hold them
        path TEXT NOT NULL UNIQUE,
        root TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime REAL NOT NULL,
        content_hash TEXT NOT NULL,
        duration_s REAL NOT NULL,
        sample_rate INTEGER NOT NULL,
        channels INTEGER NOT NULL,
        codec TEXT NOT NULL DEFAULT '',
        tags TEXT NOT NULL DEFAULT '{}',
        features TEXT NOT NULL DEFAULT '{}',
        kind TEXT NOT NULL DEFAULT 'sound',
        description TEXT NOT NULL DEFAULT '',
        indexed_at REAL NOT NULL
    );
    CREATE INDEX items_hash ON items(content_hash);
    CREATE INDEX items_root ON items(root);
    CREATE TABLE segments(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
        start REAL NOT NULL,
        end REAL NOT NULL
    );
    CREATE INDEX segments_item ON segments(item_id);
    CREATE TABLE segment_data(
        segment_id INTEGER NOT NULL REFERENCES segments(id) ON DELETE CASCADE,
        space TEXT NOT NULL,
        scores BLOB,
        embedding BLOB,
        PRIMARY KEY(segment_id, space)
    ) WITHOUT ROWID;
    CREATE TABLE item_data(
        item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
        space TEXT NOT NULL,
        scores BLOB,
        embedding BLOB,
        PRIMARY KEY(item_id, space)
    ) WITHOUT ROWID;
    CREATE TABLE failures(
        path TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE VIRTUAL TABLE items_fts USING fts5(name, tags, description, tokenize='unicode61 remove_diacritics 2');
    """,
    2: """
    CREATE TABLE passages(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
        start REAL NOT NULL,
        end REAL NOT NULL,
        text TEXT NOT NULL,
        language TEXT NOT NULL DEFAULT '',
        avg_logprob REAL NOT NULL DEFAULT 0,
        no_speech_prob REAL NOT NULL DEFAULT 0,
        words TEXT,                      -- JSON [[start, end, word], ...] or NULL
        embedding BLOB                   -- text-encoder vector of the passage (float16)
    );
    CREATE INDEX passages_item ON passages(item_id);
    CREATE VIRTUAL TABLE passages_fts USING fts5(text, tokenize='unicode61 remove_diacritics 2');
    """,
    # Tombstones: what was deleted, in order, so the columns and vector indexes (accelerators built
    # from this catalog) catch up by applying what changed since their watermark instead of rebuilding.
    # Ids are never reused (AUTOINCREMENT), so "everything above my highest id, minus these" is exact.
    3: """
    CREATE TABLE tombstones(
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,              -- item | segment | passage
        id INTEGER NOT NULL
    );
    CREATE INDEX tombstones_kind ON tombstones(kind, seq);
    CREATE TRIGGER items_gone AFTER DELETE ON items BEGIN
        INSERT INTO tombstones(kind, id) VALUES('item', old.id);
    END;
    CREATE TRIGGER segments_gone AFTER DELETE ON segments BEGIN
        INSERT INTO tombstones(kind, id) VALUES('segment', old.id);
    END;
    CREATE TRIGGER passages_gone AFTER DELETE ON passages BEGIN
        INSERT INTO tombstones(kind, id) VALUES('passage', old.id);
    END;
    """,
    # Listeners and captions. Events: what a listener did with an item (issue 14): like, dislike, play
    # (value: seconds listened), skip; the query they came from, if any. Captions: optional fluent
    # sentences per item and language from a language model (issue 15), beside the template description.
    # Both cascade with their item, so a removed item leaves nothing dangling.
    4: """
    CREATE TABLE events(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user TEXT NOT NULL,
        item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,              -- like | dislike | play | skip
        value REAL NOT NULL DEFAULT 0,   -- play: seconds listened; otherwise 0 (or a weight)
        at REAL NOT NULL,                -- unix time, seconds
        query TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_user ON events(user, at);
    CREATE INDEX events_item ON events(item_id);
    CREATE TABLE captions(
        item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
        language TEXT NOT NULL,          -- 'en' | 'zh'
        text TEXT NOT NULL,
        model TEXT NOT NULL,             -- the language model that wrote it
        at REAL NOT NULL,
        PRIMARY KEY(item_id, language)
    ) WITHOUT ROWID;
    """,
    # Shared segments (issue 10, disk): a file of one segment (every clip of 5 s or less) stored its data
    # twice, as the segment's and as the item's, byte for byte: 3.7 of 15.5 KB per item. Its segment is
    # now `shared`: a segment_data row is kept only for a space where the two differ, and a missing row
    # means "the item's" (see SEGMENT_DATA). Existing libraries are compacted here.
    5: """
    ALTER TABLE segments ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;
    UPDATE segments SET shared = 1
        WHERE item_id IN (SELECT item_id FROM segments GROUP BY item_id HAVING count(*) = 1);
    DELETE FROM segment_data WHERE EXISTS (
        SELECT 1 FROM segments s JOIN item_data d ON d.item_id = s.item_id
        WHERE s.id = segment_data.segment_id AND s.shared = 1 AND d.space = segment_data.space
          AND d.scores IS segment_data.scores AND d.embedding IS segment_data.embedding
    );
    """,
    # 8-bit blobs (issue 10, disk): a catalog created from here on stores vectors and scores in the
    # ``q8`` codec (meta ``blob_codec``; see blobs.py), half of float16. An older library keeps float16
    # (no ``blob_codec`` in its meta) and is read as such; the version bump keeps an older soundscope,
    # which knows only float16, from misreading a new one.
    6: "",
}
# One segment's data in one segment space (:space, an analyzer's: not "description", which items alone
# have): its own segment_data row, or, for a shared segment without one, its item's item_data row.
# Append a WHERE over s.* (segments); the columns are segment_id, item_id, start, end, scores, embedding.
SEGMENT_DATA = """
    SELECT s.id AS segment_id, s.item_id AS item_id, s.start AS start, s.end AS end,
           CASE WHEN sd.segment_id IS NULL THEN d.scores ELSE sd.scores END AS scores,
           CASE WHEN sd.segment_id IS NULL THEN d.embedding ELSE sd.embedding END AS embedding
    FROM segments s
    LEFT JOIN segment_data sd ON sd.segment_id = s.id AND sd.space = :space
    LEFT JOIN item_data d ON sd.segment_id IS NULL AND s.shared = 1 AND d.item_id = s.item_id AND d.space = :space
"""
TOMBSTONE_KINDS = {"items": "item", "segments": "segment", "passages": "passage"}
EVENT_KINDS = ("like", "dislike", "play", "skip")  # what a listener did with an item (events.kind)


class IncompatibleIndexError(RuntimeError):
    """The data directory was built by other models or settings than the ones in use."""


@dataclass
class ItemRow:
    id: int
    path: str
    root: str
    size: int
    mtime: float
    content_hash: str
    duration_s: float
    sample_rate: int
    channels: int
    codec: str
    tags: dict[str, str]
    features: dict[str, Any]
    kind: str
    description: str
    indexed_at: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SegmentData:
    """What an analyzer contributes for one segment (or one whole item)."""

    space: str
    scores: np.ndarray | None  # (n_labels,) float probabilities
    embedding: np.ndarray | None  # (dim,) L2-normalised


def name_words(path: str) -> str:
    """File name and parent folder as searchable words: '/a/Dog_Bark-01.wav' -> 'a Dog Bark 01 wav'."""
    p = Path(path)
    text = " ".join([p.parent.name, p.stem])
    for ch in "_-.()[]{}+,&'":
        text = text.replace(ch, " ")
    return " ".join(text.split())


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection. A WAL database needs its ``-shm`` file, which a read-only folder cannot
    get: when there is none (and no ``-wal``, so no writer), the file is opened as immutable."""
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        if Path(f"{path}-wal").exists():
            raise
    return sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False)


class Catalog:
    """SQLite catalog at ``<data_dir>/catalog.sqlite``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # a library on a read-only medium or folder: opened read-only, so searches work (writes: StorageError)
        self.read_only = self.path.is_file() and not os.access(self.path.parent, os.W_OK)
        if self.read_only:
            self.conn = _connect_read_only(self.path)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        if not self.read_only:
            # 16 KiB pages hold several 3 KB score+vector rows each (with 4 KiB ones each row took a page of
            # its own: 37 % more disk). Only takes effect on a new file, before WAL is switched on.
            self.conn.execute("PRAGMA page_size=16384")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self._migrate()
        self.codec = self.get_meta("blob_codec") or "f16"  # libraries created before schema 6: float16
        if self.codec not in blob_codec.CODECS:
            raise IncompatibleIndexError(f"{self.path} stores vectors as {self.codec!r}, unknown to this soundscope")

    # -- schema -------------------------------------------------------------------------------
    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if self.read_only and version < SCHEMA_VERSION:
            raise IncompatibleIndexError(
                f"{self.path} has schema version {version} and is read-only: open it writable once to upgrade it"
            )
        if version > SCHEMA_VERSION:
            raise IncompatibleIndexError(
                f"{self.path} has schema version {version}, newer than this soundscope ({SCHEMA_VERSION}): upgrade"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                self._run_script(MIGRATIONS[target])
                self.conn.execute(f"PRAGMA user_version={target}")
                self.set_meta("schema_version", str(target))
                if target == 1:
                    self.set_meta("created_at", str(time.time()))
                    self.set_meta("blob_codec", blob_codec.DEFAULT_CODEC)

    def _run_script(self, script: str) -> None:
        statement = ""
        for part in script.split(";"):
            statement += part + ";"
            if sqlite3.complete_statement(statement):  # a trigger body holds ';' of its own
                if statement.strip(" \n;"):
                    self.conn.execute(statement)
                statement = ""

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception. Nested calls join the
        outer transaction (see :meth:`bulk`)."""
        if self.conn.in_transaction:
            yield self.conn
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextmanager
    def bulk(self) -> Iterator[Catalog]:
        """Many writes (e.g. :meth:`put_item` calls) in one transaction: the bulk write path, ~20x
        faster than a commit per item; all or nothing."""
        with self.transaction():
            yield self

    def close(self) -> None:
        faults.point("checkpoint")  # closing the last connection checkpoints the WAL into the file
        self.conn.close()
        faults.point("checkpoint.end")

    # -- meta and models ----------------------------------------------------------------------
    def _enc(self, arr: np.ndarray | None) -> bytes | None:
        """(d,) values -> a blob in this catalog's codec."""
        return blob_codec.encode(arr, self.codec)

    def _dec(self, blob: bytes | None) -> np.ndarray | None:
        """A blob of this catalog -> (d,) float32."""
        return blob_codec.decode(blob, self.codec)

    def _stack(self, blobs: list[bytes]) -> np.ndarray:
        """Blobs of this catalog -> (m, d) float32: one decode for all rows when they are of one length
        (one space's), not one array per row."""
        if len({len(b) for b in blobs}) == 1:
            return blob_codec.decode_rows(blobs, self.codec)
        return np.stack([self._dec(b) for b in blobs])

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def generation(self, space: str) -> int:
        return int(self.get_meta(f"generation:{space}", "0") or 0)

    def bump_generation(self, space: str) -> None:
        self.set_meta(f"generation:{space}", str(self.generation(space) + 1))

    def models(self) -> dict[str, dict[str, Any]]:
        """space -> {model_id, params, dim, labels} (cached: re-read only after a commit by another
        connection, or a registration through this one; parsing 521 label names per call added up)."""
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        cached = getattr(self, "_models_cache", None)
        if cached is not None and cached[0] == version:
            return cached[1]
        rows = self.conn.execute("SELECT space, model_id, params, dim, labels FROM models").fetchall()
        out = {
            r["space"]: {
                "model_id": r["model_id"],
                "params": json.loads(r["params"]),
                "dim": r["dim"],
                "labels": json.loads(r["labels"]),
            }
            for r in rows
        }
        self._models_cache = (version, out)
        return out

    def register_model(self, space: str, model_id: str, params: dict[str, Any], dim: int, labels: list[str]) -> None:
        """Record the model behind ``space``; refuse if a different model or setting already filled it."""
        self._models_cache = None
        known = self.models().get(space)
        wanted = {"model_id": model_id, "params": json.loads(json.dumps(params)), "dim": dim, "labels": labels}
        if known is None:
            with self.transaction():
                self.conn.execute(
                    "INSERT INTO models(space, model_id, params, dim, labels) VALUES(?,?,?,?,?)",
                    (space, model_id, json.dumps(params, sort_keys=True), dim, json.dumps(labels)),
                )
            self._models_cache = None  # this connection's own commit leaves data_version as it was
            return
        for key in ("model_id", "params", "dim", "labels"):
            if known[key] != wanted[key]:
                detail = known[key] if key != "labels" else f"{len(known[key])} labels"
                raise IncompatibleIndexError(
                    f"the index at {self.path.parent} holds '{space}' vectors from {key}={detail!r}, "
                    f"but this run uses {key}={wanted[key] if key != 'labels' else len(labels)!r}; "
                    "vectors from different models cannot be mixed: "
                    "use another --data-dir, or delete this one and index again"
                )

    # -- items --------------------------------------------------------------------------------
    def _row(self, r: sqlite3.Row) -> ItemRow:
        d = dict(r)
        d["tags"] = json.loads(d["tags"])
        d["features"] = json.loads(d["features"])
        return ItemRow(**d)

    def item(self, item_id: int) -> ItemRow | None:
        if not -(2**63) <= item_id < 2**63:  # no such row (and SQLite cannot bind the number)
            return None
        r = self.conn.execute("SELECT * FROM items WHERE id=?", (item_id,)).fetchone()
        return self._row(r) if r else None

    def item_by_path(self, path: str) -> ItemRow | None:
        r = self.conn.execute("SELECT * FROM items WHERE path=?", (path,)).fetchone()
        return self._row(r) if r else None

    def items_by_hash(self, content_hash: str) -> list[ItemRow]:
        return [self._row(r) for r in self.conn.execute("SELECT * FROM items WHERE content_hash=?", (content_hash,))]

    def items(self, ids: Iterable[int] | None = None) -> list[ItemRow]:
        if ids is None:
            return [self._row(r) for r in self.conn.execute("SELECT * FROM items ORDER BY id")]
        ids = list(ids)
        out = {r["id"]: self._row(r) for r in self._rows_with_ids("SELECT * FROM items", ids)}
        return [out[i] for i in ids if i in out]

    def _rows_with_ids(self, select: str, ids: Iterable[int], *, chunk: int = 500) -> Iterator[sqlite3.Row]:
        """Rows of ``select`` (a query over one table, no WHERE) whose ``id`` is in ``ids``, queried in
        chunks that stay under SQLite's bound-parameter limit."""
        ids = list(ids)
        for i in range(0, len(ids), chunk):
            part = ids[i : i + chunk]
            yield from self.conn.execute(f"{select} WHERE id IN ({','.join('?' * len(part))})", part)

    def paths_under(self, root: str) -> dict[str, tuple[int, int, float]]:
        """path -> (id, size, mtime) for items whose path lies under ``root``."""
        prefix = root.rstrip("/") + "/"
        rows = self.conn.execute(
            "SELECT id, path, size, mtime FROM items WHERE path = ? OR substr(path, 1, ?) = ?",
            (root, len(prefix), prefix),
        )
        return {r["path"]: (r["id"], r["size"], r["mtime"]) for r in rows}

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM items").fetchone()[0])

    def put_item(
        self,
        item: dict[str, Any],
        segments: list[tuple[float, float, list[SegmentData]]],
        item_data: list[SegmentData],
        passages: list[dict[str, Any]] | None = None,
    ) -> tuple[int, list[int]]:
        """Insert or replace one analysed file with its segments, in one transaction.

        ``item`` holds the ``items`` columns (no id). Returns (item id, segment ids).
        Replacing an item removes its old segments and data first; what listeners did with it (its
        ``events``: likes, plays, skips) moves to the new id, so editing a file's tags loses no feedback.
        """
        with self.transaction():
            old = self.conn.execute("SELECT id FROM items WHERE path=?", (item["path"],)).fetchone()
            kept: list[tuple[Any, ...]] = []
            if old:
                kept = self.conn.execute(
                    "SELECT user, kind, value, at, query FROM events WHERE item_id=? ORDER BY id", (old[0],)
                ).fetchall()
                self._delete_item(old[0])
            cols = list(item)
            values = [json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else v for v in item.values()]
            cur = self.conn.execute(f"INSERT INTO items({','.join(cols)}) VALUES({','.join('?' * len(cols))})", values)
            item_id = int(cur.lastrowid)
            self.conn.executemany(
                "INSERT INTO events(user, item_id, kind, value, at, query) VALUES(?,?,?,?,?,?)",
                [(u, item_id, k, v, at, q) for u, k, v, at, q in kept],
            )
            seg_ids = []
            spaces: set[str] = set()
            whole = {d.space: (self._enc(d.scores), self._enc(d.embedding)) for d in item_data}
            shared = len(segments) == 1  # its data rows are the item's wherever they are equal
            for start, end, datas in segments:
                sid = int(
                    self.conn.execute(
                        "INSERT INTO segments(item_id, start, end, shared) VALUES(?,?,?,?)",
                        (item_id, start, end, int(shared)),
                    ).lastrowid
                )
                seg_ids.append(sid)
                for d in datas:
                    blobs = (self._enc(d.scores), self._enc(d.embedding))
                    if not (shared and whole.get(d.space) == blobs):
                        self.conn.execute("INSERT INTO segment_data VALUES(?,?,?,?)", (sid, d.space, *blobs))
                    spaces.add(d.space)
            for space, blobs in whole.items():
                self.conn.execute("INSERT INTO item_data VALUES(?,?,?,?)", (item_id, space, *blobs))
                spaces.add(space)
            self._index_text(item_id, item["path"], item.get("tags", {}), item.get("description", ""))
            texts = [p["text"] for p in passages or []]
            for k, p in enumerate(passages or []):
                context = " ".join(texts[max(0, k - 1) : k + 2])  # a sentence split across passages still matches
                self._put_passage(item_id, p, context)
            if passages:
                self.set_meta("generation:passages", str(self.generation("passages") + 1))
            self.conn.execute("DELETE FROM failures WHERE path=?", (item["path"],))
            for space in spaces:
                self.bump_generation(space)
            self.set_meta("generation:items", str(self.generation("items") + 1))
            faults.point("commit")  # crash tests: killed here, the whole item is rolled back
        return item_id, seg_ids

    def _index_text(self, item_id: int, path: str, tags: dict[str, str], description: str) -> None:
        from ..textnorm import index_text

        tag_text = " ".join(str(v) for k, v in tags.items() if k in TEXT_TAGS)
        self.conn.execute(
            "INSERT INTO items_fts(rowid, name, tags, description) VALUES(?,?,?,?)",
            (item_id, index_text(name_words(path)), index_text(tag_text), index_text(description)),
        )

    def _put_passage(self, item_id: int, p: dict[str, Any], context: str) -> None:
        """Store one passage; its FTS row holds ``context`` (the passage with its neighbours)."""
        from ..textnorm import index_text

        words = json.dumps(p["words"], ensure_ascii=False) if p.get("words") else None
        pid = self.conn.execute(
            "INSERT INTO passages(item_id, start, end, text, language, avg_logprob, no_speech_prob, words, embedding)"
            " VALUES(?,?,?,?,?,?,?,?,?)",
            (
                item_id,
                p["start"],
                p["end"],
                p["text"],
                p.get("language", ""),
                p.get("avg_logprob", 0.0),
                p.get("no_speech_prob", 0.0),
                words,
                self._enc(p.get("embedding")),
            ),
        ).lastrowid
        self.conn.execute("INSERT INTO passages_fts(rowid, text) VALUES(?, ?)", (pid, index_text(context)))

    def passages_of(self, item_id: int, *, with_words: bool = True) -> list[dict[str, Any]]:
        """The transcript of one item: passages in time order (``words``: None unless ``with_words``)."""
        rows = self.conn.execute(
            "SELECT id, start, end, text, language, avg_logprob, no_speech_prob, words FROM passages "
            "WHERE item_id=? ORDER BY start",
            (item_id,),
        )
        return [
            {
                "id": r[0],
                "start": r[1],
                "end": r[2],
                "text": r[3],
                "language": r[4],
                "avg_logprob": r[5],
                "no_speech_prob": r[6],
                "words": json.loads(r[7]) if r[7] and with_words else None,
            }
            for r in rows
        ]

    def passages(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """passage id -> {item_id, start, end, text} for the given ids."""
        rows = self._rows_with_ids("SELECT id, item_id, start, end, text FROM passages", ids)
        return {r[0]: {"item_id": r[1], "start": r[2], "end": r[3], "text": r[4]} for r in rows}

    def passage_matrix(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(passage ids (n,), item ids (n,), embeddings (n, d)) of every embedded passage."""
        pids, items, vecs = [], [], []
        for pid, item_id, blob in self.conn.execute(
            "SELECT id, item_id, embedding FROM passages WHERE embedding IS NOT NULL ORDER BY id"
        ):
            pids.append(pid)
            items.append(item_id)
            vecs.append(blob)
        if not pids:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return np.asarray(pids, np.int64), np.asarray(items, np.int64), self._stack(vecs)

    def fts_passages(self, match: str, limit: int) -> list[tuple[int, float]]:
        """(passage id, bm25 score, higher is better) for an FTS5 MATCH expression over transcripts."""
        try:
            rows = self.conn.execute(
                "SELECT rowid, -bm25(passages_fts) FROM passages_fts WHERE passages_fts MATCH ? "
                "ORDER BY bm25(passages_fts) LIMIT ?",
                (match, limit),
            ).fetchall()
        except sqlite3.OperationalError:
            return []
        return [(int(r[0]), float(r[1])) for r in rows]

    def transcript_words(self) -> list[str]:
        """Every distinct token in the transcript index (what :func:`textnorm.index_text` stored)."""
        self.conn.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.passages_vocab USING fts5vocab(main, passages_fts, row)"
        )
        return [r[0] for r in self.conn.execute("SELECT term FROM temp.passages_vocab")]

    def update_location(self, item_id: int, *, path: str, root: str, size: int, mtime: float) -> None:
        """Record that an unchanged item moved or was touched (no re-analysis)."""
        with self.transaction():
            row = self.conn.execute("SELECT tags, description FROM items WHERE id=?", (item_id,)).fetchone()
            self.conn.execute(
                "UPDATE items SET path=?, root=?, size=?, mtime=? WHERE id=?", (path, root, size, mtime, item_id)
            )
            self.conn.execute("DELETE FROM items_fts WHERE rowid=?", (item_id,))
            self._index_text(item_id, path, json.loads(row["tags"]), row["description"])
            self.set_meta("generation:items", str(self.generation("items") + 1))

    def _delete_item(self, item_id: int) -> None:
        spaces = [
            r[0]
            for r in self.conn.execute(
                "SELECT DISTINCT space FROM segment_data JOIN segments ON segments.id = segment_id WHERE item_id=? "
                "UNION SELECT DISTINCT space FROM item_data WHERE item_id=?",
                (item_id, item_id),
            )
        ]
        self.conn.execute("DELETE FROM items_fts WHERE rowid=?", (item_id,))
        pids = [r[0] for r in self.conn.execute("SELECT id FROM passages WHERE item_id=?", (item_id,))]
        for pid in pids:
            self.conn.execute("DELETE FROM passages_fts WHERE rowid=?", (pid,))
        if pids:
            self.set_meta("generation:passages", str(self.generation("passages") + 1))
        self.conn.execute("DELETE FROM items WHERE id=?", (item_id,))  # cascades to segments, data, passages
        for space in spaces:
            self.bump_generation(space)
        self.set_meta("generation:items", str(self.generation("items") + 1))

    def delete_items(self, ids: Iterable[int]) -> int:
        n = 0
        with self.transaction():
            for item_id in ids:
                self._delete_item(item_id)
                n += 1
        return n

    # -- failures -----------------------------------------------------------------------------
    def record_failure(self, path: str, reason: str) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT INTO failures(path, reason, at) VALUES(?,?,?) "
                "ON CONFLICT(path) DO UPDATE SET reason=excluded.reason, at=excluded.at",
                (path, reason, time.time()),
            )

    def failures(self) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.conn.execute("SELECT path, reason FROM failures ORDER BY path")]

    def clear_failures_under(self, root: str, keep: set[str]) -> None:
        """Forget failures under ``root`` for files that no longer exist (``keep`` = still failing)."""
        prefix = root.rstrip("/") + "/"
        with self.transaction():
            for (path,) in self.conn.execute(
                "SELECT path FROM failures WHERE substr(path, 1, ?) = ?", (len(prefix), prefix)
            ).fetchall():
                if path not in keep and not Path(path).exists():
                    self.conn.execute("DELETE FROM failures WHERE path=?", (path,))

    # -- listener events (issue 14) --------------------------------------------------------------
    def add_event(
        self, user: str, item_id: int, kind: str, *, value: float = 0.0, at: float | None = None, query: str = ""
    ) -> int:
        """Record what ``user`` did with an item (like | dislike | play | skip; ``value``: seconds listened
        for a play); returns the event id. One indexed INSERT in its own transaction. Raises KeyError for
        an unknown item, ValueError for an unknown kind or an empty user name."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown feedback kind {kind!r}: one of {', '.join(EVENT_KINDS)}")
        if not user.strip():
            raise ValueError("empty user name")
        try:
            with self.transaction():
                cur = self.conn.execute(
                    "INSERT INTO events(user, item_id, kind, value, at, query) VALUES(?,?,?,?,?,?)",
                    (user, int(item_id), kind, float(value), time.time() if at is None else float(at), query or ""),
                )
        except sqlite3.IntegrityError as exc:  # the foreign key: no such item
            raise KeyError(f"no item with id {item_id}") from exc
        return int(cur.lastrowid)

    def events(self, user: str | None = None, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Events of ``user`` (every user's if None), newest first, at most ``limit``."""
        sql = "SELECT id, user, item_id, kind, value, at, query FROM events"
        args: tuple = ()
        if user is not None:
            sql, args = sql + " WHERE user=?", (user,)
        sql += " ORDER BY at DESC, id DESC" + (f" LIMIT {int(limit)}" if limit else "")
        return [dict(r) for r in self.conn.execute(sql, args)]

    def event_users(self) -> list[tuple[str, int]]:
        """(user, number of events) of every user with events, by name."""
        rows = self.conn.execute("SELECT user, count(*) FROM events GROUP BY user ORDER BY user")
        return [(r[0], r[1]) for r in rows]

    def events_version(self) -> tuple[int, int]:
        """(highest event id, number of events): changes whenever an event is added or deleted."""
        row = self.conn.execute("SELECT coalesce(max(id), 0), count(*) FROM events").fetchone()
        return int(row[0]), int(row[1])

    def delete_events(self, user: str, *, item_id: int | None = None) -> int:
        """Forget ``user``'s events (only those about ``item_id`` if given); returns how many."""
        with self.transaction():
            if item_id is None:
                cur = self.conn.execute("DELETE FROM events WHERE user=?", (user,))
            else:
                cur = self.conn.execute("DELETE FROM events WHERE user=? AND item_id=?", (user, int(item_id)))
        return int(cur.rowcount)

    # -- vectors and scores -------------------------------------------------------------------
    def item_matrix(self, space: str, column: str = "scores") -> tuple[np.ndarray, np.ndarray]:
        """(item ids (n,), item-level ``scores`` or ``embedding`` rows (n, d)) for ``space``."""
        assert column in ("scores", "embedding")
        ids, rows = [], []
        for item_id, blob in self.conn.execute(
            f"SELECT item_id, {column} FROM item_data WHERE space=? AND {column} IS NOT NULL ORDER BY item_id",
            (space,),
        ):
            ids.append(item_id)
            rows.append(blob)
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return np.asarray(ids, np.int64), self._stack(rows)

    def item_scores(self, item_id: int, space: str) -> np.ndarray | None:
        """The item-level label scores of one item in ``space`` (None if absent)."""
        row = self.conn.execute("SELECT scores FROM item_data WHERE item_id=? AND space=?", (item_id, space)).fetchone()
        return self._dec(row[0]) if row else None

    def item_vector(self, item_id: int, space: str) -> np.ndarray | None:
        """The item-level embedding of one item in ``space`` (None if absent)."""
        row = self.conn.execute(
            "SELECT embedding FROM item_data WHERE item_id=? AND space=?", (item_id, space)
        ).fetchone()
        return self._dec(row[0]) if row else None

    def segments_of(
        self, item_id: int, space: str
    ) -> list[tuple[int, float, float, np.ndarray | None, np.ndarray | None]]:
        """[(segment id, start, end, scores, embedding)] of one item, in time order."""
        rows = self.conn.execute(
            f"{SEGMENT_DATA} WHERE s.item_id = :item ORDER BY s.start", {"space": space, "item": item_id}
        ).fetchall()
        scores, embeddings = self._decode_column([r[4] for r in rows]), self._decode_column([r[5] for r in rows])
        return [(r[0], r[2], r[3], sc, e) for r, sc, e in zip(rows, scores, embeddings, strict=True)]

    def _decode_column(self, blobs: list[bytes | None]) -> list[np.ndarray | None]:
        """Blobs (some may be None) -> one (d,) float32 array each: decoded together when all are present
        (an hour-long item has 720 segments: one decode instead of 720)."""
        if blobs and all(b is not None for b in blobs):
            return list(self._stack(blobs))  # type: ignore[arg-type]
        return [self._dec(b) for b in blobs]

    def vector_keys(self, source: str, space: str) -> np.ndarray:
        """Keys (n,) of the rows holding a vector of ``space`` in ``source`` ("segments": segment ids, a
        shared segment's vector being its item's; "items": item ids; "passages": passage ids): what its
        vector index must hold."""
        sql = {
            "segments": f"SELECT segment_id FROM ({SEGMENT_DATA}) WHERE embedding IS NOT NULL",
            "items": "SELECT item_id FROM item_data WHERE space = :space AND embedding IS NOT NULL",
            "passages": "SELECT id FROM passages WHERE embedding IS NOT NULL",
        }[source]
        return np.fromiter((r[0] for r in self.conn.execute(sql, {"space": space})), np.int64)

    def segment_items(self, segment_ids: Iterable[int]) -> dict[int, tuple[int, float, float]]:
        """segment id -> (item id, start, end)."""
        rows = self._rows_with_ids("SELECT id, item_id, start, end FROM segments", segment_ids)
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def fts(self, match: str, limit: int, *, exact: bool = False) -> list[tuple[int, float]]:
        """(item id, bm25 score, higher is better) for an FTS5 MATCH expression, best ``limit`` first.

        BM25 in ``ORDER BY`` scores every matching row (a word in 10^5 descriptions costs 10^5 doc-size
        reads), so at most :data:`FTS_SCAN` matches are scored, the oldest first, and the best of those
        kept: exact below that many matches, an approximation for words too common to discriminate.
        ``exact``: score every match (the reference ranking of overlap checks)."""
        try:
            rows = self.conn.execute(
                "SELECT rowid, -bm25(items_fts, 2.0, 1.5, 1.0) FROM items_fts WHERE items_fts MATCH ? LIMIT ?",
                (match, -1 if exact else max(limit, FTS_SCAN)),
            ).fetchall()
        except sqlite3.OperationalError:
            return []
        if not rows:
            return []
        ids, score = np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.float64)
        best = np.lexsort((ids, -score))[:limit]  # of at most FTS_SCAN rows: best score, then lowest id
        return list(zip(ids[best].tolist(), score[best].tolist(), strict=True))

    # -- change tracking (for accelerators that catch up incrementally) -------------------------
    def tombstone_seq(self) -> int:
        """The newest tombstone's sequence number (0 if nothing was ever deleted)."""
        return int(self.conn.execute("SELECT coalesce(max(seq), 0) FROM tombstones").fetchone()[0])

    def tombstones(self, table: str, *, since: int = 0, until: int | None = None) -> np.ndarray:
        """(m,) ids deleted from ``table`` (items | segments | passages) with since < seq <= until."""
        until = self.tombstone_seq() if until is None else until
        rows = self.conn.execute(
            "SELECT id FROM tombstones WHERE kind=? AND seq > ? AND seq <= ?", (TOMBSTONE_KINDS[table], since, until)
        ).fetchall()
        return np.asarray([r[0] for r in rows], np.int64)

    def max_id(self, table: str) -> int:
        """The highest id ever given in ``table`` (items | segments | passages), deleted ones included."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (table,)).fetchone()
        return int(row[0]) if row else 0

    def item_columns(self, *, after: int = 0, upto: int | None = None) -> dict[str, np.ndarray]:
        """What queries read of each item with after < id <= upto, as arrays: ``ids`` (n,) int64 ascending,
        ``duration`` (n,) s, ``kind`` (n,) str, ``tempo``, ``tempo_conf`` (n,) BPM (0 = unmeasured) and
        ``lufs`` (n,) (-120 = unmeasured). Parses each item's JSON features once (at column build time)."""
        upto = self.max_id("items") if upto is None else upto
        rows = self.conn.execute(
            "SELECT id, duration_s, kind, features FROM items WHERE id > ? AND id <= ? ORDER BY id", (after, upto)
        ).fetchall()
        music = [(json.loads(r[3]).get("music") or {}) for r in rows]
        return {
            "ids": np.asarray([r[0] for r in rows], np.int64),
            "duration": np.asarray([r[1] for r in rows], np.float32),
            "kind": np.asarray([r[2] for r in rows], dtype=object),
            "tempo": np.asarray([float(x.get("tempo_bpm") or 0.0) for x in music], np.float32),
            "tempo_conf": np.asarray([float(x.get("tempo_confidence") or 0.0) for x in music], np.float32),
            "lufs": np.asarray([float(x.get("loudness_lufs") or -120.0) for x in music], np.float32),
        }

    def item_matrix_range(
        self, space: str, column: str = "scores", *, after: int = 0, upto: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(item ids (m,), rows (m, d)) of item-level ``column`` in ``space`` for after < item id <= upto."""
        assert column in ("scores", "embedding")
        upto = self.max_id("items") if upto is None else upto
        ids, rows = [], []
        for item_id, blob in self.conn.execute(
            f"SELECT item_id, {column} FROM item_data WHERE space=? AND {column} IS NOT NULL "
            "AND item_id > ? AND item_id <= ? ORDER BY item_id",
            (space, after, upto),
        ):
            ids.append(item_id)
            rows.append(blob)
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return np.asarray(ids, np.int64), self._stack(rows)

    def vectors_range(self, source: str, space: str, *, after: int = 0, upto: int | None = None):
        """(keys (m,), vectors (m, d)) with after < key <= upto, from ``source``: "segments" (segment
        vectors of ``space``, keyed by segment id), "items" (item-level, keyed by item id) or
        "passages" (transcript passage vectors, keyed by passage id)."""
        upto = self.max_id(source) if upto is None else upto
        if source == "segments":
            sql = (
                f"SELECT segment_id, embedding FROM ({SEGMENT_DATA} WHERE s.id > :after AND s.id <= :upto) "
                "WHERE embedding IS NOT NULL ORDER BY segment_id"
            )
            args: tuple | dict = {"space": space, "after": after, "upto": upto}
        elif source == "items":
            return self.item_matrix_range(space, "embedding", after=after, upto=upto)
        else:
            sql = "SELECT id, embedding FROM passages WHERE embedding IS NOT NULL AND id > ? AND id <= ? ORDER BY id"
            args = (after, upto)
        keys, vecs = [], []
        for key, blob in self.conn.execute(sql, args):
            keys.append(key)
            vecs.append(blob)
        if not keys:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return np.asarray(keys, np.int64), self._stack(vecs)

    def vectors_of(self, source: str, space: str, keys: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """(keys found (m,), their vectors (m, d)) of ``space`` in ``source`` (as :meth:`vectors_range`
        names them) for the given keys, in no particular order: what a re-rank of ANN results reads."""
        if source == "items":
            return self.item_vectors(keys, space)
        sql = (
            f"SELECT segment_id, embedding FROM ({SEGMENT_DATA} WHERE s.id IN (SELECT value FROM json_each(:keys))) "
            "WHERE embedding IS NOT NULL"
            if source == "segments"
            else "SELECT id, embedding FROM passages WHERE embedding IS NOT NULL "
            "AND id IN (SELECT value FROM json_each(:keys))"
        )
        rows = self.conn.execute(sql, {"space": space, "keys": json.dumps([int(k) for k in keys])}).fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return np.asarray([r[0] for r in rows], np.int64), self._stack([r[1] for r in rows])

    def item_scores_many(self, ids: Iterable[int], space: str) -> tuple[np.ndarray, np.ndarray]:
        """(item ids (m,), item-level label scores (m, n_labels)) of ``space`` for the given ids (chunked)."""
        return self._item_rows(ids, space, "scores")

    def item_vectors(self, ids: Iterable[int], space: str) -> tuple[np.ndarray, np.ndarray]:
        """(item ids (m,), item-level embeddings (m, d)) of ``space`` for the given item ids (chunked)."""
        return self._item_rows(ids, space, "embedding")

    def _item_rows(self, ids: Iterable[int], space: str, column: str) -> tuple[np.ndarray, np.ndarray]:
        assert column in ("scores", "embedding")
        ids = list(ids)
        got, blobs = [], []
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            for item_id, blob in self.conn.execute(
                f"SELECT item_id, {column} FROM item_data WHERE space=? AND {column} IS NOT NULL "
                f"AND item_id IN ({','.join('?' * len(part))})",
                (space, *part),
            ):
                got.append(item_id)
                blobs.append(blob)
        if not got:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return np.asarray(got, np.int64), self._stack(blobs)

    def ids_under(self, prefix: str) -> np.ndarray:
        """(m,) ids of items at ``prefix`` or below it (an indexed range scan on the path column)."""
        base = prefix.rstrip("/") + "/"
        rows = self.conn.execute(
            "SELECT id FROM items WHERE path = ? OR (path >= ? AND path < ?)", (prefix, base, base[:-1] + "0")
        ).fetchall()
        return np.asarray(sorted(r[0] for r in rows), np.int64)

    def passage_items(self, passage_ids: Iterable[int]) -> dict[int, int]:
        """passage id -> item id."""
        return {r[0]: r[1] for r in self._rows_with_ids("SELECT id, item_id FROM passages", passage_ids)}

    def stats(self) -> dict[str, Any]:
        c = self.conn
        kinds = dict(c.execute("SELECT kind, count(*) FROM items GROUP BY kind").fetchall())
        return {
            "items": self.count(),
            "segments": int(c.execute("SELECT count(*) FROM segments").fetchone()[0]),
            "audio_hours": round(
                float(c.execute("SELECT coalesce(sum(duration_s),0) FROM items").fetchone()[0]) / 3600, 4
            ),
            "kinds": kinds,
            "failures": int(c.execute("SELECT count(*) FROM failures").fetchone()[0]),
            "transcribed_items": int(c.execute("SELECT count(DISTINCT item_id) FROM passages").fetchone()[0]),
            "passages": int(c.execute("SELECT count(*) FROM passages").fetchone()[0]),
            "schema_version": self.schema_version,
            "models": {k: v["model_id"] for k, v in self.models().items()},
            "roots": [r[0] for r in c.execute("SELECT DISTINCT root FROM items ORDER BY root")],
            "catalog_bytes": self.path.stat().st_size if self.path.exists() else 0,
        }


TEXT_TAGS = frozenset(
    [
        "title",
        "artist",
        "album",
        "album_artist",
        "genre",
        "date",
        "year",
        "comment",
        "composer",
        "performer",
        "description",
    ]
)
