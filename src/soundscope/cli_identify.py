"""Command line for fingerprints: ``soundscope identify CLIP|-`` and ``soundscope duplicates``
(a thin layer over :meth:`soundscope.api.Library.identify` / ``identify_stream`` / ``duplicates``)."""

from __future__ import annotations

import argparse
import json
import sys

EXIT_OK, EXIT_NO_MATCH, EXIT_ERROR = 0, 1, 2


def cmd_identify(lib, args) -> int:
    from .decode import DecodeError

    try:
        if args.clip == "-" or args.live:
            return _identify_live(lib, args)
        matches = lib.identify(args.clip, limit=args.limit)
    except DecodeError as exc:
        print(f"soundscope: error: {args.clip}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps({"clip": args.clip, "matches": matches}, ensure_ascii=False))
    elif not matches:
        print("no match")
    else:
        for m in matches:
            speed = f"  speed {100 * (m['speed'] - 1):+.1f}%" if abs(m["speed"] - 1) > 0.002 else ""
            checked = "  (checked against the recording's audio)" if m.get("verified_z") is not None else ""
            if m.get("via") == "sketch":
                checked = "  (found by its sketch, checked against the recording's audio)"
            print(f"{m['path']}  at {m['offset']}  confidence {m['confidence']:.2f}{speed}{checked}")
    return EXIT_OK if matches else EXIT_NO_MATCH


def _identify_live(lib, args) -> int:
    """Read stdin (``-``) or a device / URL FFmpeg opens, print matches as they become confident."""
    source = sys.stdin.buffer if args.clip == "-" else args.clip
    found = 0
    for event in lib.identify_stream(source, min_confidence=args.min_confidence):
        found += 1
        if args.json:
            print(json.dumps(event, ensure_ascii=False), flush=True)
        else:
            print(f"[{event['at_s']:6.1f}s heard] {event['path']}  now at {event['offset']}  "
                  f"confidence {event['confidence']:.2f}", flush=True)  # fmt: skip
    if not found and not args.json:
        print("no match")
    return EXIT_OK if found else EXIT_NO_MATCH


def cmd_duplicates(lib, args) -> int:
    groups = lib.duplicates()
    if args.json:
        print(json.dumps({"groups": groups}, ensure_ascii=False))
        return EXIT_OK
    if not groups:
        print("no duplicates")
    for k, g in enumerate(groups, 1):
        print(f"group {k}:")
        for m in g["items"]:
            if m["relation"] == "reference":
                print(f"  {m['path']}  ({m['duration_s']:.1f} s)")
                continue
            where = f" at {m['offset']}" if m["relation"] in ("excerpt", "speed-changed") else ""
            speed = f" ({100 * (m['speed'] - 1):+.1f}%)" if m["relation"] == "speed-changed" else ""
            print(f"    {m['relation']}{speed}{where}: {m['path']}  ({m['duration_s']:.1f} s)")
    return EXIT_OK


def add_commands(sub, common: argparse.ArgumentParser) -> None:
    """Register ``identify`` and ``duplicates`` on the main parser's subcommands."""
    s = sub.add_parser("identify", parents=[common], help="which indexed recording a clip comes from, and where")
    s.add_argument("clip", help="an audio file, or - to read a live stream from stdin")
    s.add_argument("--live", action="store_true", help="treat CLIP as a stream (device or URL FFmpeg opens)")
    s.add_argument("--limit", "-n", type=int, default=1, help="matches to show")
    s.add_argument("--min-confidence", type=float, default=0.9, help="live input: report matches this confident")
    s.set_defaults(func=cmd_identify)
    s = sub.add_parser("duplicates", parents=[common], help="groups of items that hold the same recording")
    s.set_defaults(func=cmd_duplicates)
