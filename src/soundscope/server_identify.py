"""HTTP endpoints for fingerprints (issue 13), added to the app by :func:`add_routes`:

=======================================  ==============================================================
``POST /api/identify``                   which indexed recording an uploaded clip comes from (multipart
                                         field ``file`` or a raw body): matches with ``offset`` (m:ss.s),
                                         ``confidence``, ``speed``; ``matches: []`` is "no match"
``GET  /api/identify/{id}``              the same for an indexed item (e.g. an excerpt among the files)
``GET  /api/duplicates``                 groups of items holding the same recording, with relations
=======================================  ==============================================================

Uploads go through the server's checks (size limit while streaming, content sniffing, bounded
decode) and are deleted afterwards; the library is only called on the server's library worker.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request

Matches = Annotated[int, Query(ge=1, le=20, description="matches to return")]


def add_routes(app: FastAPI, st: Any, library: Any) -> None:
    """Register the fingerprint endpoints on ``app`` (``st``: the server state with its workers)."""
    from .server import ApiError, _item_meta, check_clip, receive_upload

    def _with_items(matches: list[dict[str, Any]]) -> dict[str, Any]:
        return {"matches": matches, "items": _item_meta(library, [m["id"] for m in matches])}

    @app.post("/api/identify", tags=["identify"],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "file": {"type": "string", "format": "binary"}}, "required": ["file"]}},
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})  # fmt: skip
    async def identify_upload(request: Request, limit: Matches = 3) -> dict[str, Any]:
        """Which recording an uploaded clip comes from, and where in it (the first 30 s are used)."""
        t0 = time.perf_counter()
        tmp = tempfile.mkdtemp(prefix="soundscope-identify-")
        try:
            raw, name = await receive_upload(request, tmp, st.max_upload_bytes)
            path, seconds = await st.upload_worker.run(check_clip, raw)
            out = await st.lib_worker.run(lambda: _with_items(library.identify(path, limit=limit)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out["clip"] = {"upload": name, "duration_s": round(seconds, 3)}
        return {**out, "took_ms": round((time.perf_counter() - t0) * 1000, 1)}

    @app.get("/api/identify/{item_id}", tags=["identify"])
    async def identify_item(item_id: int, limit: Matches = 3) -> dict[str, Any]:
        """Which other indexed recording an indexed item comes from (itself left out)."""
        t0 = time.perf_counter()

        def run() -> dict[str, Any]:
            row = library.store.catalog.item(item_id)
            if row is None:
                raise ApiError(404, f"no item with id {item_id}")
            matches = [m for m in library.identify(row.path, limit=limit + 1) if m["id"] != item_id][:limit]
            return _with_items(matches)

        out = await st.lib_worker.run(run)
        return {**out, "took_ms": round((time.perf_counter() - t0) * 1000, 1)}

    @app.get("/api/duplicates", tags=["identify"])
    async def duplicates() -> dict[str, Any]:
        """Groups of items that hold the same recording: exact copies, re-encodings, excerpts (with the
        offset where they start in the reference), speed-changed edits."""
        t0 = time.perf_counter()
        groups = await st.lib_worker.run(library.duplicates)
        ids = [m["id"] for g in groups for m in g["items"]]
        items = await st.lib_worker.run(_item_meta, library, ids)
        return {"groups": groups, "items": items, "took_ms": round((time.perf_counter() - t0) * 1000, 1)}
