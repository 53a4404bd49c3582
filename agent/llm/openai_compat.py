"""OpenAI-compatible HTTP backend: vLLM, Ollama, llama.cpp server, hosted APIs.

The scale-out path for rollouts and the usual home of the judge/teacher. It speaks
plain HTTP through httpx (no SDK), in one of two modes:

- "chat": POST {base}/chat/completions with the prompt as the single user message;
  the server applies its own chat template, so `rendered_prompt` is the user text.
- "completions": POST {base}/completions with the prompt verbatim (base models, or a
  prompt the caller already rendered).

Perplexity comes from the server's token log-probabilities when it returns them
(their sum); otherwise `logprob` is None and the agent falls back to the first sample.
Sampling follows the project rule (n > 1 at temperature 0 → 0.5; see agent.llm.hf).

Connection errors (refused, or dropped mid-answer), 429 and 5xx are retried with
exponential backoff (agent/retry.py); any other 4xx is final and reported with the
server's own message. The API key only ever travels in the Authorization header: it
is not in `options`, `repr`, logs or error messages.
"""

from __future__ import annotations

import os
import threading
import time
from urllib.parse import urlsplit, urlunsplit

from agent.llm.base import LLMError
from store.records import Completion, GenRequest, Generation
from agent.llm.hf import effective_sampling
from agent.retry import AttemptFailed, GaveUp, with_retries

DEFAULT_BASE_URL = "https://api.openai.com/v1"
MODES = ("chat", "completions")


class OpenAICompatBackend:
    """Any server that speaks the OpenAI chat or legacy completions API."""

    def __init__(self, base_url: str | None = None, model: str | None = None,
                 api_key: str | None = None, mode: str = "chat", timeout_s: float = 60,
                 max_retries: int = 4, backoff_s: float = 0.5, logprobs: bool = True):
        if mode not in MODES:
            raise LLMError(f"unknown mode '{mode}' (use chat or completions)")
        self.http = ServerHTTP(base_url, api_key, timeout_s, max_retries, backoff_s)
        self.base_url = self.http.base_url
        self.mode = mode
        self.logprobs = bool(logprobs)
        self._model = model
        self._model_lock = threading.Lock()
        self.name = f"openai:{model}" if model else "openai"

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAICompatBackend(base_url={self._public_url()!r}, model={self._model!r}, mode={self.mode!r})"

    @property
    def model(self) -> str:
        """The model name; when none was given, the first one the server lists."""
        with self._model_lock:
            if self._model is None:
                listed = self._request("GET", "/models").get("data") or []
                if not listed or "id" not in listed[0]:
                    raise LLMError(f"{self._public_url()}/models lists no model; pass a model name")
                self._model = str(listed[0]["id"])
                self.name = f"openai:{self._model}"
            return self._model

    def set_model(self, model: str) -> None:
        """Generate with `model` from now on (a LoRA adapter the server has loaded, say)."""
        with self._model_lock:
            self._model = model
            self.name = f"openai:{model}"

    def secret_values(self) -> tuple[str, ...]:
        """Strings a recorder must scrub (the API key), so cassettes never hold them."""
        return (self.http.api_key,) if self.http.api_key else ()

    def close(self) -> None:
        self.http.close()

    # --- generation -------------------------------------------------------------

    def generate(self, request: GenRequest) -> Generation:
        if request.n < 1 or request.max_new_tokens < 1:
            raise LLMError(f"bad request: n={request.n}, max_new_tokens={request.max_new_tokens}")
        do_sample, temperature = effective_sampling(request)
        start = time.monotonic()
        completions: list[Completion] = []
        prompt_tokens = 0
        # Some servers (Ollama, llama.cpp) ignore n and return one choice: ask again
        # for the rest, at most n rounds.
        for _ in range(request.n):
            body = self._request("POST", self._path(), json=self._payload(
                request, request.n - len(completions), temperature))
            got = _parse_choices(body, self.mode)
            if not got:
                raise LLMError(f"{self._public_url()} returned no choices")
            usage = body.get("usage") or {}
            prompt_tokens = prompt_tokens or int(usage.get("prompt_tokens") or 0)
            if len(got) == 1 and got[0].logprob is None:
                got[0].n_tokens = int(usage.get("completion_tokens") or 0)
            completions.extend(got)
            if len(completions) >= request.n:
                break
        return Generation(
            rendered_prompt=request.prompt, completions=completions[:request.n],
            prompt_tokens=prompt_tokens, duration_s=time.monotonic() - start, model=self.name,
            options={"mode": self.mode, "do_sample": do_sample, "temperature": temperature,
                     "n": request.n, "max_new_tokens": request.max_new_tokens,
                     "stop": list(request.stop), "base_url": self._public_url()})

    def _path(self) -> str:
        return "/chat/completions" if self.mode == "chat" else "/completions"

    def _payload(self, request: GenRequest, n: int, temperature: float) -> dict:
        body: dict = {"model": self.model, "n": n, "temperature": temperature,
                      "max_tokens": request.max_new_tokens}
        if self.mode == "chat":
            body["messages"] = [{"role": "user", "content": request.prompt}]
            if self.logprobs:
                body["logprobs"] = True
        else:
            body["prompt"] = request.prompt
            if self.logprobs:
                body["logprobs"] = 1  # legacy API: number of alternatives per token
        if request.stop:
            body["stop"] = list(request.stop)
        return body

    # --- HTTP ------------------------------------------------------------------------

    def _request(self, method: str, path: str, json: dict | None = None) -> dict:
        return self.http.request(method, path, json=json)

    def _public_url(self) -> str:
        return self.http.public_url()


class ServerRefused(LLMError):
    """The server answered a final 4xx: its status and its own message are kept."""

    def __init__(self, where: str, status: int, message: str):
        super().__init__(f"{where} refused the request ({status}): {message}")
        self.status, self.message = status, message


class ServerHTTP:
    """JSON over HTTP to one OpenAI-compatible server, retried through agent.retry.

    Connection errors (refused, dropped mid-answer, timed out), 429 and 5xx are retried
    with exponential backoff (at least the server's Retry-After); any other 4xx is final
    and reported with the server's own message. The API key only travels in the
    Authorization header and is scrubbed from every message.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None,
                 timeout_s: float = 60, max_retries: int = 4, backoff_s: float = 0.5):
        import httpx

        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._client = httpx.Client(timeout=timeout_s, headers=headers)

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, json: dict | None = None,
                expect_json: bool = True) -> dict | str:
        """The answer's JSON (or text, when `expect_json` is off); LLMError when it fails."""
        try:
            return with_retries(lambda _left: self._once(method, path, json, expect_json),
                                self.max_retries, self.backoff_s)
        except GaveUp as e:
            raise LLMError(f"gave up after {e.attempts} attempts: {e.reason}") from None

    def _once(self, method: str, path: str, json: dict | None, expect_json: bool):
        import httpx

        where = self.public_url() + path
        try:
            resp = self._client.request(method, self.base_url + path, json=json)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise AttemptFailed(f"cannot reach {where} ({type(e).__name__})") from None
        except httpx.TimeoutException as e:
            raise AttemptFailed(f"no answer from {where} in time ({type(e).__name__})") from None
        except httpx.TransportError as e:  # the server hung up mid-answer
            raise AttemptFailed(f"lost the connection to {where} ({type(e).__name__})") from None
        if resp.status_code < 400:
            if not expect_json:
                return resp.text
            try:
                return resp.json()
            except ValueError:
                raise LLMError(f"{where} answered with invalid JSON") from None
        message = self.scrub(_server_message(resp))
        if resp.status_code != 429 and resp.status_code < 500:
            raise ServerRefused(where, resp.status_code, message)
        raise AttemptFailed(f"{where} answered {resp.status_code}: {message}",
                            wait_s=_retry_after(resp))

    def scrub(self, text: str) -> str:
        return text.replace(self.api_key, "***") if self.api_key else text

    def public_url(self) -> str:
        """The base URL without credentials or query (it goes into options and errors)."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _parse_choices(body: dict, mode: str) -> list[Completion]:
    out = []
    for choice in sorted(body.get("choices") or [], key=lambda c: c.get("index", 0)):
        if mode == "chat":
            text = (choice.get("message") or {}).get("content") or ""
            lp = (choice.get("logprobs") or {}).get("content")
            token_lps = [t.get("logprob") for t in lp] if lp else None
        else:
            text = choice.get("text") or ""
            token_lps = (choice.get("logprobs") or {}).get("token_logprobs")
        token_lps = [float(x) for x in token_lps if x is not None] if token_lps else None
        if token_lps:
            out.append(Completion(text, len(token_lps), sum(token_lps)))
        else:
            out.append(Completion(text, 0, None))
    return out


def _server_message(resp) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip().replace("\n", " ")[:200] or resp.reason_phrase
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"]).replace("\n", " ")[:300]
    if isinstance(err, str):
        return err[:300]
    for key in ("message", "detail"):  # vLLM's ErrorResponse; FastAPI's own 404
        if isinstance(body, dict) and isinstance(body.get(key), str):
            return body[key].replace("\n", " ")[:300]
    return str(body)[:200]


def _retry_after(resp) -> float:
    try:
        return float(resp.headers.get("Retry-After", 0))
    except ValueError:
        return 0.0
