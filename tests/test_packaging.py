"""The project runs without PyTorch or TensorFlow: no module of ours imports either."""

import subprocess
import sys


def test_no_torch_or_tensorflow_is_imported():
    code = (
        "import sys, soundscope, soundscope.api, soundscope.cli, soundscope.search, soundscope.transcribe\n"
        "from soundscope.analyzers import yamnet, musicnn\n"
        "yamnet.load(); musicnn.load()\n"
        "from soundscope import transcribe; transcribe.load_vad()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchaudio', 'tensorflow'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
