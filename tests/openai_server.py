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

With `lora=LoRAModels(base_dir)` the server also behaves like vLLM with runtime LoRA
updating: /v1/load_lora_adapter really loads the PEFT adapter from `lora_path` on top of
the base weights, /v1/unload_lora_adapter drops it, /v1/models lists the base and every
loaded adapter, and a completion's "model" picks which one generates.
`stop.drop_next(n)` makes the next POSTs send half an answer and close the connection.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

Responder = Callable[[str, int, float, int], list[tuple[str, "list[float] | None"]]]
DROP = 0  # a "status" in the failure queue: answer half, then hang up


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

    def drop_next(self, count: int) -> None:
        """The next `count` POSTs get half of a 200 answer, then the connection closes."""
        with self._lock:
            self._failures.extend([(DROP, "")] * count)

    def _take_failure(self) -> tuple[int, str] | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None


def start_server(responder: Responder | None, model: str = "tiny", fail_first: int = 0,
                 fail_status: int = 500, lora: "LoRAModels | None" = None
                 ) -> tuple[str, ServerHandle]:
    """Serve `responder` on loopback; the first `fail_first` POSTs get `fail_status`.

    With `lora`, its base model answers for `model`, its adapters for their names.
    """
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

        def _send_text(self, status: int, text: str) -> None:  # vLLM's LoRA endpoints answer text
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _drop(self) -> None:
            data = json.dumps({"choices": [{"index": 0, "text": "half an answ"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # socket.SHUT_RDWR: the client sees the peer hang up

        def do_GET(self):
            handle.requests.append(SeenRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, {}))
            if self.path.rstrip("/") == "/v1/models":
                names = [model] + (lora.names() if lora else [])
                self._send(200, {"object": "list",
                                 "data": [{"id": n, "object": "model"} for n in names]})
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
            if failure is not None and failure[0] == DROP:
                return self._drop()
            if failure is not None:
                return self._send(failure[0], {"error": {"message": failure[1]}})
            path = self.path.rstrip("/")
            if lora is not None and path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
                status, answer = (lora.load if path.endswith("/load_lora_adapter") else lora.unload)(body)
                return (self._send_text(status, answer) if isinstance(answer, str)
                        else self._send(status, answer))
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
            respond = responder
            if lora is not None:
                respond = lora.responder(body.get("model", model), base_name=model)
                if respond is None:  # vLLM's words for a model it does not serve
                    return self._send(404, {"error": {
                        "message": f"The model `{body.get('model')}` does not exist."}})
            outs = respond(prompt, n, float(body.get("temperature", 1.0)),
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
    from store.records import GenRequest

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


class LoRAModels:
    """A base model and the LoRA adapters loaded onto it at run time, the way vLLM serves them.

    Every adapter is a real `HFBackend(base_dir, adapter=lora_path)`: PEFT reads the
    adapter from the path the client sent, and its completions are that adapter's.
    `refuse` makes every load fail with that message (a server whose LoRA slots are full,
    or that cannot read the path). `loads` records each load request's (name, path).
    `max_tokens` caps every completion's length, as a server's own limit would: random
    tiny models never stop by themselves, and the CLI tests must stay fast on a busy CPU.
    """

    def __init__(self, base_dir: str | Path, refuse: str | None = None,
                 max_tokens: int | None = None):
        from agent.llm.hf import HFBackend

        self.base_dir, self.refuse, self.max_tokens = str(base_dir), refuse, max_tokens
        self.base = HFBackend(self.base_dir, dtype="fp32", max_batch=8, batch_wait_s=0.0)
        self.adapters: dict = {}  # name -> HFBackend with that adapter
        self.loads: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        with self._lock:
            return list(self.adapters)

    def responder(self, name: str, base_name: str) -> Responder | None:
        with self._lock:
            backend = self.base if name == base_name else self.adapters.get(name)
        if backend is None:
            return None
        respond, cap = hf_responder(backend), self.max_tokens
        return lambda p, n, t, m: respond(p, n, t, min(m, cap) if cap else m)

    def load(self, body: dict) -> tuple[int, dict | str]:
        from agent.llm.hf import HFBackend

        name, path = body.get("lora_name"), body.get("lora_path")
        self.loads.append((name, path))
        if not name or not path:
            return 400, _vllm_error("lora_name and lora_path are required")
        if self.refuse:
            return 400, _vllm_error(self.refuse)
        with self._lock:
            if name in self.adapters:
                return 400, _vllm_error(f"The lora adapter '{name}' has already been loaded.")
        try:
            backend = HFBackend(self.base_dir, adapter=path, dtype="fp32", max_batch=8,
                                batch_wait_s=0.0)
        except Exception as e:  # noqa: BLE001 - the server reports any load failure
            return 400, _vllm_error(f"Loading lora {name} failed: {type(e).__name__}")
        with self._lock:
            self.adapters[name] = backend
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, body: dict) -> tuple[int, dict | str]:
        name = body.get("lora_name")
        with self._lock:
            backend = self.adapters.pop(name, None)
        if backend is None:
            return 404, _vllm_error(f"The lora adapter '{name}' cannot be found.", 404)
        backend.close()
        return 200, f"Success: LoRA adapter '{name}' removed successfully."

    def close(self) -> None:
        for backend in [self.base, *self.adapters.values()]:
            backend.close()


def _vllm_error(message: str, code: int = 400) -> dict:
    """vLLM's ErrorResponse body."""
    return {"object": "error", "message": message,
            "type": "BadRequestError" if code == 400 else "NotFoundError", "code": code}


def build_lively_adapter(base_dir: str | Path, out: str | Path, seed: int = 2) -> Path:
    """A PEFT LoRA adapter for `base_dir` with random, non-zero weights, saved to `out`.

    A freshly initialised LoRA is the identity (its B is zero); random A and B make the
    adapter change what the model says, so a test can tell whether it was used.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True,
                                                 dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"],
                     init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape) * 0.5)
    peft_model.save_pretrained(out)
    return Path(out)
