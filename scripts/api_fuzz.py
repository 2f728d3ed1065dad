"""Schema-driven fuzz of the HTTP API from its own OpenAPI document (schemathesis), long form.

    python scripts/api_fuzz.py                           # demo corpus library, real server on loopback
    python scripts/api_fuzz.py --data-dir DIR --examples 500 --json out.json

Starts ``soundscope serve`` on a free loopback port over ``--data-dir`` (default: the bundled demo
corpus indexed into a temp folder), loads ``/openapi.json`` from it and calls every operation with
generated requests, schema-valid (positive) and schema-invalid (negative). Every response is checked
by schemathesis' default checks: no 5xx, a documented status code, content type and headers, a body
matching the documented schema, valid data accepted and invalid data rejected. The suite runs the
same :func:`fuzz` briefly in-process (``tests/test_api_fuzz.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi.checks import positive_data_acceptance

ROOT = Path(__file__).resolve().parents[1]
# Refusals of schema-valid requests that OpenAPI cannot express: two parameters valid alone but not
# together, a label filter naming no label of this library's models (listed by GET /api/labels), and
# an option that needs what this server was not configured with (llm=true without a language model).
UNSAYABLE = ("max_duration: must not be below min_duration", "end: must not be before start", "unknown label",
             "no language model configured")  # fmt: skip


def fuzz(api_schema: Any, mode: Any, examples: int, stats: dict[str, int]) -> list[str]:
    """Call every operation with ``examples`` generated cases of ``mode`` (a GenerationMode); returns
    the check failures found (one per operation and kind), each with a curl command reproducing it.
    ``stats`` counts ``requests`` and ``5xx``."""
    found: dict[str, str] = {}
    for result in api_schema.get_all_operations():
        with contextlib.suppress(Unsatisfiable):  # nothing of this mode to generate (no parameter to spoil)
            _runner(result.ok(), mode, examples, stats, found)()
    return list(found.values())


def _uploads(op: Any) -> bool:
    """Whether the operation takes a binary body: the schema cannot say "audio", so bytes that are
    schema-valid yet not a clip are rightly refused (415), and only that check is relaxed for them."""
    return '"binary"' in json.dumps((op.definition.raw or {}).get("requestBody", {}))


def _runner(op: Any, mode: Any, examples: int, stats: dict[str, int], found: dict[str, str]):
    relaxed = [positive_data_acceptance] if _uploads(op) else []

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        stats["requests"] += 1
        response = case.call()
        stats["5xx"] += response.status_code >= 500
        try:
            case.validate_response(response, excluded_checks=relaxed)
        except BaseException as exc:  # a failed check (a FailureGroup): recorded, not shrunk (bounded time)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if "ST202" in str(exc) and any(rule in str(exc) for rule in UNSAYABLE):
                return
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            found.setdefault(f"{op.label}: {first}", f"{exc}\n{case.as_curl_command()}"[:3000])

    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _demo_library(work: Path) -> Path:
    data = work / "data"
    demo = ROOT / "src" / "soundscope" / "data" / "demo"
    cmd = [sys.executable, "-m", "soundscope.cli", "index", str(demo), "--data-dir", str(data), "-q"]
    subprocess.run(cmd, check=True)
    return data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--examples", type=int, default=300, help="generated cases per operation and mode")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="soundscope-apifuzz-"))
    data = a.data_dir or _demo_library(work)
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "soundscope.cli", "serve", "--data-dir", str(data), "--port", str(port),
           "--token", "t0ken", "--allow-root", str(work)]  # fmt: skip
    server = subprocess.Popen(cmd, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{base}/api/config", timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        stats = {"requests": 0, "5xx": 0}
        t0 = time.monotonic()
        failures: list[str] = []
        for mode in schemathesis.GenerationMode:
            found = fuzz(schema, mode, a.examples, stats)
            print(f"{mode.value}: {len(found)} distinct failures")
            failures += found
        out = {**stats, "failures": len(failures), "examples_per_operation": a.examples,
               "seconds": round(time.monotonic() - t0, 1)}  # fmt: skip
        for f in failures:
            print("-" * 80 + "\n" + f)
        print(json.dumps(out))
        if a.json:
            a.json.write_text(json.dumps({**out, "details": failures}, indent=1))
        return 0 if not failures and not stats["5xx"] else 1
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
