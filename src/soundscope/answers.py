"""Answers: a question about what was said -> an answer from the transcripts, with citations (file, mm:ss).

``soundscope ask "what did they decide about the launch date?"``. Passages are retrieved with the
transcript rankers search uses (the question's words through FTS5 with error-tolerant variants, see
:mod:`soundscope.wordmatch`, and its meaning against the passage vectors), fused by reciprocal rank.
A language model (see :mod:`soundscope.llm`) then answers *only from those passages*, citing them
by number; we keep an answer only when it cites passages that exist and shares words with them.
Otherwise, and whenever the passages do not hold the answer, the answer is "not found in the library".

Without a model, or when it fails, the answer is extractive: the best passage that says most of the
question's words, quoted with its citation (or "not found in the library" when none does).
"""

from __future__ import annotations

import os
import re
from typing import Any

from . import textnorm, wordmatch
from .describe import format_clock
from .llm import LLMError, _obj, _text

NOT_FOUND = "not found in the library"
RRF_K = 60
CANDIDATES = 50  # passages each ranker hands to fusion
MEANING_MIN = 0.35  # passage-question cosine below which a passage is no evidence (as in search)
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "found": {"type": "boolean"},
        "answer": {"type": "string", "maxLength": 400},
        "citations": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 20}, "maxItems": 4},
    },
    "required": ["found", "answer", "citations"],
    "additionalProperties": False,
}
ANSWER_SYSTEM = (
    "You answer questions about recordings using ONLY the numbered transcript passages given. "
    "If the passages contain the answer, set found=true, answer in one or two sentences in the "
    "question's language, and list the numbers of the passages you used in citations. If they do "
    'not contain the answer, set found=false, answer "" and citations []. Never use outside knowledge.'
)


def retrieve(lib, question: str, *, k: int = 6) -> list[dict[str, Any]]:
    """The ``k`` passages that best answer ``question``: {"id", "item_id", "path", "start", "end",
    "text", "score", "said"} best first (``said``: how many of the question's words the passage says)."""
    from .ingest import TRANSCRIPT_SPACE

    cat = lib.store.catalog
    pq = _rules(question)  # the rules pick the words; the model is asked once, for the answer
    words = pq.spoken or pq.semantic or question
    terms = wordmatch.terms(words, lib.searcher.lexicon())
    fused: dict[int, float] = {}
    expr = wordmatch.fts_expression(terms)
    for rank, (pid, _score) in enumerate(cat.fts_passages(expr, CANDIDATES) if expr else []):
        fused[pid] = fused.get(pid, 0.0) + 1.0 / (RRF_K + 1 + rank)
    try:
        index = lib.store.vectors(TRANSCRIPT_SPACE)
    except KeyError:
        index = None
    if index is not None and len(index):
        q = lib.encoder.encode([question])[0]
        pids, sims = index.search(q, min(len(index), CANDIDATES))
        for rank, (pid, sim) in enumerate(zip(pids.tolist(), sims.tolist(), strict=True)):
            if sim >= MEANING_MIN:
                fused[int(pid)] = fused.get(int(pid), 0.0) + 1.0 / (RRF_K + 1 + rank)
    best = sorted(fused, key=lambda p: -fused[p])[:k]
    info = cat.passages(best)
    out = []
    for pid in best:
        p = info.get(pid)
        row = cat.item(p["item_id"]) if p else None
        if p is None or row is None:
            continue
        said = wordmatch.coordination(terms, textnorm.index_text(p["text"]).split()).score if terms else 0.0
        out.append({"id": pid, **p, "path": row.path, "score": round(fused[pid], 5), "said": said})
    return out


def _rules(question: str):
    from .query import parse

    return parse(question)


def cite(p: dict[str, Any]) -> dict[str, Any]:
    """A citation: file (path and name), the moment as mm:ss, the passage's words."""
    return {
        "item_id": p["item_id"],
        "path": p["path"],
        "file": os.path.basename(p["path"]),
        "at": format_clock(float(p["start"])),
        "start": round(float(p["start"]), 2),
        "text": p["text"],
    }


def _content(text: str) -> set[str]:
    return {w for w in textnorm.index_text(text).split() if w not in textnorm.STOPWORDS and len(w) > 1}


def answer_messages(question: str, passages: list[dict[str, Any]]) -> list[dict[str, str]]:
    numbered = "\n".join(
        f"[{i}] ({os.path.basename(p['path'])}, {format_clock(float(p['start']))}) {p['text']}"
        for i, p in enumerate(passages, 1)
    )
    return [
        {"role": "system", "content": ANSWER_SYSTEM},
        {"role": "user", "content": f"Passages:\n{numbered}\n\nQuestion: {question}"},
    ]


def validate_answer(n: int):
    """A validator for answers over ``n`` passages: citations must be passage numbers 1..n."""

    def check(value: Any) -> dict[str, Any]:
        d = _obj(value)
        found = d.get("found")
        if not isinstance(found, bool):
            raise ValueError("found: expected true or false")
        cites = d.get("citations") or []
        if not isinstance(cites, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in cites):
            raise ValueError("citations: expected a list of passage numbers")
        bad = [c for c in cites if not 1 <= c <= n]
        if bad:
            raise ValueError(f"citations {bad} are not passages 1-{n}")
        return {"found": found, "answer": _text(d.get("answer"), "answer", 400) or "", "citations": cites}

    return check


def extractive(question: str, passages: list[dict[str, Any]], *, reason: str) -> dict[str, Any]:
    """The best passage that says at least half of the question's content words, quoted; else not found."""
    need = _content(_rules(question).semantic or question)
    for p in sorted(passages, key=lambda p: -p["said"]):
        have = _content(p["text"])
        if need and len(need & have) >= max(1, (len(need) + 1) // 2):
            return {"question": question, "found": True, "answer": p["text"], "citations": [cite(p)], "by": reason}
    return {"question": question, "found": False, "answer": NOT_FOUND, "citations": [], "by": reason}


def ask(lib, question: str, *, passages: int = 6) -> dict[str, Any]:
    """{"question", "found", "answer", "citations": [{"file", "at", ...}], "by", "passages"}: an answer
    only from the library's transcripts (see the module docstring)."""
    question = re.sub(r"\s+", " ", question or "").strip()
    if not question:
        raise ValueError("empty question")
    found = retrieve(lib, question, k=passages)
    shown = [cite(p) for p in found]
    if not found:
        return {
            "question": question,
            "found": False,
            "answer": NOT_FOUND,
            "citations": [],
            "by": "retrieval",
            "passages": [],
        }
    client = lib.rewriter.client if lib.rewriter is not None else None
    if client is None:
        return {**extractive(question, found, reason="passages (no language model)"), "passages": shown}
    try:
        got = client.chat_json(
            answer_messages(question, found), ANSWER_SCHEMA, validate_answer(len(found)), task="ask", max_tokens=200
        )
    except LLMError as exc:
        return {**extractive(question, found, reason=f"passages (language model failed: {exc})"), "passages": shown}
    used = [found[c - 1] for c in dict.fromkeys(got["citations"])]
    cited = " ".join(p["text"] for p in used)
    translated = textnorm.has_cjk(got["answer"]) != textnorm.has_cjk(cited)  # answered in the question's language
    grounded = bool(used) and (translated or bool(_content(got["answer"]) & _content(cited)))
    if not got["found"] or not got["answer"] or not grounded:
        return {
            "question": question,
            "found": False,
            "answer": NOT_FOUND,
            "citations": [],
            "by": f"language model {client.model}",
            "passages": shown,
        }
    return {
        "question": question,
        "found": True,
        "answer": got["answer"],
        "citations": [cite(p) for p in used],
        "by": f"language model {client.model}",
        "passages": shown,
    }
