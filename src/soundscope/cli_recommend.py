"""Listener commands of the command line (issue 14): feedback, recommend, radio, profile, forget.

A thin layer over :class:`soundscope.api.Library`, added to the parser by :func:`add_commands`.
"""

from __future__ import annotations

import argparse
import json

from .recommend import default_user

EXIT_OK = 0


def _user(args: argparse.Namespace) -> str:
    return args.user or default_user()


def cmd_feedback(lib, args) -> int:
    event = lib.feedback(args.kind, args.id, user=_user(args), seconds=args.seconds or 0.0, query=args.query or "")
    if args.json:
        print(json.dumps(event, ensure_ascii=False))
    else:
        extra = f" ({args.seconds:g} s)" if args.kind == "play" and args.seconds else ""
        print(f"{event['user']}: {args.kind} #{event['item_id']}{extra} recorded")
    return EXIT_OK


def cmd_recommend(lib, args) -> int:
    from .cli import _filters, _print_results

    results = lib.recommend(
        args.query, user=_user(args), limit=args.limit, filters=_filters(args), explore=args.explore,
        language=args.lang,
    )  # fmt: skip
    _print_results(results, args.json)
    return EXIT_OK


def cmd_radio(lib, args) -> int:
    from .cli import _print_results

    _print_results(lib.radio(args.id, user=_user(args), limit=args.limit, language=args.lang or "en"), args.json)
    return EXIT_OK


def cmd_profile(lib, args) -> int:
    info = lib.profile(args.name or default_user(), language=args.lang or "en")
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=1))
    else:
        print("\n".join(info["summary"]))
    return EXIT_OK


def cmd_forget(lib, args) -> int:
    n = lib.forget(args.name, item=args.item)
    if args.json:
        print(json.dumps({"user": args.name, "deleted_events": n}))
    else:
        print(f"{args.name}: {n} events deleted")
    return EXIT_OK


def add_commands(sub, common: argparse.ArgumentParser, filt: argparse.ArgumentParser) -> None:
    """The listener subcommands, on the main parser's ``sub``."""
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--user", "-u", default=None, help="listener name (default: the OS user, or $SOUNDSCOPE_USER)")
    lang = argparse.ArgumentParser(add_help=False)
    lang.add_argument("--lang", choices=["en", "zh"], default=None, help="language of the explanations")
    s = sub.add_parser("feedback", parents=[common, who], help="record a like, dislike, play or skip")
    s.add_argument("kind", choices=["like", "dislike", "play", "skip"])
    s.add_argument("id", help="item id, or the path of an indexed file")
    s.add_argument("--seconds", type=float, default=None, help="with play: seconds listened")
    s.add_argument("--query", default=None, help="the query the item came from")
    s.set_defaults(func=cmd_feedback)
    s = sub.add_parser("recommend", parents=[common, filt, who, lang], help="recommendations for a listener, explained")
    s.add_argument("query", nargs="?", default=None, help="optional: what to recommend, e.g. 给我推荐一首慢歌")
    s.add_argument("--explore", type=float, default=None, help="share of the list spent on exploration (0.1)")
    s.set_defaults(func=cmd_recommend)
    s = sub.add_parser("radio", parents=[common, who, lang], help="a sequence from an item that drifts with taste")
    s.add_argument("id", help="the first track: item id, or the path of an indexed file")
    s.add_argument("--limit", "-n", type=int, default=10)
    s.set_defaults(func=cmd_radio)
    s = sub.add_parser("profile", parents=[common, lang], help="what the engine believes a listener likes")
    s.add_argument("name", nargs="?", default=None, help="listener (default: the OS user)")
    s.set_defaults(func=cmd_profile)
    s = sub.add_parser("forget", parents=[common], help="delete a listener's events")
    s.add_argument("name")
    s.add_argument("--item", default=None, help="only the events about this item (id or indexed path)")
    s.set_defaults(func=cmd_forget)
