"""Build soundscope's second evaluation set (Debian game and desktop sound effects) without indexing it.

    python scripts/build_sfx_eval.py [DEST]     # default: $SOUNDSCOPE_EVAL_DIR/sfx or ~/.cache/soundscope/evalsets/sfx

The classes, their path patterns and queries are in src/soundscope/data/eval/sfx.json. The audio is
fetched with apt-get download and stays out of the repository. Then: soundscope eval --section sfx.
"""

import sys
from collections import Counter
from pathlib import Path

from soundscope import eval_sfx

dest = eval_sfx.build(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
clips = eval_sfx.load_clips(dest)
print(f"{len(clips)} files in {dest}")
for cat, n in sorted(Counter(c.category for c in clips).items()):
    print(f"  {cat:16s}{n:4d}")
