"""Write tests/data/yamnet_reference.npz: YAMNet's exact outputs on a few demo-corpus patches.

The packaged model computes in integers; its exact result does not depend on the CPU. This records
that result once (uint8 model input, float logits and embeddings) so the suite can check, on whatever
CPU it runs, that ONNX Runtime computes it (``tests/test_yamnet.py``). Run it on any CPU: the uint8
weight form is exact everywhere, and the form the analyzer picks on this CPU must agree with it.

    .venv/bin/python scripts/make_yamnet_reference.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from soundscope import decode
from soundscope.analyzers import yamnet

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src/soundscope/data/demo"
CLIPS = [
    "sounds/dog/1-30226-A.ogg",
    "sounds/rain/1-17367-A.ogg",
    "music/Kevin_MacLeod_-_Vibe_Ace.ogg",
    "speech/1089-134686-0000.flac",
]
PATCHES_PER_CLIP = 4


def main() -> None:
    exact = yamnet.YamnetAnalyzer(weights="uint8")
    patches = []
    for clip in CLIPS:
        y = decode.load(DEMO / clip, max_duration_s=600.0)[: 16000 * 5]
        p = yamnet.patches_from_log_mel(yamnet.log_mel_frontend(yamnet._pad_audio(y, yamnet.n_frames(len(y)))))
        patches.append(p[:: max(1, len(p) // PATCHES_PER_CLIP)][:PATCHES_PER_CLIP])
    feed = exact._quantize(np.concatenate(patches)[:, None])
    logits, embeddings = exact._session.run(None, {exact._info.input_name: feed})
    chosen = yamnet.YamnetAnalyzer()  # int8 weights where they are exact here
    other = chosen._session.run(None, {chosen._info.input_name: feed})
    assert all(np.array_equal(a, b) for a, b in zip((logits, embeddings), other, strict=True)), chosen.weights
    out = ROOT / "tests/data/yamnet_reference.npz"
    np.savez_compressed(
        out,
        input=feed[:, 0],
        logits=logits.reshape(len(feed), -1),
        embeddings=embeddings.reshape(len(feed), -1),
        clips=np.array(CLIPS),
    )
    print(f"wrote {out} ({len(feed)} patches, {out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
