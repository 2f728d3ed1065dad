"""The optional language-model stage: one client for OpenAI-compatible chat endpoints, and query rewriting.

Nothing here runs, and no network call is made, unless a model is configured:

* ``SOUNDSCOPE_LLM_URL``: the server (``http://127.0.0.1:8080`` for llama.cpp's ``llama-server``,
  ``http://127.0.0.1:11434/v1`` for Ollama, ``https://api.openai.com/v1``, or the full
  ``.../chat/completions`` address);
* ``SOUNDSCOPE_LLM_MODEL``: the model name the server expects (llama.cpp ignores it);
* ``SOUNDSCOPE_LLM_KEY``: an API key, sent as ``Authorization: Bearer``;
* ``SOUNDSCOPE_LLM_TIMEOUT``: seconds per call (default :data:`DEFAULT_TIMEOUT_S`).

Every answer is asked for as JSON under a JSON schema (``response_format: json_schema``, which
llama.cpp, vLLM, LM Studio, Ollama and OpenAI turn into constrained decoding; a server that refuses
it is asked again with ``json_object``, then with the schema in the prompt only) and is validated
here whatever the server claims. Any failure (server down, slow, HTTP error, junk, a schema
violation) raises :class:`LLMError`, and every caller falls back to the rules. Answers are cached on
disk under ``text.cache_dir()/llm``, keyed by server, model and the whole request.

Query rewriting (:class:`QueryRewriter`): the rules (:mod:`soundscope.query`) parse first; when they
leave words they do not know (:func:`leftovers`), or always in ``mode="always"`` (``--llm``), the model
reads the query into the same fields, and :func:`merge` combines the two: rules win on what they
parse with certainty (numbers, quotes, vocabulary terms, exclusions), the model fills the rest. The
result is a :class:`RewrittenQuery` that says which field came from where.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from . import query as _query
from .query import ParsedQuery

T = TypeVar("T")

ENV_URL, ENV_MODEL, ENV_KEY, ENV_TIMEOUT = (
    "SOUNDSCOPE_LLM_URL",
    "SOUNDSCOPE_LLM_MODEL",
    "SOUNDSCOPE_LLM_KEY",
    "SOUNDSCOPE_LLM_TIMEOUT",
)
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MODEL = "default"
MAX_RESPONSE_BYTES = 1 << 20  # a chat answer, not a download
FORMATS = ("json_schema", "json_object", "prompt")  # how the answer's shape is asked for, strictest first


class LLMError(RuntimeError):
    """The language model could not give a usable answer (the reason is the message)."""


@dataclass(frozen=True)
class LLMConfig:
    url: str  # the chat-completions address
    model: str = DEFAULT_MODEL
    key: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> LLMConfig | None:
        """The configuration in ``env`` (default ``os.environ``); None when ``SOUNDSCOPE_LLM_URL`` is unset."""
        env = os.environ if env is None else env
        url = (env.get(ENV_URL) or "").strip()
        if not url:
            return None
        try:
            timeout = float(env.get(ENV_TIMEOUT) or DEFAULT_TIMEOUT_S)
        except ValueError:
            timeout = DEFAULT_TIMEOUT_S
        return cls(chat_url(url), (env.get(ENV_MODEL) or DEFAULT_MODEL).strip(), env.get(ENV_KEY) or None, timeout)


def chat_url(url: str) -> str:
    """The chat-completions address for a server address: ``http://h:8080`` -> ``http://h:8080/v1/chat/completions``,
    ``.../v1`` -> ``.../v1/chat/completions``; a full address is kept."""
    u = url.strip().rstrip("/")
    if not re.match(r"^https?://", u):
        raise ValueError(f"{ENV_URL} must be an http(s) address, not {url!r}")
    if u.endswith("/chat/completions"):
        return u
    if re.search(r"/v\d+$", u):
        return u + "/chat/completions"
    return u + "/v1/chat/completions"


@dataclass
class Call:
    """One request to the model: how long it took, whether the cache answered, how it ended."""

    task: str
    seconds: float
    cached: bool
    ok: bool
    error: str = ""


class LLMClient:
    """Chat completions with JSON-schema constrained, validated, cached answers (see the module docstring).

    Thread-safe: the server's page and the CLI may share one client. ``calls`` keeps the last calls'
    latencies for the evaluation and ``--explain``."""

    def __init__(self, config: LLMConfig, *, cache_dir: str | os.PathLike[str] | None = None, cache: bool = True):
        self.config = config
        if cache_dir is None and cache:
            from .text import cache_dir as _cache_dir

            cache_dir = _cache_dir() / "llm"
        self.cache_dir = Path(cache_dir) if cache and cache_dir is not None else None
        self.calls: list[Call] = []
        self._format = 0  # index into FORMATS: the strictest form this server accepted
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return self.config.model

    # -- the cache ------------------------------------------------------------------------------
    def _key(self, body: dict[str, Any]) -> str:
        blob = json.dumps([self.config.url, self.config.model, body], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _cache_get(self, key: str) -> Any:
        if self.cache_dir is None:
            return None
        try:
            return json.loads((self.cache_dir / key[:2] / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _cache_put(self, key: str, value: Any) -> None:
        if self.cache_dir is None:
            return
        folder = self.cache_dir / key[:2]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
            tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
            tmp.replace(folder / f"{key}.json")  # atomic: a reader sees all of it or none
        except OSError:
            pass  # a cache that cannot be written is only slower

    # -- one call -------------------------------------------------------------------------------
    def chat_json(
        self,
        messages: list[dict[str, str]],
        schema: dict[str, Any],
        validate: Callable[[Any], T],
        *,
        task: str = "chat",
        max_tokens: int = 256,
    ) -> T:
        """The model's answer to ``messages`` as JSON matching ``schema``, passed through ``validate``
        (which raises :class:`LLMError` or ``ValueError`` on a bad answer). Cached: the same request
        to the same server and model is answered from disk. Raises :class:`LLMError` on any failure."""
        request = {"messages": messages, "schema": schema, "max_tokens": max_tokens}
        key = self._key(request)
        t0 = time.perf_counter()
        hit = self._cache_get(key)
        if hit is not None:
            try:
                out = validate(hit)
            except (LLMError, ValueError, TypeError, KeyError):
                pass  # a stale or foreign entry: ask again
            else:
                self._record(Call(task, time.perf_counter() - t0, True, True))
                return out
        try:
            raw = self._ask(messages, schema, max_tokens)
            try:
                out = validate(raw)
            except (ValueError, TypeError, KeyError) as exc:
                raise LLMError(f"answer does not fit the schema: {exc}") from None
        except LLMError as exc:
            self._record(Call(task, time.perf_counter() - t0, False, False, str(exc)))
            raise
        self._cache_put(key, raw)
        self._record(Call(task, time.perf_counter() - t0, False, True))
        return out

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)
            del self.calls[:-1000]

    def _ask(self, messages: list[dict[str, str]], schema: dict[str, Any], max_tokens: int) -> Any:
        """POST the request, stepping down :data:`FORMATS` when the server rejects a response format."""
        last = ""
        for level in range(self._format, len(FORMATS)):
            body: dict[str, Any] = {
                "model": self.config.model,
                "messages": _with_schema_hint(messages, schema) if FORMATS[level] != "json_schema" else messages,
                "temperature": 0,
                "max_tokens": max_tokens,
                "stream": False,
            }
            if FORMATS[level] == "json_schema":
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "strict": True, "schema": schema},
                }
            elif FORMATS[level] == "json_object":
                body["response_format"] = {"type": "json_object"}
            try:
                reply = self._post(body)
            except _FormatRejected as exc:
                last = str(exc)
                continue
            self._format = level
            return parse_json_content(reply)
        raise LLMError(f"server rejected every response format ({last})")

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.config.key:
            headers["Authorization"] = f"Bearer {self.config.key}"
        req = urllib.request.Request(self.config.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.config.timeout_s) as resp:
                payload = resp.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            detail = _read_error(exc)
            if exc.code in (400, 422) and "response_format" in json.dumps(body) and _about_format(detail):
                raise _FormatRejected(f"HTTP {exc.code}: {detail}") from None
            raise LLMError(f"HTTP {exc.code} from {self.config.url}: {detail}") from None
        except (TimeoutError, OSError) as exc:  # URLError, refused, reset, socket timeout
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                raise LLMError(f"no answer within {self.config.timeout_s:g} s from {self.config.url}") from None
            raise LLMError(f"cannot reach {self.config.url}: {reason}") from None
        if len(payload) > MAX_RESPONSE_BYTES:
            raise LLMError("answer too large")
        try:
            reply = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise LLMError(f"not JSON from {self.config.url}: {payload[:80]!r}") from None
        if not isinstance(reply, dict):
            raise LLMError("not a chat completion")
        return reply


class _FormatRejected(Exception):
    pass


def _read_error(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read(2000).decode("utf-8", "replace").strip()[:300]
    except OSError:
        return ""


def _about_format(detail: str) -> bool:
    d = detail.lower()
    return any(w in d for w in ("response_format", "json_schema", "schema", "grammar", "format"))


def _with_schema_hint(messages: list[dict[str, str]], schema: dict[str, Any]) -> list[dict[str, str]]:
    """The messages with the schema spelled out in the system prompt (servers without constrained output)."""
    hint = "Answer with one JSON object only, matching this JSON schema:\n" + json.dumps(schema, ensure_ascii=False)
    out = [dict(m) for m in messages]
    if out and out[0]["role"] == "system":
        out[0]["content"] = out[0]["content"] + "\n\n" + hint
    else:
        out.insert(0, {"role": "system", "content": hint})
    return out


def parse_json_content(reply: dict[str, Any]) -> Any:
    """The JSON object in a chat completion's first message (code fences and text around it tolerated)."""
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise LLMError("not a chat completion (no choices[0].message.content)") from None
    if not isinstance(content, str):
        raise LLMError("empty answer")
    text = content.strip()
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", text)
    try:
        return json.loads(text)
    except ValueError:
        pass
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            return json.loads(text[start : end + 1])
        except ValueError:
            pass
    if start >= 0 and reply["choices"][0].get("finish_reason") == "length":  # cut off before its last braces
        for tail in ("}", "]}", '"}', '"]}'):
            try:
                return json.loads(text[start:].rstrip().rstrip(",") + tail)
            except ValueError:
                continue
    raise LLMError(f"answer is not JSON: {text[:80]!r}")


def from_env(*, cache: bool = True) -> LLMClient | None:
    """A client for the configured model, or None (and nothing else happens) when none is configured."""
    config = LLMConfig.from_env()
    return LLMClient(config, cache=cache) if config else None


# --------------------------------------------------------------------------------------------------
# validation helpers (hand-written: the answers need normalising, not only checking, and jsonschema
# is not a dependency of the core package)


def _obj(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected an object, got {type(value).__name__}")
    return value


def _enum(value: Any, allowed: tuple[str, ...], name: str) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none", "n/a")):
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected a string or null")
    v = value.strip().lower()
    if v not in allowed:
        raise ValueError(f"{name}: {value!r} is not one of {allowed}")
    return v


def _number(value: Any, name: str, lo: float, hi: float) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: expected a number or null")
    v = float(value)
    if v != v or v <= 0:  # NaN, 0 or negative: no bound
        return None
    if not lo <= v <= hi:
        raise ValueError(f"{name}: {v:g} is outside {lo:g}-{hi:g}")
    return v


def _text(value: Any, name: str, max_chars: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected a string or null")
    v = re.sub(r"\s+", " ", value).strip()
    if v.lower() in ("", "null", "none", "n/a"):
        return None
    return v[:max_chars]


def _strings(value: Any, name: str, max_items: int, max_chars: int) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"{name}: expected a list of strings")
    out: list[str] = []
    for v in value:
        s = _text(v, name, max_chars)
        if s and s.lower() not in (o.lower() for o in out):
            out.append(s)
    return out[:max_items]


# --------------------------------------------------------------------------------------------------
# query rewriting

_STR = {"type": "string", "maxLength": 40}
QUERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sounds": {"type": "array", "items": _STR, "maxItems": 5},
        "exclude": {"type": "array", "items": _STR, "maxItems": 4},
        "kind": {"enum": ["music", "speech", "sound", None]},
        "tempo": {"enum": ["slow", "fast", None]},
        "min_bpm": {"type": ["number", "null"]},
        "max_bpm": {"type": ["number", "null"]},
        "duration": {"enum": ["short", "long", None]},
        "min_seconds": {"type": ["number", "null"]},
        "max_seconds": {"type": ["number", "null"]},
        "loudness": {"enum": ["quiet", "loud", None]},
        "vocals": {"enum": ["none", "any", "female", "male", None]},
        "spoken": {"type": ["string", "null"], "maxLength": 80},
    },
    "required": [
        "sounds",
        "exclude",
        "kind",
        "tempo",
        "min_bpm",
        "max_bpm",
        "duration",
        "min_seconds",
        "max_seconds",
        "loudness",
        "vocals",
        "spoken",
    ],
    "additionalProperties": False,
}

QUERY_SYSTEM = """You turn a search request for an audio library (English or Chinese) into JSON fields.
sounds: what should be heard, as short English names of sounds, instruments, genres or moods
(e.g. "rain", "piano", "jazz", "calm").
exclude: English names of what must NOT be heard ("no drums" -> ["drums"]). Do not list vocals or speech here.
kind: "music", "speech" (talk, podcast, meeting, lecture), "sound" (effects, nature) or null.
tempo: "slow" or "fast" or null; min_bpm/max_bpm only when beats per minute are given.
duration: "short" or "long" when asked in words; min_seconds/max_seconds when a length is given in numbers.
loudness: "quiet" or "loud" or null. vocals: "none" (instrumental, no singing), "any", "female", "male" or null.
spoken: words someone says in the recording, when the request is about what is said; else null.
Use null or [] for anything the request does not ask for."""

QUERY_EXAMPLES: list[tuple[str, dict[str, Any]]] = [
    (
        "calm piano without drums, under 2 minutes",
        {"sounds": ["piano", "calm"], "exclude": ["drums"], "kind": "music", "max_seconds": 120, "loudness": "quiet"},
    ),
    (
        "找一段有人说到下周开会的录音",
        {"sounds": ["speech"], "kind": "speech", "spoken": "下周开会"},
    ),
]


def _example_answer(partial: dict[str, Any]) -> str:
    full = {k: ([] if QUERY_SCHEMA["properties"][k].get("type") == "array" else None) for k in QUERY_SCHEMA["required"]}
    return json.dumps({**full, **partial}, ensure_ascii=False)


def query_messages(text: str) -> list[dict[str, str]]:
    """The chat for reading one query: instructions, two worked examples, the query."""
    msgs = [{"role": "system", "content": QUERY_SYSTEM}]
    for q, a in QUERY_EXAMPLES:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": _example_answer(a)}]
    msgs.append({"role": "user", "content": text[: _query.MAX_QUERY_CHARS]})
    return msgs


@dataclass
class QueryFields:
    """A validated model reading of a query (the fields of :data:`QUERY_SCHEMA`)."""

    sounds: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    kind: str | None = None  # "music" | "speech" | None ("sound" reads as None: no kind preference)
    tempo: tuple[float | None, float | None] | None = None
    tempo_word: str | None = None
    duration: tuple[float | None, float | None] | None = None
    duration_word: str | None = None
    loudness: str | None = None
    vocals: str | None = None
    spoken: str | None = None


def validate_query_fields(value: Any) -> QueryFields:
    """Check and normalise a model's answer against :data:`QUERY_SCHEMA` (missing keys read as null;
    wrong types, unknown enum values and impossible numbers raise ``ValueError``)."""
    d = _obj(value)
    out = QueryFields(
        sounds=_strings(d.get("sounds"), "sounds", 5, 40),
        exclude=_strings(d.get("exclude"), "exclude", 4, 40),
        loudness=_enum(d.get("loudness"), ("quiet", "loud"), "loudness"),
        vocals=_enum(d.get("vocals"), ("none", "any", "female", "male"), "vocals"),
        spoken=_text(d.get("spoken"), "spoken", 80),
    )
    kind = _enum(d.get("kind"), ("music", "speech", "sound"), "kind")
    out.kind = kind if kind in ("music", "speech") else None
    out.tempo_word = _enum(d.get("tempo"), ("slow", "fast"), "tempo")
    lo, hi = _number(d.get("min_bpm"), "min_bpm", 20, 400), _number(d.get("max_bpm"), "max_bpm", 20, 400)
    if lo is not None or hi is not None:
        out.tempo = _ordered(*_widen(lo, hi, _query.BPM_TOLERANCE))
    elif out.tempo_word:
        out.tempo = (None, _query.SLOW_BPM) if out.tempo_word == "slow" else (_query.FAST_BPM, None)
    lo = _number(d.get("min_seconds"), "min_seconds", 0, 86400)
    hi = _number(d.get("max_seconds"), "max_seconds", 0, 86400)
    word = _enum(d.get("duration"), ("short", "long"), "duration")
    if lo is not None or hi is not None:
        out.duration = _ordered(*_widen(lo, hi, _query.DURATION_TOLERANCE))
    elif word:
        out.duration = (None, _query.SHORT_S) if word == "short" else (_query.LONG_S, None)
        out.duration_word = word
    return out


def _widen(lo: float | None, hi: float | None, tol: float) -> tuple[float | None, float | None]:
    """One value given as both bounds ("around 128 bpm" -> 128-128) becomes the rules' tolerance band."""
    if lo is not None and lo == hi:
        return lo * (1 - tol), hi * (1 + tol)
    return lo, hi


def _ordered(lo: float | None, hi: float | None) -> tuple[float | None, float | None]:
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    return lo, hi


def leftovers(pq: ParsedQuery) -> list[str]:
    """The positive words the rules did not understand: content words of ``pq.semantic`` found in no
    vocabulary (the curated audio vocabulary and the model-label phrasings; a CC-CEDICT gloss or a bare
    English word counts as not understood). Empty: the rules read the whole query."""
    if not pq.semantic:
        return []
    vocab = _query.vocabulary()
    toks = _query.tokenize(_query.normalize(pq.semantic), vocab)
    return [t.text for t in toks if t.role == "content" and t.section in (None, "cedict")]


FIELDS = ("include", "exclude", "kind", "tempo", "duration", "loudness", "vocals", "spoken")
"""The fields a rewrite can change, as named by ``ParsedQuery``."""


@dataclass
class RewrittenQuery(ParsedQuery):
    """A :class:`ParsedQuery` with where each field came from: ``origin[field]`` is "rules", "llm" or
    "rules+llm"; ``llm`` says whether the model ran and how it went."""

    origin: dict[str, str] = field(default_factory=dict)
    llm: str = ""  # e.g. "used (0.42 s)", "not needed: the rules read every word", "failed (...): rules only"
    leftover: list[str] = field(default_factory=list)

    def explain(self) -> dict[str, Any]:
        out = super().explain()
        out["from"] = {k: v for k, v in self.origin.items() if _is_set(getattr(self, k))}
        out["llm"] = self.llm
        if self.leftover:
            out["not understood by the rules"] = self.leftover
        return out

    def describe(self, lang: str | None = None) -> list[str]:
        lines = super().describe(lang)
        zh = (lang or ("en" if self.language == "en" else "zh")) == "zh"
        by: dict[str, list[str]] = {}
        for name, src in self.origin.items():
            if _is_set(getattr(self, name)):
                by.setdefault(src, []).append(name)
        names = {"rules": "规则", "llm": "语言模型", "rules+llm": "规则+语言模型"} if zh else {}
        for src in ("rules", "llm", "rules+llm"):
            if by.get(src):
                label = names.get(src, src)
                lines.append(f"{'来源' if zh else 'from'} {label}: {', '.join(by[src])}")
        lines.append(f"{'语言模型' if zh else 'language model'}: {self.llm}")
        return lines


def _is_set(v: Any) -> bool:
    return not (v is None or v == "" or v == [])


def _as_rewritten(pq: ParsedQuery, **extra: Any) -> RewrittenQuery:
    init = {f.name: getattr(pq, f.name) for f in fields(pq) if f.init}
    out = RewrittenQuery(**init, **extra)
    for f in fields(pq):
        if not f.init:
            setattr(out, f.name, getattr(pq, f.name))
    return out


def term_of(phrase: str) -> list[str]:
    """A model's English phrase as the rules' include terms ("birds" -> ["bird"], "piano music" -> ["piano"]);
    a phrase the vocabulary does not know is kept, lowercased."""
    terms = _query.parse(phrase).include
    return terms or [phrase.lower().strip()]


NOT_TERMS = _query.GENERIC_EN | {"speech", "voice", "voices", "talk", "talking", "audio", "recording", "noise"}
"""Model "sounds" that name a kind, not content: the kind field carries them."""


def grounded(spoken: str, rules: ParsedQuery) -> bool:
    """Whether the model's spoken words come from the query: most of its words (characters, for
    Chinese) appear in the query or in the rules' English rendering of it."""
    have = _query.normalize(rules.raw) + " " + rules.text_en.lower()
    s = _query.normalize(spoken)
    cjk = [c for c in s if _query.HAS_CJK.match(c)]
    words = re.findall(r"[a-z0-9]+", s)
    units = [c in have for c in cjk] + [w in set(re.findall(r"[a-z0-9]+", have)) for w in words]
    return bool(units) and sum(units) >= 0.6 * len(units)


def merge(rules: ParsedQuery, got: QueryFields, *, note: str = "") -> RewrittenQuery:
    """Rules and a model reading combined. Rules win on what they parse with certainty: numeric tempo
    and duration ranges, quoted or introduced spoken content, exclusions and vocabulary terms. Word
    constraints (tempo, duration and loudness words, vocals, kind) are the rules' unless the query has
    words the rules did not understand and the model reads it otherwise (its reading of those words
    can flip them: "nothing with vocals"). Terms the rules only guessed (unknown words) give way to
    the model's sounds. When the rules understood every word, the model adds nothing but sounds to
    a query in which the rules found none ("songs")."""
    left = leftovers(rules)
    if not left:  # the rules read every word: what the model adds was never asked for (sounds only if none)
        got = QueryFields(sounds=[] if rules.include else got.sounds)
    out = _as_rewritten(rules, llm=note, leftover=left)
    origin = dict.fromkeys(FIELDS, "rules")
    unknown = {_query.lemma(w) for w in left} | set(left)
    certain = [t for t in rules.include if t not in unknown and not set(t.split()) <= unknown]
    model_terms = [t for s in got.sounds for t in term_of(s) if t not in NOT_TERMS]
    model_excl = [t for s in got.exclude for t in term_of(s)]
    if model_terms:
        out.include = list(dict.fromkeys(certain + [t for t in model_terms if t not in rules.exclude]))
        origin["include"] = "rules+llm" if certain else "llm"
        en = [w for w in rules.text_en.split() if w not in unknown and _query.lemma(w) not in unknown]
        out.text_en = " ".join(dict.fromkeys([" ".join(en), *got.sounds])).strip()
        if not out.semantic:
            out.semantic = " ".join(got.sounds)
    new_excl = [t for t in model_excl if t not in out.include and t not in rules.exclude]
    if new_excl:
        out.exclude = list(dict.fromkeys(rules.exclude + new_excl))
        origin["exclude"] = "rules+llm" if rules.exclude else "llm"

    def take(name: str, value: Any, *, certain_rule: bool) -> None:
        ours = getattr(rules, name)
        if value is None or value == ours:
            return
        if ours is None or (not certain_rule and left):
            setattr(out, name, value)
            origin[name] = "llm"

    numeric_tempo = rules.tempo is not None and rules.tempo_word is None and rules.tempo != (None, None)
    if got.tempo is not None and not numeric_tempo and got.tempo != rules.tempo and (rules.tempo is None or left):
        out.tempo, out.tempo_word, origin["tempo"] = got.tempo, got.tempo_word, "llm"
    numeric_dur = rules.duration is not None and rules.duration_word is None
    new_dur = got.duration is not None and got.duration != rules.duration
    if new_dur and not numeric_dur and (rules.duration is None or left):
        out.duration, out.duration_word, origin["duration"] = got.duration, got.duration_word, "llm"
    take("loudness", got.loudness, certain_rule=False)
    take("vocals", got.vocals, certain_rule=False)
    take("kind", got.kind, certain_rule=False)
    if rules.spoken is None and got.spoken and grounded(got.spoken, rules):
        out.spoken, origin["spoken"] = got.spoken, "llm"
        out.said = got.spoken
    if out.vocals == "none" and "vocals" not in out.exclude:
        out.exclude.append("vocals")
    elif out.vocals != "none" and "vocals" in out.exclude and "vocals" not in rules.exclude:
        out.exclude.remove("vocals")
    if rules.vocals == "none" and out.vocals != "none" and "vocals" in out.exclude:
        out.exclude.remove("vocals")
    out.include = [t for t in out.include if t not in out.exclude]
    out._music_words = rules._music_words or out.kind == "music" or bool(out.vocals)
    out.origin = origin
    return out


class QueryRewriter:
    """Rules first, the model where they fall short: ``rewriter(text) -> RewrittenQuery``.

    ``mode``: "auto" (the model reads the query only when :func:`leftovers` is not empty), "always"
    (every query: ``--llm``) or "off". Any model failure returns the rules' reading, saying why."""

    def __init__(self, client: LLMClient, mode: str = "auto") -> None:
        if mode not in ("auto", "always", "off"):
            raise ValueError(f"mode must be auto, always or off, not {mode!r}")
        self.client = client
        self.mode = mode
        self._memo: dict[tuple[str, str], RewrittenQuery] = {}

    def read(self, text: str) -> QueryFields:
        """The model's reading alone (raises :class:`LLMError`)."""
        return self.client.chat_json(
            query_messages(text), QUERY_SCHEMA, validate_query_fields, task="query", max_tokens=320
        )

    def __call__(self, text: str) -> RewrittenQuery:
        mode = FORCE.get() or self.mode
        memo = self._memo.get((mode, text))
        if memo is not None:
            return memo
        rules = _query.parse(text)
        left = leftovers(rules)
        if mode == "off" or (mode == "auto" and not left):
            why = "off" if mode == "off" else "not needed: the rules read every word"
            out = _as_rewritten(rules, llm=why, leftover=left, origin=dict.fromkeys(FIELDS, "rules"))
        else:
            t0 = time.perf_counter()
            try:
                got = self.read(text)
            except LLMError as exc:
                out = _as_rewritten(
                    rules, llm=f"failed ({exc}): rules only", leftover=left, origin=dict.fromkeys(FIELDS, "rules")
                )
            else:
                out = merge(rules, got, note=f"used, {self.client.model} ({time.perf_counter() - t0:.2f} s)")
        if not out.llm.startswith("failed"):  # a failure is retried next time (the server may be back)
            if len(self._memo) > 256:
                self._memo.clear()
            self._memo[(mode, text)] = out
        return out


FORCE: contextvars.ContextVar[str | None] = contextvars.ContextVar("soundscope_llm_mode", default=None)
"""A mode for the calls made in this context (the server's ``?llm=true``), over the rewriter's own."""


def always(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with every query read by the model (``mode="always"``), in this thread only."""
    token = FORCE.set("always")
    try:
        return fn(*args, **kwargs)
    finally:
        FORCE.reset(token)


def rewriter_from_env(mode: str = "auto") -> QueryRewriter | None:
    """A rewriter over the configured model, or None when no model is configured."""
    client = from_env()
    return QueryRewriter(client, mode) if client else None
