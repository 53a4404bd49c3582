"""Cassettes: record a real run's LLM and search traffic, replay it exactly.

A cassette is a JSONL file, one record a line:

    {"type": "llm", "key": GenRequest.key(), "request": {...}, "generation": {...}}
    {"type": "llm", "key": ..., "request": {...}, "error": "..."}
    {"type": "search", "key": search_key(query, k), "query": ..., "k": ..., "backend": ...,
     "results": [...]}            (or "error": "..." for a recorded SearchError)

Recording wrappers pass every call through to the real backend and append its
answer. Replay wrappers answer from the records, keyed by the request: identical
requests get their records in recorded order (then the last one again), and a request
with no record fails loudly instead of being guessed. That is what makes replay-based
tests and demos deterministic without a model or the web.

Every line is written with one append-mode `os.write` and no buffering, so a killed
run keeps everything it recorded, and concurrent writers (threads, or two cassettes on
one file) never interleave lines. Secrets never reach the file: strings that look like
credentials (values of *_API_KEY / *_TOKEN / *_SECRET environment variables, "Bearer
...", "sk-...", "hf_...", and any value registered with `add_secrets`) are replaced by
"***" before writing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

from agent.inputs import InputError, decode_line, json_line
from agent.llm.base import LLMError
from store.records import Completion, GenRequest, Generation, SearchResult
from agent.search.base import SearchError

REDACTED = "***"
_SECRET_ENV = re.compile(r"(API_KEY|_TOKEN|_SECRET|_PASSWORD)$", re.IGNORECASE)
_SECRET_PATTERNS = [
    (re.compile(r"Bearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer " + REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{6,}"), REDACTED),
    (re.compile(r"\bhf_[A-Za-z0-9]{16,}"), REDACTED),
]


class LLMReplayMiss(LLMError):
    """A replayed LLM was asked something the cassette never recorded."""


class SearchReplayMiss(SearchError):
    """A replayed search was asked a query the cassette never recorded."""


def search_key(query: str, k: int) -> str:
    """Stable hash of what determines a search's answer."""
    body = json.dumps({"query": query, "k": int(k)}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:32]


class Cassette:
    """One JSONL file of recorded traffic: append while recording, read to replay."""

    def __init__(self, path: str | Path, secrets: Iterable[str] = ()):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._secrets = {s for s in secrets if s}

    def add_secrets(self, values: Iterable[str]) -> None:
        """Extra strings to scrub (e.g. an API key that is not in the environment)."""
        with self._lock:
            self._secrets.update(v for v in values if v)

    def append(self, record: dict) -> None:
        with self._lock:
            line = json.dumps(self._scrub(record), ensure_ascii=False) + "\n"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line.encode())  # one syscall per line: no torn records
            finally:
                os.close(fd)

    def records(self, kind: str | None = None) -> list[dict]:
        """All records (of one type), in file order. Raises FileNotFoundError, or ValueError
        (InputError) naming the line of a record that is not one."""
        if not self.path.exists():
            raise FileNotFoundError(self.path)
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        out = []
        for i, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            last = i == len(lines)  # no newline after it: a run killed mid-write
            try:
                rec = json_line(self.path, i, decode_line(self.path, i, raw))
            except InputError:
                if last:
                    break
                raise
            why = _malformed(rec)
            if why:
                raise InputError(f"{self.path}:{i}: not a cassette record ({why})")
            if kind is None or rec.get("type") == kind:
                out.append(rec)
        return out

    def _scrub(self, value):
        secrets = self._secrets | _env_secrets()
        return _scrub(value, sorted(secrets, key=len, reverse=True))


def scrub_secrets(text: str, extra: Iterable[str] = ()) -> str:
    """`text` with credential-looking strings (see module docstring) replaced by ***."""
    secrets = {e for e in extra if e} | _env_secrets()
    return _scrub(text, sorted(secrets, key=len, reverse=True))


def _env_secrets() -> set[str]:
    return {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 8}


def _scrub(value, secrets: list[str]):
    if isinstance(value, str):
        for s in secrets:
            value = value.replace(s, REDACTED)
        for pattern, repl in _SECRET_PATTERNS:
            value = pattern.sub(repl, value)
        return value
    if isinstance(value, dict):
        return {_scrub(k, secrets): _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, secrets) for v in value]
    return value


class _Cursor:
    """Records grouped by key, handed out in order; the last one repeats."""

    def __init__(self, records: list[dict]):
        self._by_key: dict[str, list[dict]] = {}
        for rec in records:
            self._by_key.setdefault(rec["key"], []).append(rec)
        self._next: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> dict | None:
        with self._lock:
            recs = self._by_key.get(key)
            if not recs:
                return None
            i = self._next.get(key, 0)
            self._next[key] = i + 1
            return recs[min(i, len(recs) - 1)]


_ANSWER = {"llm": ("generation", dict), "search": ("results", list)}


def _malformed(rec) -> str | None:
    """Why a parsed line is not a record replay can use; None when it is one."""
    if not isinstance(rec, dict):
        return "a JSON object"
    field, kind = _ANSWER.get(rec.get("type"), (None, None))
    if field and not isinstance(rec.get("key"), str):  # other types (meta) are notes
        return f"a {rec['type']} record needs a string 'key'"
    if field and "error" not in rec and not isinstance(rec.get(field), kind):
        return f"a {rec['type']} record needs '{field}' or 'error'"
    return None


def _load(cassette: Cassette, kind: str, error: type[Exception]) -> list[dict]:
    try:
        return cassette.records(kind)
    except FileNotFoundError:
        raise error(f"cassette {cassette.path} does not exist") from None
    except ValueError as e:
        raise error(str(e)) from None


# --- LLM -----------------------------------------------------------------------------


def request_to_dict(request: GenRequest) -> dict:
    d = asdict(request)
    d["stop"] = list(request.stop)
    return d


def generation_to_dict(gen: Generation) -> dict:
    return asdict(gen)


def generation_from_dict(d: dict) -> Generation:
    d = dict(d)
    d["completions"] = [Completion(**c) for c in d.get("completions", [])]
    return Generation(**d)


class RecordingLLM:
    """Passes requests to a real backend and records each answer (or failure)."""

    def __init__(self, inner, cassette: Cassette):
        self.inner = inner
        self.cassette = cassette
        self.name = inner.name
        secrets = getattr(inner, "secret_values", None)
        if callable(secrets):
            cassette.add_secrets(secrets())

    def generate(self, request: GenRequest) -> Generation:
        rec = {"type": "llm", "key": request.key(), "request": request_to_dict(request)}
        try:
            gen = self.inner.generate(request)
        except LLMError as e:
            self.cassette.append({**rec, "error": str(e)})
            raise
        self.cassette.append({**rec, "generation": generation_to_dict(gen)})
        return gen

    def __getattr__(self, attr):  # render(), tokenizer, close() ... of the real backend
        if attr == "inner":  # not set yet (copy/unpickle): no recursion
            raise AttributeError(attr)
        return getattr(self.inner, attr)


class ReplayLLM:
    """Answers from a cassette's LLM records; an unrecorded request raises LLMReplayMiss."""

    def __init__(self, cassette: Cassette, name: str = "replay"):
        self.cassette = cassette
        self.name = name
        self._cursor = _Cursor(_load(cassette, "llm", LLMError))

    def generate(self, request: GenRequest) -> Generation:
        key = request.key()
        rec = self._cursor.take(key)
        if rec is None:
            prompt = request.prompt[:80].replace("\n", " ")
            raise LLMReplayMiss(f"no recorded response for request {key}: {prompt}")
        if "error" in rec:
            raise LLMError(rec["error"])
        return generation_from_dict(rec["generation"])


# --- search ----------------------------------------------------------------------------


class RecordingSearch:
    """Passes searches to a real backend and records the results (or the SearchError)."""

    def __init__(self, inner, cassette: Cassette):
        self.inner = inner
        self.cassette = cassette
        self.name = inner.name

    def search(self, query: str, k: int = 3) -> list[SearchResult]:
        rec = {"type": "search", "key": search_key(query, k), "query": query, "k": int(k),
               "backend": self.inner.name}
        try:
            results = self.inner.search(query, k)
        except SearchError as e:
            self.cassette.append({**rec, "error": str(e)})
            raise
        self.cassette.append({**rec, "results": [r.to_dict() for r in results]})
        return results

    def __getattr__(self, attr):
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)


class ReplaySearch:
    """Answers from a cassette's search records; a recorded failure is raised again."""

    def __init__(self, cassette: Cassette, name: str = "replay"):
        self.cassette = cassette
        self.name = name
        self._cursor = _Cursor(_load(cassette, "search", SearchError))

    def search(self, query: str, k: int = 3) -> list[SearchResult]:
        key = search_key(query, k)
        rec = self._cursor.take(key)
        if rec is None:
            raise SearchReplayMiss(f"no recorded results for search {key}: {query[:80]} (k={k})")
        if "error" in rec:
            raise SearchError(rec["error"])
        return [SearchResult.from_dict(r) for r in rec["results"]]
