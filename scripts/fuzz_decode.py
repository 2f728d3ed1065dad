#!/usr/bin/env python
"""Fuzz the decoder (``probe``, ``stream``, ``load``) with mutated real audio files.

Usage: ``python scripts/fuzz_decode.py [--inputs 5000] [--seconds 0] [--seed 0] [--timeout 10] [--save DIR]``

Each input is a small real file (WAV, Ogg Vorbis, FLAC, and an MP3 transcoded from the real WAV)
with bit flips, truncations, header field edits (RIFF/fmt sizes, channel and rate fields, Ogg page
fields with the page CRC recomputed, FLAC STREAMINFO, MP3 frame headers), magic edits or splices.
Every input is decoded in a worker process under a per-input time bound. The only acceptable
outcomes are audio (mono float32, finite, in [-1, 1]) or :class:`soundscope.decode.DecodeError`
with a reason; anything else is a crash: another exception, a worker killed by a signal, bad
output, a decode that runs past ``--timeout`` (a hang) or one whose worker's peak memory passes
``--max-rss-mb``. Exits 1 when there was any crash.

The mutator (:func:`mutate`) takes any ``random.Random``, so the test suite drives it with
Hypothesis' ``st.randoms()`` (shrinkable) and this script with a seeded one.
"""

from __future__ import annotations

import argparse
import collections
import math
import multiprocessing as mp
import os
import random
import re
import resource
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "src" / "soundscope" / "data" / "demo"
SEEDS = {  # small real files, one per container
    "wav": DEMO / "speech" / "prompts" / "vm-goodbye.wav",  # 8 kHz PCM, Asterisk prompt
    "ogg": DEMO / "nature" / "456440__inspectorj__bird-whistling-robin-single-13.ogg",  # Vorbis
    "flac": DEMO / "speech" / "1089-134691-0000.flac",  # LibriSpeech
}
INTERESTING_32 = (0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 44100, 192000, 0x7FFFFFFF, 0x80000000,
                  0xFFFFFFFE, 0xFFFFFFFF)  # fmt: skip
INTERESTING_16 = (0, 1, 2, 3, 6, 8, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF)
INTERESTING_8 = (0, 1, 0x7F, 0x80, 0xFE, 0xFF)
MAGICS = (b"RIFF", b"RIFX", b"RF64", b"WAVE", b"fmt ", b"data", b"OggS", b"fLaC", b"ID3\x03", b"\xff\xfb\x90\x00",
          b"\x01vorbis", b"FORM", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff")  # fmt: skip


# ---------------------------------------------------------------------------------------------- seeds


def seed_files(workdir: str | os.PathLike[str]) -> dict[str, bytes]:
    """Bytes of each seed file by extension; the MP3 is the real WAV transcoded with PyAV (none is shipped)."""
    seeds = {ext: path.read_bytes() for ext, path in SEEDS.items()}
    mp3 = Path(workdir) / "seed.mp3"
    if not mp3.exists():
        _transcode_mp3(SEEDS["wav"], mp3)
    seeds["mp3"] = mp3.read_bytes()
    return seeds


def _transcode_mp3(src: Path, dst: Path) -> None:
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ost = out.add_stream("libmp3lame", rate=inp.streams.audio[0].rate, layout="mono")
        ost.bit_rate = 32000
        for frame in inp.decode(audio=0):
            frame.pts = None
            for packet in ost.encode(frame):
                out.mux(packet)
        for packet in ost.encode(None):
            out.mux(packet)


# ---------------------------------------------------------------------------------------------- mutations


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
        table.append(crc)
    return table


_CRC = _crc_table()


def _ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[(crc >> 24) ^ byte]
    return crc


def _fix_ogg_crcs(buf: bytearray) -> None:
    """Recompute the CRC of every complete Ogg page, so an edited field reaches the codec."""
    pos = buf.find(b"OggS")
    while pos >= 0 and pos + 27 <= len(buf):
        nsegs = buf[pos + 26]
        end = pos + 27 + nsegs + sum(buf[pos + 27 : pos + 27 + nsegs])
        if end > len(buf):
            break
        page = bytearray(buf[pos:end])
        page[22:26] = b"\0\0\0\0"
        buf[pos + 22 : pos + 26] = struct.pack("<I", _ogg_crc(bytes(page)))
        pos = buf.find(b"OggS", end)


def _fields(data: bytes) -> list[tuple[int, str]]:
    """(offset, struct format) of header fields worth editing, found by parsing the container."""
    out: list[tuple[int, str]] = []
    if data[:4] in (b"RIFF", b"RIFX", b"RF64") and len(data) >= 12:
        out.append((4, "<I"))  # RIFF size
        pos = 12
        while pos + 8 <= len(data) and len(out) < 40:
            out.append((pos + 4, "<I"))  # chunk size
            size = struct.unpack_from("<I", data, pos + 4)[0]
            if data[pos : pos + 4] == b"fmt " and pos + 24 <= len(data):
                # format tag, channels, rate, byte rate, block align, bits per sample
                out += [(pos + 8, "<H"), (pos + 10, "<H"), (pos + 12, "<I"), (pos + 16, "<I"), (pos + 20, "<H"),
                        (pos + 22, "<H")]  # fmt: skip
            pos += 8 + size + (size & 1)
    pos = data.find(b"OggS")
    pages = 0
    while pos >= 0 and pos + 27 <= len(data) and pages < 6:
        out += [(pos + 4, "B"), (pos + 5, "B"), (pos + 6, "<q"), (pos + 14, "<I"), (pos + 18, "<I"), (pos + 26, "B")]
        body = pos + 27 + data[pos + 26]
        if data[body : body + 7] == b"\x01vorbis" and body + 30 <= len(data):
            # version, channels, rate, bitrate max / nominal / min, block sizes
            out += [(body + 7, "<I"), (body + 11, "B"), (body + 12, "<I"), (body + 16, "<i"), (body + 20, "<i"),
                    (body + 24, "<i"), (body + 28, "B")]  # fmt: skip
        if data[body : body + 5] == b"\x7fFLAC" and body + 13 <= len(data):
            out += [(body + 9, ">H"), (body + 13, "B")]
        pos = data.find(b"OggS", pos + 4)
        pages += 1
    if data[:4] == b"fLaC" and len(data) >= 42:
        # block header (type/length), min/max block size, min/max frame size, rate|channels|bits, total samples
        out += [(4, "B"), (5, ">H"), (8, ">H"), (10, ">H"), (12, ">H"), (15, ">H"), (18, ">H"), (20, "B"), (21, "B"),
                (22, ">I")]  # fmt: skip
    frames = re.finditer(rb"\xff[\xe0-\xff]", data[:4096]) if data[:4] not in (b"RIFF", b"OggS") else ()
    for m in frames:  # MPEG audio / FLAC frame headers (in PCM or Ogg data these bytes are no header)
        out += [(m.start() + 1, "B"), (m.start() + 2, "B"), (m.start() + 3, "B")]
        if len(out) > 120:
            break
    if data[:3] == b"ID3" and len(data) >= 10:
        out += [(5, "B"), (6, ">I")]
    return out


def _field_value(rnd: random.Random, fmt: str, old: int) -> int:
    size = struct.calcsize(fmt)
    pool = {1: INTERESTING_8, 2: INTERESTING_16}.get(size, INTERESTING_32)
    bits = size * 8
    choice = rnd.randrange(4)
    if choice == 0:
        value = rnd.choice(pool)
    elif choice == 1:
        value = old + rnd.choice((-2, -1, 1, 2, 16, -16)) * rnd.choice((1, 1, 256, 65536))
    elif choice == 2:
        value = old ^ (1 << rnd.randrange(bits))
    else:
        value = rnd.randrange(1 << bits)
    value &= (1 << bits) - 1
    if fmt[-1].islower():  # signed field
        value = value - (1 << bits) if value >= 1 << (bits - 1) else value
    return value


def _edit_field(buf: bytearray, rnd: random.Random) -> str:
    fields = _fields(bytes(buf))
    if not fields:
        return _flip_bits(buf, rnd)
    offset, fmt = rnd.choice(fields)
    size = struct.calcsize(fmt)
    if offset + size > len(buf):
        return _flip_bits(buf, rnd)
    old = struct.unpack_from(fmt.upper() if fmt[-1].islower() else fmt, buf, offset)[0]
    value = _field_value(rnd, fmt, old)
    struct.pack_into(fmt, buf, offset, value)
    return f"field@{offset}{fmt}={value}"


def _flip_bits(buf: bytearray, rnd: random.Random) -> str:
    n = rnd.choice((1, 1, 2, 4, 8, 32))
    head = rnd.random() < 0.5  # half the time aim at the first 256 bytes, where the headers are
    for _ in range(n):
        i = rnd.randrange(min(len(buf), 256) if head else len(buf))
        buf[i] ^= 1 << rnd.randrange(8)
    return f"flip{n}{'@head' if head else ''}"


def _set_bytes(buf: bytearray, rnd: random.Random) -> str:
    i = rnd.randrange(len(buf))
    n = rnd.choice((1, 2, 4, 16, 256))
    value = rnd.choice(INTERESTING_8)
    buf[i : i + n] = bytes([value]) * len(buf[i : i + n])
    return f"set{n}@{i}={value}"


def _truncate(buf: bytearray, rnd: random.Random) -> str:
    mode = rnd.randrange(3)
    if mode == 0:  # inside the headers
        n = rnd.randrange(1, 200)
    elif mode == 1:  # anywhere
        n = rnd.randrange(1, max(2, len(buf)))
    else:  # the last packet cut short
        n = len(buf) - rnd.randrange(1, 64)
    del buf[max(1, n) :]
    return f"truncate@{len(buf)}"


def _magic(buf: bytearray, rnd: random.Random) -> str:
    magic = rnd.choice(MAGICS)
    known = [m.start() for m in re.finditer(rb"RIFF|WAVE|fmt |data|OggS|fLaC|vorbis|ID3", bytes(buf[:65536]))]
    i = rnd.choice(known) if known and rnd.random() < 0.8 else rnd.randrange(len(buf))
    buf[i : i + len(magic)] = magic
    return f"magic@{i}={magic!r}"


def _splice(buf: bytearray, rnd: random.Random, others: list[bytes]) -> str:
    other = rnd.choice(others)
    mode = rnd.randrange(4)
    i, j = sorted((rnd.randrange(len(buf) + 1), rnd.randrange(len(buf) + 1)))
    a, b = sorted((rnd.randrange(len(other) + 1), rnd.randrange(len(other) + 1)))
    if mode == 0:  # head of this file, tail of another
        buf[i:] = other[a:]
    elif mode == 1:  # a piece of another file inserted
        buf[i:i] = other[a:b]
    elif mode == 2:  # a region of this file repeated
        buf[j:j] = buf[i:j] * rnd.choice((1, 2, 8))
    else:  # a region removed
        del buf[i:j]
    if not buf:
        buf += other[:1] or b"\0"
    return f"splice{mode}"


MUTATORS = ("flip", "set", "truncate", "field", "magic", "splice")


def mutate(data: bytes, rnd: random.Random, others: list[bytes] | None = None) -> tuple[bytes, str]:
    """One to three mutations of ``data``; returns the new bytes and a short description."""
    buf = bytearray(data)
    steps = []
    for _ in range(rnd.choice((1, 1, 1, 2, 3))):
        kind = rnd.choice(MUTATORS)
        if kind == "flip":
            steps.append(_flip_bits(buf, rnd))
        elif kind == "set":
            steps.append(_set_bytes(buf, rnd))
        elif kind == "truncate":
            steps.append(_truncate(buf, rnd))
        elif kind == "field":
            steps.append(_edit_field(buf, rnd))
        elif kind == "magic":
            steps.append(_magic(buf, rnd))
        else:
            steps.append(_splice(buf, rnd, others or [data]))
        if not buf:
            buf += b"\0"
    if rnd.random() < 0.5 and b"OggS" in buf[:64]:
        _fix_ogg_crcs(buf)
        steps.append("ogg-crc")
    return bytes(buf), "+".join(steps)


# ---------------------------------------------------------------------------------------------- checking


def check_decode(path: str) -> tuple[str, str]:
    """Run ``probe``, ``stream`` and ``load`` on ``path``: ("ok", summary), ("DecodeError", reason) or
    ("crash", traceback). Audio must be 1-D float32, finite and within [-1, 1]."""
    import numpy as np

    from soundscope import decode

    stage = "probe"
    try:
        info = decode.probe(path)
        assert math.isfinite(info.duration_s) and info.duration_s >= 0, f"probe duration {info.duration_s}"
        assert info.sample_rate >= 0 and info.channels >= 0, (info.sample_rate, info.channels)
        stage = "stream"
        n = 0
        for block in decode.stream(path, block_s=5.0):
            assert block.dtype == np.float32 and block.ndim == 1, (block.dtype, block.shape)
            assert np.isfinite(block).all() and np.abs(block).max(initial=0) <= 1.0, "sample out of range"
            n += block.shape[0]
        stage = "load"
        y = decode.load(path)
        assert y.dtype == np.float32 and y.ndim == 1 and np.isfinite(y).all(), (y.dtype, y.shape)
        return "ok", f"{n} samples"
    except decode.DecodeError as exc:
        reason = str(exc)
        if not reason.strip() or "\n" in reason:
            return "crash", f"{stage}: DecodeError without a one-line reason: {reason!r}"
        return "DecodeError", f"{stage}: {reason}"
    except BaseException:
        return "crash", f"{stage}: {traceback.format_exc(limit=8)}"


def reason_key(reason: str) -> str:
    """A reason with its numbers and quoted parts blanked, to count reasons by kind."""
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'", "'…'", reason))


def _worker(conn) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import soundscope.decode  # noqa: F401  (import once, before the first timed input)

    conn.send("ready")
    while True:
        try:
            path = conn.recv()
        except EOFError:
            return
        kind, detail = check_decode(path)
        conn.send((kind, detail, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024))


class Worker:
    """A decode process with a time bound per input; restarted after a crash or a hang."""

    def __init__(self, timeout: float, max_rss_mb: int) -> None:
        self.timeout = timeout
        self.max_rss_mb = max_rss_mb
        self.ctx = mp.get_context("spawn")
        self.proc = None
        self.conn = None

    def _start(self) -> None:
        parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        if not parent.poll(120) or parent.recv() != "ready":
            raise RuntimeError("decode worker did not start")

    def run(self, path: str) -> tuple[str, str]:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        t0 = time.perf_counter()
        self.conn.send(path)
        try:
            if self.conn.poll(self.timeout):
                kind, detail, rss_mb = self.conn.recv()
                if rss_mb > self.max_rss_mb:  # peak RSS is per process: start afresh for the next input
                    self.stop()
                    return "crash", f"memory: peak RSS {rss_mb} MB > {self.max_rss_mb} MB ({kind}: {detail})"
                return kind, detail
        except (EOFError, ConnectionResetError):
            pass
        if self.proc.is_alive() and time.perf_counter() - t0 >= self.timeout:
            self.stop()
            return "crash", f"hang: no result within {self.timeout:g} s"
        self.proc.join(5)
        code = self.proc.exitcode
        self.stop()
        return "crash", f"worker died (exit code {code}{', signal ' + str(-code) if code and code < 0 else ''})"

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(5)
        self.proc = self.conn = None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=5000, help="stop after this many inputs (default 5000)")
    ap.add_argument("--seconds", type=float, default=0.0, help="stop after this many seconds (0: no time limit)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds one input may take before it is a hang")
    ap.add_argument("--max-rss-mb", type=int, default=1024, help="peak worker memory above which an input crashes")
    ap.add_argument("--save", type=Path, help="folder to copy crashing inputs into")
    args = ap.parse_args(argv)

    rnd = random.Random(args.seed)
    outcomes: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    crashes: list[tuple[str, str, str]] = []
    worker = Worker(args.timeout, args.max_rss_mb)
    t0 = time.perf_counter()
    slowest = (0.0, "")
    with tempfile.TemporaryDirectory(prefix="fuzz-decode-") as tmp:
        seeds = seed_files(tmp)
        names = sorted(seeds)
        pool = [seeds[n] for n in names]
        tried = 0
        try:
            while tried < args.inputs and not (args.seconds and time.perf_counter() - t0 >= args.seconds):
                ext = names[tried % len(names)]
                data, desc = mutate(seeds[ext], rnd, pool)
                path = os.path.join(tmp, f"input.{ext}")
                with open(path, "wb") as f:
                    f.write(data)
                t1 = time.perf_counter()
                kind, detail = worker.run(path)
                slowest = max(slowest, (time.perf_counter() - t1, f"{ext} {desc}"))
                tried += 1
                outcomes[kind] += 1
                if kind == "DecodeError":
                    reasons[reason_key(detail)] += 1
                elif kind == "crash":
                    crashes.append((ext, desc, detail))
                    if args.save:
                        args.save.mkdir(parents=True, exist_ok=True)
                        (args.save / f"crash-{len(crashes):03d}.{ext}").write_bytes(data)
                    print(f"CRASH #{len(crashes)} on {ext} ({desc}):\n{detail}", file=sys.stderr)
                if tried % 500 == 0:
                    print(f"... {tried} inputs, {dict(outcomes)}", file=sys.stderr)
        finally:
            worker.stop()
    elapsed = time.perf_counter() - t0
    print(f"inputs tried: {tried} in {elapsed:.1f} s (seed {args.seed}, {args.timeout:g} s bound per input)")
    print(f"decoded without error: {outcomes['ok']}")
    print(f"DecodeError: {outcomes['DecodeError']}")
    for reason, n in reasons.most_common():
        print(f"  {n:6d}  {reason}")
    print(f"crashes (other exceptions, signals, hangs, bad output): {len(crashes)}")
    for ext, desc, detail in crashes[:20]:
        print(f"  {ext} {desc}: {detail.strip().splitlines()[-1]}")
    print(f"slowest input: {slowest[0]:.2f} s ({slowest[1]})")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
