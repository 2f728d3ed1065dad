"""soundscope: search audio collections by what they sound like, mean and say.

The same operations as the command line, as plain calls::

    import soundscope
    report = soundscope.index(["~/Music", "~/Sounds"])
    for hit in soundscope.search("dog barking", limit=5):
        print(hit.score, hit.path, hit.start, hit.why)
"""

from __future__ import annotations

import os
from typing import Any

from .api import Library
from .search import Filters
from .types import IndexReport, Result

__version__ = "0.1.0"
__all__ = ["Filters", "IndexReport", "Library", "Result", "index", "search", "similar"]


def index(paths: list[str], *, data_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> IndexReport:
    """Index every audio file under ``paths`` into ``data_dir`` (default: $SOUNDSCOPE_DATA_DIR or the user data dir)."""
    with Library(data_dir) as lib:
        return lib.index(paths, **kwargs)


def search(query: str, *, data_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> list[Result]:
    """Ranked results for a text query (Chinese or English)."""
    with Library(data_dir, create=False) as lib:
        return lib.search(query, **kwargs)


def similar(target: str | int, *, data_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> list[Result]:
    """Ranked results that sound like an audio file or an indexed item id."""
    with Library(data_dir, create=False) as lib:
        return lib.similar(target, **kwargs)
