"""Schema-driven fuzz of the HTTP API from its own OpenAPI document (schemathesis).

Every operation the server publishes is called with generated requests, valid and invalid (random
query strings, ids, ranges, bodies), against the real app over the bundled demo library; each
response must be no server error (5xx), have a status code, content type, headers and body that the
schema documents. Bounded (examples per operation below; derandomized, so the same inputs each run);
``python scripts/api_fuzz.py`` runs the same checks much longer against a real ``soundscope serve``.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from scripts.api_fuzz import fuzz  # noqa: E402
from soundscope import server  # noqa: E402

EXAMPLES = 15  # per operation and generation mode: about 10 s on 2 cores (scripts/api_fuzz.py: 150)
STATS = {"requests": 0, "5xx": 0}


@pytest.fixture(scope="module")
def api_schema(demo_lib):
    from fastapi.testclient import TestClient

    app = server.create_app(demo_lib, token="t0ken", allow_roots=[str(demo_lib.data_dir)], warm=False)
    with TestClient(app):  # lifespan started once: the library workers live for the whole module
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    print(f"\nAPI fuzz: {STATS['requests']} requests, {STATS['5xx']} server errors")


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_api_conforms_to_its_schema(api_schema, mode):
    failures = fuzz(api_schema, mode, EXAMPLES, STATS)
    assert not failures, "\n\n".join(failures)
