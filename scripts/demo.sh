#!/usr/bin/env bash
# README command 1: set up, index the bundled demo corpus, answer example queries.
set -euo pipefail
cd "$(dirname "$0")/.."
PYBIN=$(bash scripts/setup.sh)
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export SOUNDSCOPE_DATA_DIR=${SOUNDSCOPE_DATA_DIR:-$PWD/.data/demo}
exec "$PYBIN" -m soundscope.cli demo "$@"
