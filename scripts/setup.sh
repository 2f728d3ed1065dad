#!/usr/bin/env bash
# Create .venv (if needed) and install soundscope with everything it needs, offline-model defaults included.
# Idempotent: reinstalls only when pyproject.toml changed. Usage: source or run; prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.soundscope-installed
want=$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip >&2
  .venv/bin/python -m pip install --quiet -e ".[dev]" >&2
  # musicnn ships the tagger checkpoints; its own dependencies (TensorFlow, librosa) are never needed.
  .venv/bin/python -m pip install --quiet --no-deps "musicnn==0.1.0" >&2
  echo "$want" > "$stamp"
fi
echo "$PWD/.venv/bin/python"
