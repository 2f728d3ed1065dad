#!/usr/bin/env bash
# README command 2: set up, lint, run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYBIN=$(SOUNDSCOPE_EXTRAS=${SOUNDSCOPE_EXTRAS-milvus,ray,llm,denoise} bash scripts/setup.sh)  # the real Milvus server, Ray ingest
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
"$PYBIN" -m ruff check src tests
"$PYBIN" -m pytest -q "$@"
