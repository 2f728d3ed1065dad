"""Language-model commands of the command line (issue 15): ask, caption, and the ``--llm`` switch.

A thin layer over :class:`soundscope.api.Library` (see :mod:`soundscope.llm`, :mod:`soundscope.answers`,
:mod:`soundscope.captions`), added to the parser by :func:`add_commands`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

EXIT_OK, EXIT_FAILURES = 0, 1
NOT_CONFIGURED = "no language model configured: set SOUNDSCOPE_LLM_URL (and SOUNDSCOPE_LLM_MODEL), see the README"


def use_llm(lib, args: argparse.Namespace) -> None:
    """``--llm``: every query goes through the language model. Raises ``ValueError`` when none is configured."""
    if not getattr(args, "llm", False):
        return
    if lib.rewriter is None:
        raise ValueError(NOT_CONFIGURED)
    lib.rewriter.mode = "always"


def print_captions(info: dict[str, Any]) -> None:
    for lang, c in (info.get("captions") or {}).items():
        print(f"  caption ({lang}, {c['model']}): {c['text']}")


def run_captions(lib, args: argparse.Namespace, ids: list[int] | None = None) -> dict[str, Any]:
    if lib.rewriter is None:
        raise ValueError(NOT_CONFIGURED)
    report = lib.caption(ids, force=getattr(args, "force", False))
    if not args.json:
        print(f"captioned {report['captioned']} items with {report['model']}, {len(report['failed'])} failed")
        for f in report["failed"]:
            print(f"  FAILED #{f['id']}: {f['reason']}")
        for item_id, words in report["dropped"].items():
            print(f"  #{item_id}: dropped unsupported {', '.join(words)}")
    return report


def cmd_caption(lib, args) -> int:
    report = run_captions(lib, args, args.ids or None)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
    return EXIT_FAILURES if report["failed"] else EXIT_OK


def cmd_ask(lib, args) -> int:
    out = lib.ask(args.question, passages=args.passages)
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=1))
        return EXIT_OK
    print(out["answer"])
    for c in out["citations"]:
        print(f"  - {c['file']} {c['at']}: “{c['text']}”  ({c['path']})")
    print(f"  (answered by {out['by']})")
    return EXIT_OK


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("ask", parents=[common], help="answer a question from what was said, with citations")
    s.add_argument("question")
    s.add_argument("--passages", type=int, default=6, help="transcript passages the answer may use")
    s.set_defaults(func=cmd_ask)
    s = sub.add_parser("caption", parents=[common], help="write English and Chinese captions (language model)")
    s.add_argument("ids", nargs="*", type=int, help="item ids (default: every item without captions)")
    s.add_argument("--force", action="store_true", help="write them again")
    s.set_defaults(func=cmd_caption)
