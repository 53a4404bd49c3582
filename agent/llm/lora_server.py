"""LoRA adapters loaded into a running OpenAI-compatible server at run time (vLLM).

vLLM started with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` and `--enable-lora` answers
`POST /v1/load_lora_adapter {"lora_name", "lora_path"}` and
`POST /v1/unload_lora_adapter {"lora_name"}`; a loaded adapter is then one more model, and
its name goes in a request's "model" (docs/SCALING.md has the command line).

`use_adapter(backend, path)` is what `--model openai:NAME --adapter DIR` does: it loads the
adapter into the backend's server and points the backend at it. The server reads
`lora_path` from its own disk, so the path sent is the adapter's absolute path here: the
server runs on this host or sees the same path on a shared disk.

An adapter's name comes from its path and its weights file's size and modification time:
the same adapter always gets the same name, so loading it again (another worker, a resumed
run) is a no-op, and an adapter retrained at the same path gets a new name instead of the
server's stale copy.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from agent.llm.base import LLMError
from agent.llm.openai_compat import OpenAICompatBackend, ServerHTTP, ServerRefused

LOAD_PATH = "/load_lora_adapter"
UNLOAD_PATH = "/unload_lora_adapter"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def adapter_name(path: str | Path) -> str:
    """A stable, readable server-side name for the adapter directory at `path`."""
    path = Path(path).resolve()
    weights = next((path / w for w in WEIGHTS if (path / w).is_file()), path / "adapter_config.json")
    stat = weights.stat()
    digest = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    readable = "-".join(p for p in path.parts[-3:] if p not in ("/", "adapter"))
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', readable)[-48:]}-{digest}"


def check_adapter_dir(path: str | Path) -> Path:
    """The adapter's absolute path; LLMError when it is not a saved PEFT adapter."""
    path = Path(path).expanduser().resolve()
    if not (path / "adapter_config.json").is_file():
        raise LLMError(f"not a LoRA adapter directory (no adapter_config.json): {path}")
    return path


class LoRAServer:
    """The runtime-LoRA endpoints of one server, over the same HTTP client as generation."""

    def __init__(self, http: ServerHTTP):
        self.http = http

    def load(self, path: str | Path) -> str:
        """Load the adapter at `path` (once) and return the name to generate with."""
        path = check_adapter_dir(path)
        name = adapter_name(path)
        try:
            self.http.request("POST", LOAD_PATH, json={"lora_name": name, "lora_path": str(path)},
                              expect_json=False)
        except ServerRefused as e:
            if "already" in e.message.lower():  # the same name means the same adapter files
                return name
            where = self.http.public_url()
            if e.status in (404, 405):  # vLLM adds the route only with runtime updating on
                raise LLMError(f"{where} cannot load LoRA adapters at run time (no {LOAD_PATH}): "
                               "start vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and "
                               "--enable-lora") from None
            raise LLMError(f"{where} refused to load the LoRA adapter {path} "
                           f"({e.status}): {e.message}") from None
        return name

    def unload(self, name: str) -> bool:
        """Free the server's slot for `name`; False when the server no longer had it."""
        try:
            self.http.request("POST", UNLOAD_PATH, json={"lora_name": name}, expect_json=False)
        except ServerRefused as e:
            if name in e.message:  # "The lora adapter 'NAME' cannot be found."
                return False
            raise
        return True

    def models(self) -> list[str]:
        """The names the server serves now: its base model and every loaded adapter."""
        listed = self.http.request("GET", "/models").get("data") or []
        return [str(m["id"]) for m in listed if isinstance(m, dict) and "id" in m]


def use_adapter(backend: OpenAICompatBackend, path: str | Path) -> OpenAICompatBackend:
    """Load the adapter at `path` into `backend`'s server; the backend then generates with it."""
    backend.set_model(LoRAServer(backend.http).load(path))
    return backend
