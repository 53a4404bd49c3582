"""A real OpenAI-compatible HTTP server on loopback, for tests.

`start_server(responder)` serves /v1/chat/completions, /v1/completions and /v1/models
from a ThreadingHTTPServer on 127.0.0.1 (a free port) in a background thread and
returns `(base_url, stop)`. `base_url` ends in /v1, as OpenAI clients expect. The
`stop` handle is callable (shuts the server down) and also lets a test look at what
the server saw (`stop.requests`: path, headers, JSON body) and make it fail the next
requests (`stop.fail_next(2, 429)`), so retry and secret-handling tests talk to real
sockets instead of a mocked transport.

`hf_responder(backend)` answers with a real local model (an `HFBackend`), and
`build_lively_model(dir)` writes the tiny model the LLM tests use.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

Responder = Callable[[str, int, float, int], list[tuple[str, "list[float] | None"]]]


@dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]  # names lowercased: clients differ in case
    body: dict


@dataclass
class ServerHandle:
    """Stops the server when called; records requests; injects failures."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    requests: list[SeenRequest] = field(default_factory=list)
    _failures: list[tuple[int, str]] = field(default_factory=list)  # for the next requests
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def fail_next(self, count: int, status: int = 500, message: str | None = None) -> None:
        """Answer the next `count` POSTs with `status` and an OpenAI-style error body."""
        with self._lock:
            self._failures.extend([(status, message or f"injected failure {status}")] * count)

    def _take_failure(self) -> tuple[int, str] | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None


def start_server(responder: Responder, model: str = "tiny", fail_first: int = 0,
                 fail_status: int = 500) -> tuple[str, ServerHandle]:
    """Serve `responder` on loopback; the first `fail_first` POSTs get `fail_status`."""
    handle: ServerHandle

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            handle.requests.append(SeenRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, {}))
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": model, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                return self._send(400, {"error": {"message": "body is not JSON"}})
            handle.requests.append(SeenRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            failure = handle._take_failure()
            if failure is not None:
                return self._send(failure[0], {"error": {"message": failure[1]}})
            path = self.path.rstrip("/")
            if path == "/v1/chat/completions":
                users = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
                if not users:
                    return self._send(400, {"error": {"message": "messages has no user turn"}})
                self._answer(body, users[-1], chat=True)
            elif path == "/v1/completions":
                if not isinstance(body.get("prompt"), str):
                    return self._send(400, {"error": {"message": "prompt must be a string"}})
                self._answer(body, body["prompt"], chat=False)
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def _answer(self, body: dict, prompt: str, chat: bool) -> None:
            n = int(body.get("n", 1))
            outs = responder(prompt, n, float(body.get("temperature", 1.0)),
                             int(body.get("max_completion_tokens") or body.get("max_tokens") or 16))
            choices, completion_tokens = [], 0
            for i, (text, lps) in enumerate(outs):
                completion_tokens += len(lps) if lps else len(text.split())
                choices.append(_choice(i, text, lps, chat, bool(body.get("logprobs"))))
            self._send(200, {
                "id": f"cmpl-{len(handle.requests)}", "model": body.get("model", model),
                "object": "chat.completion" if chat else "text_completion", "choices": choices,
                "usage": {"prompt_tokens": len(prompt.split()),
                          "completion_tokens": completion_tokens,
                          "total_tokens": len(prompt.split()) + completion_tokens}})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="openai-test-server", daemon=True)
    handle = ServerHandle(server, thread)
    handle.fail_next(fail_first, fail_status)
    thread.start()
    return f"http://127.0.0.1:{server.server_address[1]}/v1", handle


def _choice(i: int, text: str, lps: list[float] | None, chat: bool, want_logprobs: bool) -> dict:
    """One choice in the chat or legacy-completions shape (logprobs only when asked)."""
    if chat:
        logprobs = ({"content": [{"token": f"t{j}", "logprob": lp} for j, lp in enumerate(lps)]}
                    if want_logprobs and lps is not None else None)
        return {"index": i, "message": {"role": "assistant", "content": text},
                "logprobs": logprobs, "finish_reason": "stop"}
    logprobs = ({"tokens": [f"t{j}" for j in range(len(lps))], "token_logprobs": lps}
                if want_logprobs and lps is not None else None)
    return {"index": i, "text": text, "logprobs": logprobs, "finish_reason": "stop"}


def hf_responder(backend) -> Responder:
    """Serve a real local model: the server's answers are HFBackend samples."""
    from agent.llm.base import GenRequest

    def respond(prompt: str, n: int, temperature: float, max_tokens: int):
        gen, token_lps = backend.generate_detailed(
            GenRequest(prompt, n=n, temperature=temperature, max_new_tokens=max_tokens))
        return [(c.text, lps) for c, lps in zip(gen.completions, token_lps)]

    return respond


def build_lively_model(out: str | Path, std: float = 0.2, seed: int = 1) -> Path:
    """tests.tiny's model with larger random weights.

    At the default initialisation (std 0.02) a random tiny model emits the same token
    for every prompt, which would make batching and sampling tests pass vacuously;
    std 0.2 gives outputs that differ from prompt to prompt.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from tests.tiny import build_tiny_model

    out = build_tiny_model(out)
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    model.save_pretrained(out)
    return out
