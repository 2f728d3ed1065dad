"""HTTP endpoints for listeners (issue 14), added to the app by :func:`add_routes`:

=======================================  ==============================================================
``POST   /api/feedback``                 record ``{"item_id", "kind": like|dislike|play|skip, "user"?,
                                         "seconds"?, "query"?}`` (token when the server has one)
``GET    /api/recommend``                ``?user=&q=&limit=&explore=&lang=``: recommendations, explained
``GET    /api/radio/{id}``               a sequence from an item that drifts with ``user``'s taste
``GET    /api/profile/{user}``           what the engine believes ``user`` likes (``summary`` in words)
``DELETE /api/profile/{user}``           forget ``user``'s events (token when the server has one)
=======================================  ==============================================================

The library is only called on the server's library worker, like every other endpoint.
"""

import time
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, Query, Request

from .recommend import default_user

MAX_USER_CHARS = 100
User = Annotated[
    str | None, Query(max_length=MAX_USER_CHARS, description="listener name (default: the server's OS user)")
]
Lang = Annotated[Literal["en", "zh"] | None, Query(description="language of the explanations")]


def add_routes(app: FastAPI, st: Any, library: Any, require_token: Any) -> None:
    """Register the listener endpoints on ``app`` (``st``: the server state with its workers)."""
    from .server import MAX_QUERY_CHARS, ApiError, Limit, _item_meta

    def page(results: list[Any]) -> dict[str, Any]:
        return {
            "results": [r.to_dict() for r in results],
            "items": _item_meta(library, [r.item_id for r in results]),
        }

    @app.post("/api/feedback", tags=["listeners"])
    async def feedback(
        request: Request,
        item_id: Annotated[int, Body(ge=1)],
        kind: Annotated[Literal["like", "dislike", "play", "skip"], Body()],
        user: Annotated[str | None, Body(max_length=MAX_USER_CHARS)] = None,
        seconds: Annotated[float, Body(ge=0, le=86400)] = 0.0,
        query: Annotated[str, Body(max_length=MAX_QUERY_CHARS)] = "",
    ) -> dict[str, Any]:
        """Record what a listener did with an item; returns the event."""
        require_token(request)
        t0 = time.perf_counter()
        try:
            event = await st.lib_worker.run(
                library.feedback, kind, item_id, user=(user or "").strip() or default_user(), seconds=seconds,
                query=query,
            )  # fmt: skip
        except KeyError as exc:
            raise ApiError(404, exc.args[0] if exc.args else f"no item with id {item_id}") from exc
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
        return {**event, "took_ms": round((time.perf_counter() - t0) * 1000, 2)}

    @app.get("/api/recommend", tags=["listeners"])
    async def recommend(
        user: User = None,
        q: Annotated[str, Query(max_length=MAX_QUERY_CHARS, description="optional: what to recommend")] = "",
        limit: Limit = 10,
        explore: Annotated[float | None, Query(ge=0, le=0.5)] = None,
        lang: Lang = None,
    ) -> dict[str, Any]:
        """Recommendations for a listener: more of what they like, or a query's results ranked for them."""
        who = (user or "").strip() or default_user()
        t0 = time.perf_counter()
        results = await st.lib_worker.run(
            library.recommend, q.strip() or None, user=who, limit=limit, explore=explore, language=lang
        )
        out = await st.lib_worker.run(page, results)
        return {"user": who, "query": q, **out, "took_ms": round((time.perf_counter() - t0) * 1000, 1)}

    @app.get("/api/radio/{item_id}", tags=["listeners"])
    async def radio(item_id: int, user: User = None, limit: Limit = 10, lang: Lang = None) -> dict[str, Any]:
        """A sequence that starts at ``item_id`` and drifts with the listener's taste."""
        who = (user or "").strip() or default_user()
        try:
            results = await st.lib_worker.run(library.radio, item_id, user=who, limit=limit, language=lang or "en")
        except KeyError as exc:
            raise ApiError(404, exc.args[0] if exc.args else f"no item with id {item_id}") from exc
        return {"user": who, **(await st.lib_worker.run(page, results))}

    @app.get("/api/profile/{user}", tags=["listeners"])
    async def profile(user: str, lang: Lang = None) -> dict[str, Any]:
        """What the engine believes ``user`` likes: tastes, what counts against, and a summary in words."""
        if len(user) > MAX_USER_CHARS:
            raise ApiError(400, f"user name too long: at most {MAX_USER_CHARS} characters")
        return await st.lib_worker.run(library.profile, user, language=lang or "en")

    @app.delete("/api/profile/{user}", tags=["listeners"])
    async def forget(user: str, request: Request) -> dict[str, Any]:
        """Delete every event of ``user``."""
        require_token(request)
        n = await st.lib_worker.run(library.forget, user)
        return {"user": user, "deleted_events": n}
