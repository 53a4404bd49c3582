"""Web search through DuckDuckGo (the `ddgs` package), with a hard deadline.

`ddgs` can hang for 12–30 s on a dead network (backend "auto" tries engine after
engine), it reports an HTTP 429 exactly like an empty result page ("No results
found."), and it never raises its own `RatelimitException`. So this backend:

- runs every attempt in a daemon thread and stops waiting at one overall deadline;
- uses a fresh `DDGS` per attempt whose engines record the HTTP status of each
  response, so a rate limit, a server error and a genuinely empty page are told apart;
- retries rate limits, timeouts and server errors with exponential backoff inside the
  deadline (agent/retry.py), and gives up at once when the network is simply not there
  (DNS failure, connection refused): retrying an offline machine only wastes the user's time;
- cleans every snippet to plain, bounded text. Snippets are untrusted page text: they
  are only ever shown to a model as data, never interpreted.
"""

from __future__ import annotations

import html
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from agent.retry import AttemptFailed, GaveUp, with_retries
from agent.search.base import SearchError
from store.records import SearchResult

RATE_LIMIT_STATUSES = frozenset({202, 403, 429})  # DDG answers 202 (anomaly page) or 429
SNIPPET_CHARS = 500
TITLE_CHARS = 200

# Words in a ddgs/primp error message that mean "the network is not there at all".
_UNREACHABLE_MARKERS = (
    "dnserror", "error resolving dns", "dns error", "failed to lookup address",
    "name or service not known", "temporary failure in name resolution",
    "nodename nor servname", "connection refused", "os error 111", "network is unreachable",
    "os error 101", "no route to host", "os error 113",
)
_TIMEOUT_MARKERS = ("timed out", "timeout")

SEARCH_THREAD = "restreact-web-search"  # each search runs in a daemon thread of this name


# --- snippet cleaning ------------------------------------------------------------

_TAG = re.compile(r"<[^<>]{0,500}>")
_SPACE = re.compile(r"\s+")


def clean_text(raw: Any, max_chars: int = SNIPPET_CHARS) -> str:
    """Plain text from a scraped snippet: no tags, entities, control characters, or runs of space.

    Entities are decoded and tags stripped a few times over, because scraped pages are
    often double-escaped (`&amp;lt;b&amp;gt;` survives one pass as `<b>`).
    """
    if raw is None:
        return ""
    text = str(raw)
    for _ in range(3):
        before = text
        text = _TAG.sub(" ", html.unescape(text))
        if text == before:
            break
    text = unicodedata.normalize("NFC", text)
    # Control and format characters (category C*) can carry terminal escapes or
    # invisible text; whitespace ones become spaces, the rest go.
    text = "".join(
        " " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )
    text = _SPACE.sub(" ", text).strip()
    return truncate(text, max_chars)


def truncate(text: str, max_chars: int) -> str:
    """Cut at a word boundary and mark the cut with an ellipsis."""
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ")
    if space > max_chars // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def is_garbage(text: str) -> bool:
    """True for a snippet with nothing a reader could use (empty, or mostly symbols)."""
    alnum = sum(ch.isalnum() for ch in text)
    return alnum < 3 or alnum < 0.3 * len(text)


def to_results(rows: list[dict], k: int, snippet_chars: int = SNIPPET_CHARS) -> list[SearchResult]:
    """Clean raw ddgs rows into at most k SearchResults numbered 1..k, skipping garbage."""
    out: list[SearchResult] = []
    seen: set[str] = set()
    for row in rows:
        url = clean_text(row.get("href") or row.get("url"), max_chars=2000).replace(" ", "%20")
        if not url.lower().startswith(("http://", "https://")) or url in seen:
            continue  # javascript:, data: and relative links are not evidence
        snippet = clean_text(row.get("body") or row.get("description"), snippet_chars)
        if is_garbage(snippet):
            continue
        title = clean_text(row.get("title"), TITLE_CHARS) or url
        seen.add(url)
        out.append(SearchResult(link_id=len(out) + 1, title=title, url=url, snippet=snippet))
        if len(out) == k:
            break
    return out


# --- one attempt -------------------------------------------------------------------


@dataclass
class _Outcome:
    rows: list[dict] | None = None
    error: BaseException | None = None
    statuses: list[int] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


def _recording_ddgs(outcome: _Outcome, **kwargs):
    """A DDGS whose engines append every HTTP status they receive to `outcome.statuses`."""
    from ddgs import DDGS

    class _RecordingDDGS(DDGS):
        # `_get_engines` is where ddgs builds its engine objects; wrapping each engine's
        # HttpClient here is the one place where every response's status is visible.
        def _get_engines(self, category, backend):
            engines = super()._get_engines(category, backend)
            for engine in engines:
                client = engine.http_client
                if not getattr(client, "_restreact_recording", False):
                    client.request = _recording(client.request, outcome.statuses)
                    client._restreact_recording = True
            return engines

    return _RecordingDDGS(**kwargs)


def _recording(request, statuses: list[int]):
    def wrapped(*args, **kwargs):
        resp = request(*args, **kwargs)
        statuses.append(int(resp.status_code))
        return resp

    return wrapped


# --- the backend -------------------------------------------------------------------


class WebSearch:
    """DuckDuckGo search (via `ddgs`) that always answers or fails within `deadline_s`."""

    name = "web"

    def __init__(self, deadline_s: float = 20.0, max_retries: int = 3, backoff_s: float = 1.0,
                 backend: str = "auto", region: str = "us-en", safesearch: str = "moderate",
                 timeout_s: float = 5.0, proxy: str | None = None, verify: bool | str = True,
                 snippet_chars: int = SNIPPET_CHARS):
        if deadline_s <= 0 or timeout_s <= 0:
            raise ValueError("web search: deadline_s and timeout_s must be positive")
        if max_retries < 0 or backoff_s < 0:
            raise ValueError("web search: max_retries and backoff_s must not be negative")
        self.deadline_s = float(deadline_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.backend = backend
        self.region = region
        self.safesearch = safesearch
        self.timeout_s = float(timeout_s)
        self.proxy = proxy
        self.verify = verify
        self.snippet_chars = snippet_chars

    def search(self, query: str, k: int = 3) -> list[SearchResult]:
        query = " ".join(str(query).split())
        if not query:
            raise SearchError("web search failed: empty query")
        if k < 1:
            raise SearchError(f"web search failed: k must be at least 1, got {k}")
        try:
            return with_retries(lambda left: self._judged(query, k, left), self.max_retries,
                                self.backoff_s, deadline_s=self.deadline_s, max_wait_s=None)
        except GaveUp as e:
            raise SearchError(f"web search failed: {e.reason} ({e.attempts} "
                              f"attempt{'s' if e.attempts != 1 else ''} in {e.elapsed_s:.1f}s)") from None

    def _judged(self, query: str, k: int, remaining: float) -> list[SearchResult]:
        """One attempt, its outcome turned into results or the failure to retry (or not)."""
        outcome = self._attempt(query, k, remaining)
        verdict = _judge(outcome)
        if verdict == "ok":
            return to_results(outcome.rows or [], k, self.snippet_chars)
        if verdict == "empty":
            return []
        if verdict.startswith("cannot reach"):  # an offline machine: retrying only wastes time
            raise SearchError(f"web search failed: {verdict}")
        raise AttemptFailed(verdict, retryable=_retryable(verdict))

    def _attempt(self, query: str, k: int, remaining: float) -> _Outcome:
        """One ddgs call in a daemon thread; we stop waiting for it after `remaining` seconds.

        A daemon thread rather than an executor: an abandoned call must never keep the
        process alive, and it cannot touch a later attempt's state (each has its own
        `_Outcome` and its own DDGS).
        """
        outcome = _Outcome()
        # Per-request timeout never longer than the time left, so the abandoned thread
        # (and ddgs's own pool inside it) winds down soon after the deadline.
        timeout = max(0.1, min(self.timeout_s, remaining))

        def run() -> None:
            try:
                ddgs = _recording_ddgs(outcome, proxy=self.proxy, timeout=timeout, verify=self.verify)
                # Ask for extra rows: some are dropped as garbage or duplicates.
                outcome.rows = ddgs.text(query, max_results=2 * k + 2, backend=self.backend,
                                         region=self.region, safesearch=self.safesearch)
            except BaseException as ex:  # noqa: BLE001 - every failure is judged below
                outcome.error = ex
            finally:
                outcome.done.set()

        threading.Thread(target=run, name=SEARCH_THREAD, daemon=True).start()
        if not outcome.done.wait(remaining):
            outcome.error = TimeoutError(f"no answer within the {self.deadline_s:g}s deadline")
        return outcome


def _judge(outcome: _Outcome) -> str:
    """'ok', 'empty', or a one-line reason for the failure."""
    if outcome.error is None:
        return "ok" if outcome.rows else "empty"
    if isinstance(outcome.error, TimeoutError):
        return f"timed out: {outcome.error}"
    message = " ".join(str(outcome.error).split())
    low = message.lower()
    statuses = list(outcome.statuses)
    limited = sorted({s for s in statuses if s in RATE_LIMIT_STATUSES})
    if limited:
        return f"rate limited (HTTP {', '.join(map(str, limited))})"
    server = sorted({s for s in statuses if s >= 500})
    if server:
        return f"server error (HTTP {', '.join(map(str, server))})"
    other = sorted({s for s in statuses if s != 200})
    if "no results found" in low:
        if not other:
            return "empty"  # every engine answered 200 with nothing in it
        return f"unexpected HTTP status {', '.join(map(str, other))}"
    if any(m in low for m in _TIMEOUT_MARKERS):
        return f"timed out: {_short(message)}"
    if any(m in low for m in _UNREACHABLE_MARKERS):
        return f"cannot reach DuckDuckGo (offline?): {_short(message)}"
    return _short(message)


def _retryable(reason: str) -> bool:
    """Rate limits, timeouts, server errors and dropped connections may pass; a 404 won't."""
    return not reason.startswith(("unexpected HTTP status", "cannot reach"))


_URL_PREFIX = re.compile(r"^\((https?://)?([^/\s)]+)[^)]*\) > ")
_WRAPPED = re.compile(r"^\w+: \w+\((['\"])(.*)\1\)$")


def _short(message: str, limit: int = 240) -> str:
    """ddgs wraps primp errors as "ConnectError: ConnectError('…')"; keep just the inside."""
    m = _WRAPPED.match(message)
    if m:
        message = m.group(2)
    # "error sending request for url (https://host/path?…) > cause" → "host: cause"
    message = _URL_PREFIX.sub(r"\2: ", message.replace("error sending request for url ", ""))
    return truncate(message, limit)
