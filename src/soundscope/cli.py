"""Command line: a thin layer over :class:`soundscope.api.Library`.

Every command takes ``--data-dir`` (or ``$SOUNDSCOPE_DATA_DIR``) and ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sqlite3
import sys
import time
from collections.abc import Sequence
from typing import Any

from .search import Filters

EXIT_OK, EXIT_FAILURES, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def _configure_threads() -> None:
    """One BLAS/ONNX thread per process: oversubscription on small machines is catastrophic."""
    from .threads import one_thread

    one_thread()


def _mmss(seconds: float) -> str:
    from .describe import format_clock

    return format_clock(seconds)


class ProgressLine:
    """Files done, failures and speed on stderr: redrawn in place on a terminal, every 5 s otherwise."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0

    def __call__(self, p) -> None:  # p: ingest.Progress
        now = time.monotonic()
        final = p.done == p.total
        if not final and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        width = 24
        filled = int(width * p.done / max(p.total, 1))
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {p.done}/{p.total} files, {p.failed} failed, "
            f"{p.audio_s / 60:.1f} min audio at {p.speed_x_realtime:.0f}x real time"
        )
        if getattr(p, "slowest", ""):  # where the time goes, e.g. "slowest: speech recognition 92 %, 0.61 s/file"
            line += f"; slowest: {p.slowest}"
        self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        if final and self.tty:
            self.stream.write("\n")
        self.stream.flush()


def _filters(args: argparse.Namespace) -> Filters | None:
    f = Filters(
        min_duration=args.min_duration,
        max_duration=args.max_duration,
        kind=args.kind,
        path_prefix=args.under,
        label=args.label,
        min_tempo=args.min_tempo,
        max_tempo=args.max_tempo,
    )
    return f if f.to_dict() else None


def _print_results(results: list, as_json: bool) -> None:
    if as_json:
        print(json.dumps([r.to_dict() for r in results], ensure_ascii=False, indent=1))
        return
    if not results:
        print("no results")
        return
    for rank, r in enumerate(results, 1):
        if getattr(r, "weak", False) and (rank == 1 or not results[rank - 2].weak):
            print("no close match; nearest:" if rank == 1 else "weaker matches (below the confidence floor):")
        print(f"{rank:2d}. {r.score:.4f}  {_mmss(r.start)}  {r.path}")
        print(f"      {r.description}")
        for reason in r.why:
            print(f"      - {reason}")


def cmd_index(lib, args) -> int:
    progress = None if args.quiet else ProgressLine()
    from .distributed import RayUnavailableError

    jobs = args.jobs if args.ray else _jobs(args.jobs)  # with Ray, 0 is one actor per CPU of the cluster
    try:
        report = lib.index(
            args.paths, rehash=args.rehash, progress=progress, jobs=jobs, wait=args.wait, ray=args.ray, prune=args.prune
        )
    except RayUnavailableError as exc:
        return _error(args, str(exc))
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=1))
    else:
        print(
            f"indexed {report.indexed}, unchanged {report.unchanged}, removed {report.removed}, "
            f"failed {report.failed} in {report.elapsed_s:.1f} s "
            f"({report.audio_seconds / 60:.1f} min of audio, {report.speed_x_realtime:.0f}x real time)"
        )
        for f in report.failures:
            print(f"  FAILED {f.path}: {f.reason}")
        for root, n in report.kept.items():
            print(f"  KEPT {n} items under {root}: it holds no audio files now (an unmounted drive?); "
                  f"`soundscope index --prune {shlex.quote(root)}` removes them")  # fmt: skip
    if args.captions:
        from .cli_llm import run_captions

        run_captions(lib, args)
    return EXIT_FAILURES if report.failed else EXIT_OK


def _jobs(value: int) -> int:
    """0 means one worker per core (at most 4)."""
    return value if value > 0 else min(os.cpu_count() or 1, 4)


def cmd_search(lib, args) -> int:
    results = lib.search(args.query, limit=args.limit, filters=_filters(args), user=args.user)
    if not args.explain:
        _print_results(results, args.json)
        return EXIT_OK
    parsed = lib.parse(args.query)
    if args.json:
        print(
            json.dumps(
                {"query": parsed.explain(), "results": [r.to_dict() for r in results]}, ensure_ascii=False, indent=1
            )
        )
        return EXIT_OK
    print("understood as:")
    for line in parsed.describe():
        print(f"  {line}")
    print()
    _print_results(results, False)
    return EXIT_OK


def cmd_similar(lib, args) -> int:
    results = lib.similar(args.target, limit=args.limit, filters=_filters(args), include_self=args.include_self)
    _print_results(results, args.json)
    return EXIT_OK


def cmd_show(lib, args) -> int:
    info = lib.show(args.id)
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=1))
        return EXIT_OK
    print(f"#{info['id']}  {info['path']}")
    print(f"  {info['description']}")
    print(
        f"  kind {info['kind']}, {info['duration_s']:.2f} s, {info['sample_rate']} Hz, {info['channels']} ch, "
        f"{info['codec']}"
    )
    for key, value in info["tags"].items():
        print(f"  {key}: {value}")
    for space, labels in info["labels"].items():
        print(f"  {space}: " + ", ".join(f"{n} {p:.2f}" for n, p in labels))
    f = info["features"]
    print(f"  loudness {f.get('loudness_dbfs')} dBFS, centroid {f.get('centroid_hz')} Hz, zcr {f.get('zcr')}")
    from .cli_llm import print_captions

    print_captions(info)
    for seg in info["segments"][:20]:
        print(f"  {_mmss(seg['start'])}-{_mmss(seg['end'])}  {', '.join(seg['labels'])}")
    if len(info["segments"]) > 20:
        print(f"  ... {len(info['segments']) - 20} more segments")
    return EXIT_OK


def cmd_transcript(lib, args) -> int:
    passages = lib.transcript(args.id)
    if args.json:
        print(json.dumps(passages, ensure_ascii=False, indent=1))
    elif not passages:
        print("no transcript (no speech found, or indexed with --asr-model none)")
    for p in [] if args.json else passages:
        print(f"[{_mmss(p['start'])} - {_mmss(p['end'])}] {p['text']}")
    return EXIT_OK


def cmd_stats(lib, args) -> int:
    s = lib.stats()
    if args.json:
        print(json.dumps(s, ensure_ascii=False, indent=1))
    else:
        for key, value in s.items():
            print(f"{key}: {value}")
    return EXIT_OK


def cmd_check(lib, args) -> int:
    from .check import check

    report = check(lib.store, repair=args.repair or args.prune, prune=args.prune)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=1))
    else:
        for c in report.checks:
            print(f"{'repaired' if c.repaired else 'ok' if c.ok else 'PROBLEM':8s}  {c.name}: {c.detail}")
        problems = len(report.problems)
        fixed = sum(c.repaired for c in report.checks)
        if problems:
            left = "1 problem remains" if problems == 1 else f"{problems} problems remain"
            hint = "" if report.repair else " (soundscope check --repair fixes what can be rebuilt)"
            print(f"{lib.data_dir}: {left}{hint}")
        else:
            print(f"{lib.data_dir}: ok" + (f", {fixed} repaired" if fixed else ""))
    return EXIT_OK if report.ok else EXIT_FAILURES


def cmd_failures(lib, args) -> int:
    rows = lib.failures()
    if args.json:
        print(json.dumps([{"path": p, "reason": r} for p, r in rows], ensure_ascii=False, indent=1))
    else:
        for p, r in rows:
            print(f"{p}: {r}")
    return EXIT_OK


DEMO_QUERIES = [
    "dog barking",
    "rain",
    "piano music",
    "狗叫",
    "someone speaking",
    "下雨的声音",
    "stew for dinner",
    "没有人声的钢琴曲",
]


def cmd_demo(lib, args) -> int:
    """Index the bundled demo corpus and answer a few example queries."""
    from .bench import demo_corpus

    corpus = demo_corpus()
    print(f"indexing the demo corpus {corpus} into {lib.data_dir}", file=sys.stderr)
    report = lib.index([str(corpus)], progress=None if args.quiet else ProgressLine())
    summary = report.to_dict()
    answers: dict[str, list] = {}
    for query in DEMO_QUERIES:
        answers[query] = lib.search(query, limit=args.limit)
    example = corpus / "sounds" / "rain" / "1-17367-A.ogg"
    answers[f"similar to {example.name}"] = lib.similar(str(example), limit=args.limit)
    if args.json:
        print(
            json.dumps(
                {"index": summary, "answers": {q: [r.to_dict() for r in rs] for q, rs in answers.items()}},
                ensure_ascii=False,
                indent=1,
            )
        )
        return EXIT_OK if not report.failed else EXIT_FAILURES
    print(f"indexed {report.indexed}, unchanged {report.unchanged}, failed {report.failed}")
    for query, results in answers.items():
        print(f"\n>>> {query}")
        for rank, r in enumerate(results, 1):
            rel = os.path.relpath(r.path, corpus)
            print(f"  {rank}. {r.score:.3f}  {_mmss(r.start)}  {rel:48s}  {r.description}")
    return EXIT_OK if not report.failed else EXIT_FAILURES


def cmd_serve(lib, args) -> int:
    from . import server

    server.serve(
        lib,
        host=args.host,
        port=args.port,
        token=args.token,
        allow_roots=args.allow_root,
        max_upload_mb=args.max_upload_mb,
        workers=args.workers,
        read_token=args.read_token,
    )
    return EXIT_OK


def cmd_eval(lib, args) -> int:
    from . import evaluate

    return evaluate.main(args)


def cmd_bench(lib, args) -> int:
    from . import bench

    return bench.main(args)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", default=None, help="data directory (default: $SOUNDSCOPE_DATA_DIR or the user data dir)"
    )
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    common.add_argument(
        "--llm", action="store_true", help="read every query with the language model at $SOUNDSCOPE_LLM_URL"
    )
    common.add_argument(
        "--store",
        default=None,
        metavar="URI",
        help="vector indexes on Milvus: milvus://host:19530[?token=...] (default: $SOUNDSCOPE_STORE, or embedded)",
    )
    common.add_argument(
        "--asr-model",
        default=None,
        help="speech recogniser: tiny.en (default), base "
        "(multilingual), a CTranslate2 folder, or none ($SOUNDSCOPE_ASR_MODEL)",
    )
    filt = argparse.ArgumentParser(add_help=False)
    filt.add_argument("--limit", "-n", type=int, default=10)
    filt.add_argument("--min-duration", type=float, help="seconds")
    filt.add_argument("--max-duration", type=float, help="seconds")
    filt.add_argument("--kind", choices=["music", "speech", "sound"])
    filt.add_argument("--under", metavar="PATH", help="only files under this folder")
    filt.add_argument("--label", help="only items carrying this model label (e.g. Dog)")
    filt.add_argument("--min-tempo", type=float, help="BPM (only music has a measured tempo)")
    filt.add_argument("--max-tempo", type=float, help="BPM")

    p = argparse.ArgumentParser(prog="soundscope", description="Search audio by what it sounds like, means and says.")
    p.add_argument("--version", action="version", version=f"soundscope {__import__('soundscope').__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("index", parents=[common], help="index folders or files (recursive, incremental)")
    s.add_argument("paths", nargs="+")
    s.add_argument("--rehash", action="store_true", help="hash every file even if size and mtime are unchanged")
    s.add_argument(
        "--prune",
        action="store_true",
        help="also remove the items of a folder that holds no audio files now (kept by default: an unmounted drive)",
    )
    s.add_argument("--jobs", "-j", type=int, default=0, help="analysis worker processes (default 0: one per core)")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress line")
    s.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="analyse on Ray actors, one per --jobs (default: per CPU): on a Ray started here, or on the cluster "
        "at ADDRESS, whose nodes must read the files at the same paths (pip install 'soundscope[ray]')",
    )
    s.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="wait this long for another index run to finish"
    )
    s.add_argument("--captions", action="store_true", help="then caption new items (language model)")
    s.set_defaults(func=cmd_index)
    s = sub.add_parser("search", parents=[common, filt], help="search by text (Chinese or English)")
    s.add_argument("query")
    s.add_argument("--explain", action="store_true", help="show how the query was understood")
    s.add_argument("--user", default=None, help="personalise for this listener (default: off)")
    s.set_defaults(func=cmd_search)
    from .cli_recommend import add_commands

    add_commands(sub, common, filt)
    from .cli_llm import add_commands as add_llm_commands

    add_llm_commands(sub, common)
    s = sub.add_parser("similar", parents=[common, filt], help="query by example: a file path or an item id")
    s.add_argument("target")
    s.add_argument("--include-self", action="store_true", help="keep the query item itself in the results")
    s.set_defaults(func=cmd_similar)
    s = sub.add_parser("show", parents=[common], help="everything stored about one item")
    s.add_argument("id", type=int)
    s.set_defaults(func=cmd_show)
    s = sub.add_parser("transcript", parents=[common], help="a file's transcript with times")
    s.add_argument("id", type=int)
    s.set_defaults(func=cmd_transcript)
    s = sub.add_parser("stats", parents=[common], help="what the index holds")
    s.set_defaults(func=cmd_stats)
    s = sub.add_parser("failures", parents=[common], help="files that could not be indexed, with reasons")
    s.set_defaults(func=cmd_failures)
    s = sub.add_parser("check", parents=[common], help="verify the library; --repair rebuilds what can be rebuilt")
    s.add_argument("--repair", action="store_true", help="fix orphans, full-text and vector indexes")
    s.add_argument("--prune", action="store_true", help="also drop items whose file is gone (implies --repair)")
    s.set_defaults(func=cmd_check)
    s = sub.add_parser("serve", parents=[common], help="web page and HTTP API over the data directory")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument(
        "--token",
        default=os.environ.get("SOUNDSCOPE_TOKEN"),
        help="required for index changes; generated if --host is not loopback",
    )
    s.add_argument(
        "--allow-root",
        action="append",
        metavar="DIR",
        help="folders the page may index (default: the roots already indexed)",
    )
    s.add_argument("--max-upload-mb", type=int, default=20)
    s.add_argument("--workers", type=int, default=1, help="server processes answering reads (>1: no page indexing)")
    s.add_argument(
        "--read-token",
        default=os.environ.get("SOUNDSCOPE_READ_TOKEN"),
        help="require this token for reads too (for a server reachable beyond loopback; $SOUNDSCOPE_READ_TOKEN)",
    )
    s.set_defaults(func=cmd_serve)
    s = sub.add_parser("demo", parents=[common], help="index the bundled demo corpus and answer example queries")
    s.add_argument("--limit", "-n", type=int, default=3)
    s.add_argument("--quiet", "-q", action="store_true", help="no progress line")
    s.set_defaults(func=cmd_demo)
    s = sub.add_parser("eval", parents=[common], help="retrieval quality on labelled audio (ESC-10)")
    s.add_argument("--esc10", default=None, help="ESC-10 folder (default: ../shared/data/esc10 if present)")
    s.add_argument("--out", help="also write the JSON report here")
    s.add_argument("--max-per-class", type=int, default=None, help="subsample ESC-10 for a quick run")
    sections = ["all", "esc10", "sfx", "mixed", "tempo", "music", "speech", "queries", "long", "llm", "identify"]
    sections += ["recommend", "denoise"]
    s.add_argument("--section", choices=sections, default="all")
    s.add_argument("--minutes", type=float, default=60.0, help="length of the --section long recording")
    s.add_argument("--max-prompts", type=int, default=None, help="evaluate speech on an even subset of prompts")
    s.add_argument("--jobs", "-j", type=int, default=2, help="indexing worker processes")
    s.add_argument("--bench", default=None, help="--section identify: folder from scripts/build_identify_bench.py")
    s.set_defaults(func=cmd_eval)
    s = sub.add_parser("bench", parents=[common], help="indexing speed and query latency")
    s.add_argument("paths", nargs="*", help="audio folders (default: the bundled demo corpus)")
    s.add_argument("--queries", type=int, default=200)
    s.add_argument("--out", help="also write the JSON report here")
    s.add_argument("--scale", type=int, metavar="N", help="benchmark a synthetic library of N items instead")
    s.add_argument("--from", dest="source", metavar="DIR", help="with --scale: grow it from this library's analyses")
    s.add_argument("--work", metavar="DIR", help="with --scale: build under this folder (default: the temp dir)")
    s.add_argument("--reuse", metavar="LIBRARY", help="with --scale: measure the library an earlier --scale run built")
    s.set_defaults(func=cmd_bench)
    from .cli_identify import add_commands as add_fingerprint_commands

    add_fingerprint_commands(sub, common)
    return p


READ_ONLY = {"search", "similar", "show", "transcript", "stats", "failures", "serve", "check"}  # never create a library
READ_ONLY |= {"feedback", "recommend", "radio", "profile", "forget"}  # listeners need a library to exist
READ_ONLY |= {"ask", "caption"}
READ_ONLY |= {"identify", "duplicates"}
NO_LIBRARY = {"eval", "bench"}  # they build their own, in temporary or named work folders


def _error(args: argparse.Namespace, msg: str) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": msg}, ensure_ascii=False))
    print(f"soundscope: error: {msg}", file=sys.stderr)
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    _configure_threads()
    args = build_parser().parse_args(argv)
    from .api import Library
    from .store import IncompatibleIndexError, NoLibraryError
    from .store.errors import storage_error
    from .store.lock import IndexLockedError

    lib = None  # eval and bench open none: it would leave an empty library in the user's data dir
    if args.command not in NO_LIBRARY:
        try:
            lib = Library(
                args.data_dir, asr_model=args.asr_model, create=args.command not in READ_ONLY, vector_store=args.store
            )
        except (NoLibraryError, IncompatibleIndexError) as exc:
            return _error(args, str(exc))
    try:
        from .cli_llm import use_llm

        if lib is not None:
            use_llm(lib, args)
        return int(args.func(lib, args))
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume (finished files are kept)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (IncompatibleIndexError, IndexLockedError, KeyError, ValueError, FileNotFoundError) as exc:
        return _error(args, exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc))
    except (sqlite3.OperationalError, OSError) as exc:  # a full or read-only data directory: one clear line
        if lib is None or (storage := storage_error(exc, lib.data_dir)) is None:
            raise
        return _error(args, str(storage))
    finally:
        if lib is not None:
            lib.close()


def _run() -> Any:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _run()
