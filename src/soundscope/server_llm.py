"""HTTP endpoints of the language-model stage (issue 15), added to the app by :func:`add_routes`:

=======================================  ==============================================================
``GET /api/ask``                         ``?q=QUESTION&passages=6``: an answer from the transcripts with
                                         citations (file, mm:ss), or "not found in the library"
``GET /api/understand``                  ``?q=&llm=true``: how a query is understood, and which part came
                                         from the rules or the language model
``GET /api/search?llm=true``             every query read by the language model (else: only when the
                                         rules leave words they do not know, if a model is configured)
=======================================  ==============================================================

Without ``$SOUNDSCOPE_LLM_URL``, ``/api/ask`` answers from the passages alone and ``llm=true`` is a
400. The library is only called on the server's library worker, like every other endpoint.
"""

import functools
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Query

T = TypeVar("T")
NOT_CONFIGURED = "no language model configured: set SOUNDSCOPE_LLM_URL"


def require_llm(library: Any, llm: bool) -> None:
    """``?llm=true`` on a server with no language model is a client error."""
    if llm and library.rewriter is None:
        from .server import ApiError

        raise ApiError(400, NOT_CONFIGURED)


def page_fn(library: Any, llm: bool, fn: Callable[..., T]) -> Callable[..., T]:
    """``fn``, run with every query read by the model when ``llm`` (400 when no model is configured)."""
    require_llm(library, llm)
    if not llm:
        return fn
    from .llm import always

    return functools.partial(always, fn)


def explained(library: Any, q: str, llm: bool) -> tuple[dict[str, Any], list[str]]:
    """(``explain()``, ``describe()`` lines) of the query as the library reads it (on the library worker)."""
    from .llm import always

    parsed = always(library.parse, q) if llm else library.parse(q)
    return parsed.explain(), [str(x) for x in parsed.describe()]


def add_routes(app: FastAPI, st: Any, library: Any) -> None:
    """Register the language-model endpoints on ``app`` (``st``: the server state with its workers)."""
    from .server import MAX_QUERY_CHARS, ApiError

    Text = Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"\S")]

    @app.get("/api/ask", tags=["search"])
    async def ask(
        q: Text, passages: Annotated[int, Query(ge=1, le=20, description="passages the answer may use")] = 6
    ) -> dict[str, Any]:
        """Answer a question about what was said, only from the library's transcripts, with citations."""
        t0 = time.perf_counter()
        try:
            out = await st.lib_worker.run(library.ask, q.strip(), passages=passages)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
        return {**out, "took_ms": round((time.perf_counter() - t0) * 1000, 1)}

    @app.get("/api/understand", tags=["search"])
    async def understand(
        q: Text, llm: Annotated[bool, Query(description="read it with the language model")] = False
    ) -> dict[str, Any]:
        """How a query is understood (``soundscope search --explain``), and where each part came from."""
        require_llm(library, llm)
        out, lines = await st.lib_worker.run(explained, library, q.strip(), llm)
        return {"query": q, "explain": out, "understood": lines}
