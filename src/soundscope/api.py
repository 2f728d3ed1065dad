"""The library API: everything the CLI and the HTTP server do, as plain Python calls.

>>> import soundscope
>>> soundscope.index(["~/Sounds"])
>>> soundscope.search("dog barking", limit=5)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path
from typing import Any

from . import analyze, describe
from .ingest import Indexer, Progress
from .search import ExamplePart, Filters, Searcher, example_parts, fuse_parts
from .store import Store
from .store.lock import IndexLock
from .types import Analyzer, IndexReport, Result


def default_analyzers() -> list[Analyzer]:
    """Models run on every file: YAMNet (521 sound-event labels + 1024-d embedding)."""
    from .analyzers import yamnet

    return [yamnet.load()]


def default_music_analyzers() -> list[Analyzer]:
    """Models run only on music: musicnn MagnaTagATune and Million Song Dataset taggers."""
    from .analyzers import musicnn

    return [musicnn.load("MTT_musicnn"), musicnn.load("MSD_musicnn")]


MUSIC_SIMILARITY_SPACE = "musicnn_msd"  # "more like this" between two music tracks uses this embedding


class Library:
    """One data directory and the models that read and write it (loaded lazily, once)."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        analyzers: list[Analyzer] | None = None,
        music_analyzers: list[Analyzer] | None = None,
        asr_model: str | None = None,
        *,
        create: bool = True,
        vector_store: str | None = None,
    ) -> None:
        """``asr_model``: speech recogniser for spoken content: "tiny.en" (default, English), "base"
        (multilingual), a CTranslate2 model folder, or "none"; also set by ``$SOUNDSCOPE_ASR_MODEL``.
        ``create=False`` refuses a data directory with no library (:class:`~soundscope.store.NoLibraryError`).
        ``vector_store``: "milvus://host:19530" keeps the vector indexes on a Milvus server or cluster
        (default ``$SOUNDSCOPE_STORE``; None: embedded faiss IVF files in the data directory)."""
        self.store = Store(data_dir, create=create, vector_store=vector_store)
        self._analyzers = analyzers
        self._music_analyzers = music_analyzers
        chosen = asr_model or os.environ.get("SOUNDSCOPE_ASR_MODEL") or "tiny.en"
        self.asr_model = None if chosen.lower() == "none" else chosen

    @property
    def data_dir(self) -> Path:
        return self.store.data_dir

    @cached_property
    def analyzers(self) -> list[Analyzer]:
        return self._analyzers if self._analyzers is not None else default_analyzers()

    @cached_property
    def music_analyzers(self) -> list[Analyzer]:
        return self._music_analyzers if self._music_analyzers is not None else default_music_analyzers()

    @cached_property
    def encoder(self):  # -> TextEncoder
        from . import text

        return text.load()

    @cached_property
    def searcher(self) -> Searcher:
        searcher = Searcher(self.store, self.encoder)
        searcher.rewrite = self.rewriter  # None unless a language model is configured
        return searcher

    @cached_property
    def rewriter(self):  # -> soundscope.llm.QueryRewriter | None
        """The language-model stage for queries (``$SOUNDSCOPE_LLM_URL``; see :mod:`soundscope.llm`), or
        None: then no network call is ever made. ``lib.rewriter.mode = "always"`` is ``--llm``."""
        if not (os.environ.get("SOUNDSCOPE_LLM_URL") or "").strip():  # llm.ENV_URL: none configured, so the
            return None  # module (70 ms of imports and regexes on every shell search) is not even loaded
        from .llm import rewriter_from_env

        return rewriter_from_env()

    def index(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        rehash: bool = False,
        progress: Callable[[Progress], None] | None = None,
        jobs: int = 1,
        wait: float = 0.0,
        ray: str | bool | None = None,
        prune: bool = False,
    ) -> IndexReport:
        """Index (or update) every audio file under ``paths`` with ``jobs`` worker processes;
        see :class:`soundscope.ingest.Indexer`. ``wait``: seconds to wait while another run indexes
        this data directory (0: refuse at once with :class:`~soundscope.store.lock.IndexLockedError`).
        ``ray``: True or "local" (a Ray instance on this machine for the run) or a Ray cluster address analyses
        the files on ``jobs`` Ray actors (0: one per CPU); see :mod:`soundscope.distributed`. A folder with no
        audio left in it keeps its items unless ``prune`` (``report.kept``: an unmounted drive)."""
        with IndexLock(self.data_dir, wait=wait):  # held from model registration to the end of the run
            indexer = Indexer(
                self.store, self.analyzers, self.encoder, music_analyzers=self.music_analyzers, asr_model=self.asr_model
            )
            return indexer.run(list(paths), rehash=rehash, progress=progress, jobs=jobs, ray=ray, prune=prune)

    def search(
        self, query: str, *, limit: int = 10, filters: Filters | None = None, user: str | None = None
    ) -> list[Result]:
        """Best ``limit`` items for a free-text query, with scores and explanations. ``user``: personalised
        for this listener (re-ranked by their profile; unchanged for one with no history); None: off."""
        if user is None or self.recommender.profile(user).empty:  # no history: exactly the plain search
            return self.searcher.search(query, limit=limit, filters=filters)
        from .recommend import POOL

        results = self.searcher.search(query, limit=max(POOL, limit), filters=filters)
        return self.recommender.rerank(user, results, limit=limit, language=self.parse(query).language)

    # -- listeners (issue 14; see soundscope.recommend) ------------------------------------------
    @cached_property
    def recommender(self):  # -> soundscope.recommend.Recommender
        from .recommend import Recommender

        return Recommender(self.store, self.searcher)

    def item_id(self, target: str | int | os.PathLike[str]) -> int:
        """The id of ``target``: an item id, or the path of an indexed file; KeyError if it names no item."""
        if _is_int(target):
            return int(target)
        row = self.store.catalog.item_by_path(os.path.abspath(os.path.expanduser(os.fspath(target))))
        if row is None:
            raise KeyError(f"not in the library: {os.fspath(target)} (index it first, or give an item id)")
        return row.id

    def feedback(
        self,
        kind: str,
        item: str | int | os.PathLike[str],
        *,
        user: str | None = None,
        seconds: float = 0.0,
        query: str = "",
    ) -> dict[str, Any]:
        """Record that ``user`` (default: the OS user) liked, disliked, played (``seconds`` listened) or
        skipped ``item`` (an item id or an indexed file's path); returns the event."""
        from .recommend import default_user

        user = user or default_user()
        item_id = self.item_id(item)
        event_id = self.store.catalog.add_event(user, item_id, kind, value=seconds, query=query)
        return {"id": event_id, "user": user, "item_id": item_id, "kind": kind, "value": seconds, "query": query}

    def recommend(
        self,
        query: str | None = None,
        *,
        user: str | None = None,
        limit: int = 10,
        filters: Filters | None = None,
        explore: float | None = None,
        language: str | None = None,
    ) -> list[Result]:
        """Items for ``user`` (default: the OS user), explained: more of what they like, or with a
        ``query`` its results ranked for them; ``explore``: share of the list spent on exploration."""
        from .recommend import EXPLORE, default_user

        return self.recommender.recommend(
            user or default_user(),
            query=query,
            limit=limit,
            filters=filters,
            explore=EXPLORE if explore is None else explore,
            language=language,
        )

    def radio(
        self, item: str | int | os.PathLike[str], *, user: str | None = None, limit: int = 10, language: str = "en"
    ) -> list[Result]:
        """A sequence starting at ``item`` (an item id or an indexed file's path) that drifts with ``user``'s
        taste (no repeats)."""
        from .recommend import default_user

        return self.recommender.radio(user or default_user(), self.item_id(item), limit=limit, language=language)

    def profile(self, user: str | None = None, *, language: str = "en") -> dict[str, Any]:
        """What the engine believes ``user`` likes, with a ``summary`` in sentences."""
        from .recommend import default_user

        return self.recommender.describe(user or default_user(), language=language)

    def forget(self, user: str, *, item: str | int | os.PathLike[str] | None = None) -> int:
        """Delete ``user``'s events (only about ``item``, an id or an indexed path, if given); returns how many."""
        return self.store.catalog.delete_events(user, item_id=None if item is None else self.item_id(item))

    def parse(self, query: str):  # -> soundscope.query.ParsedQuery
        """How a text query is understood: language, constraints, exclusions, spoken words."""
        from .query import parse

        return self.rewriter(query) if self.rewriter is not None else parse(query)

    def ask(self, question: str, *, passages: int = 6) -> dict[str, Any]:
        """An answer to a question about what was said, only from the best transcript ``passages``, with
        citations (file, mm:ss), or "not found in the library"; see :mod:`soundscope.answers`."""
        from .answers import ask

        return ask(self, question, passages=passages)

    def caption(self, item_ids: Iterable[int] | None = None, *, force: bool = False) -> dict[str, Any]:
        """Write English and Chinese captions for items (all without one by default); see :mod:`soundscope.captions`."""
        from .captions import caption_items

        return caption_items(self, item_ids, force=force)

    def similar(
        self,
        target: str | int | os.PathLike[str],
        *,
        limit: int = 10,
        filters: Filters | None = None,
        include_self: bool = False,
    ) -> list[Result]:
        """Items that sound like ``target``: an indexed item id, or the path of any audio file."""
        primary = self.analyzers[0]
        exclude: set[int] = set()
        row = (
            self.store.catalog.item(int(target))
            if _is_int(target)
            else self.store.catalog.item_by_path(os.path.abspath(os.path.expanduser(os.fspath(target))))
        )
        if _is_int(target) and row is None:
            raise KeyError(f"no item with id {target}")
        path = row.path if row else os.fspath(target)
        if row and not include_self:
            exclude.add(row.id)
        music = next((a for a in self.music_analyzers if a.name == MUSIC_SIMILARITY_SPACE), None)
        searchable = music if music is not None and self._has_space(music.name) else None
        by_name = {a.name: a for a in (primary, searchable) if a is not None}
        if row is not None:  # indexed: reuse stored segments and vectors, no decoding
            # a stored segment's scores are maxima over 5 s of what may be a long track, whose passing
            # noises reach 0.3: a sound event must reach 0.5 there. An item the music tagger never heard
            # has one space only: its segments are not read.
            music_vec = self.store.catalog.item_vector(row.id, searchable.name) if searchable else None
            heard = searchable if music_vec is not None else None
            segments = self._stored_segments(row.id, primary, heard) if heard else []
            parts = self._example_parts(segments, primary, heard, 0.5)
            if len(parts) > 1:
                return self._similar_parts(parts, by_name, limit=limit, filters=filters, exclude=exclude)
            space = by_name[parts[0].space] if parts else primary

            def stored(a: Analyzer) -> list[Result] | None:
                vec = music_vec if a is heard else self.store.catalog.item_vector(row.id, a.name)
                if vec is None:
                    return None
                scores = self.store.catalog.item_scores(row.id, a.name)
                return self.searcher.similar(
                    a, vec, limit=limit, filters=filters, exclude_ids=exclude, query_scores=scores
                )

            hits = self._or_nearest_sounds(space, primary, stored)
            if hits is not None:
                return hits
        query = analyze.analyze_file(path, [primary], music_analyzers=[music] if music else None)
        segments = [(s.start, s.end, s.scores, s.embeddings) for s in query.segments]
        parts = self._example_parts(segments, primary, searchable, 0.3)
        if len(parts) > 1:
            return self._similar_parts(parts, by_name, limit=limit, filters=filters, exclude=exclude)
        space = by_name[parts[0].space] if parts else primary
        return self._or_nearest_sounds(
            space, primary, lambda a: self.searcher.similar(a, query, limit=limit, filters=filters, exclude_ids=exclude)
        )

    @staticmethod
    def _or_nearest_sounds(
        space: Analyzer, primary: Analyzer, search: Callable[[Analyzer], list[Result] | None]
    ) -> list[Result] | None:
        """``search(space)``; when the music space finds nothing (no other music in reach: a library of
        sounds and one song), ``search(primary)``: the nearest sounds, not nothing. None: ``search`` could
        not run (no stored vector)."""
        hits = search(space)
        if hits or hits is None or space is primary:
            return hits
        return search(primary) or hits

    @staticmethod
    def _example_parts(segments, primary: Analyzer, music: Analyzer | None, least: float) -> list[ExamplePart]:
        return example_parts(
            segments,
            sound=primary.name,
            sound_labels=list(primary.labels),
            music=music.name if music else None,
            least=least,
        )

    def _stored_segments(self, item_id: int, primary: Analyzer, music: Analyzer | None) -> list[tuple]:
        """An indexed item's segments as :func:`search.example_parts` reads them, from the catalog."""
        by_id: dict[int, tuple[float, float, dict[str, Any], dict[str, Any]]] = {}
        for a in (primary, music) if music is not None else (primary,):
            for sid, start, end, scores, emb in self.store.catalog.segments_of(item_id, a.name):
                seg = by_id.setdefault(sid, (start, end, {}, {}))
                if scores is not None:
                    seg[2][a.name] = scores
                if emb is not None:
                    seg[3][a.name] = emb
        return sorted(by_id.values(), key=lambda seg: seg[0])

    def _similar_parts(
        self,
        parts: list[ExamplePart],
        by_name: dict[str, Analyzer],
        *,
        limit: int,
        filters: Filters | None,
        exclude: set[int],
    ) -> list[Result]:
        """A query clip holding both sound and music: each part searched in its own space, then fused
        (see :func:`search.fuse_parts`)."""
        hits = [
            (
                p,
                self.searcher.similar(
                    by_name[p.space], p.vector, limit=limit, filters=filters, exclude_ids=exclude, query_scores=p.scores
                ),
            )
            for p in parts
        ]
        return fuse_parts(hits, limit=limit)

    def _has_space(self, space: str) -> bool:
        return space in self.store.catalog.models()

    def show(self, item_id: int) -> dict[str, Any]:
        """Everything stored about one item: metadata, description, top labels per model, segments."""
        row = self.store.catalog.item(item_id)
        if row is None:
            raise KeyError(f"no item with id {item_id}")
        out = row.to_dict()
        models = self.store.catalog.models()
        m = self.searcher.matrices()
        pos = m.position(item_id)
        spaces = [space for space in models if models[space]["labels"] and m.has_space(space)]
        out["labels"] = {
            space: [
                [n, round(p, 4)] for n, p in describe.top_labels(m.label_row(space, pos), models[space]["labels"], k=10)
            ]
            for space in spaces
        }
        primary = spaces[0] if spaces else None
        out["transcript"] = self.store.catalog.passages_of(item_id)
        from .captions import captions_of

        out["captions"] = captions_of(self.store.catalog, item_id)  # language-model sentences, if written
        out["segments"] = [
            {
                "start": round(s, 2),
                "end": round(e, 2),
                "labels": [n for n, _ in describe.top_labels(sc, models[primary]["labels"], k=3)]
                if sc is not None
                else [],
            }
            for _, s, e, sc, _ in (self.store.catalog.segments_of(item_id, primary) if primary else [])
        ]
        return out

    def transcript(self, item_id: int) -> list[dict[str, Any]]:
        """The stored transcript of one item: passages with start/end seconds, text, language, words."""
        if self.store.catalog.item(item_id) is None:
            raise KeyError(f"no item with id {item_id}")
        return self.store.catalog.passages_of(item_id)

    def stats(self) -> dict[str, Any]:
        return {"data_dir": str(self.data_dir), **self.store.catalog.stats(), **self.store.fingerprints().stats()}

    # -- fingerprints (issue 13; see soundscope.identify) -----------------------------------------
    def identify(self, clip: Any, *, limit: int = 3, min_confidence: float | None = None) -> list[dict[str, Any]]:
        """Which indexed recordings ``clip`` comes from, best first, each with the offset where the clip
        starts in it (seconds and m:ss.s), a confidence 0..1 and the speed ratio; [] when nothing matches.
        ``clip``: an audio file path, or a mono float32 array at 16 kHz."""
        import numpy as np

        from . import identify

        y = clip if isinstance(clip, np.ndarray) else identify.load_query(os.path.expanduser(os.fspath(clip)))
        conf = identify.MATCH_CONFIDENCE if min_confidence is None else min_confidence
        return [m.to_dict() for m in identify.identify_array(self.store, y, limit=limit, min_confidence=conf)]

    def identify_stream(self, source: Any, *, min_confidence: float = 0.9):  # -> Iterator[dict]
        """Match events from live input as they become confident (see :func:`soundscope.identify.identify_stream`):
        ``source`` is a path, URL or device FFmpeg opens, or a binary file object such as stdin."""
        from . import identify

        return identify.identify_stream(self.store, source, min_confidence=min_confidence)

    def duplicates(self) -> list[dict[str, Any]]:
        """Groups of items holding the same recording (see :func:`soundscope.identify.duplicates`)."""
        from . import identify

        return identify.duplicates(self.store)

    def failures(self) -> list[tuple[str, str]]:
        return self.store.catalog.failures()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_int(value: object) -> bool:
    return isinstance(value, int) or (isinstance(value, str) and value.isdigit())
