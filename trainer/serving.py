"""improve's rollouts on an OpenAI-compatible server that loads each iteration's adapter (vLLM).

The loop names its policy as (base model, adapter): the base is the local directory every
adapter trains on (`improve --base`), the adapter an iteration's output. With rollouts
served, `ServedRollouts.route` turns that pair into the server's model (`--model
openai:NAME`) with the same adapter, and the openai backend loads the adapter into the
server the first time it is asked for (agent/llm/lora_server.py). So once an iteration's
adapter is trained, the rollouts that use it (its evaluation, and the next grow when it is
promoted) run on the server through it. A resumed run asks for it again under the same
name, which the server takes as already loaded.

    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve /models/base --enable-lora ...
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 python cli.py improve --model openai:/models/base \\
        --base /models/base --questions qa.jsonl
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


class ServingError(ValueError):
    """The server or the base model cannot serve the loop; one line for the user."""


@dataclass(frozen=True)
class ServedRollouts:
    model: str  # "openai:NAME": the base model as the server names it
    base: str  # the local directory of the server's base weights; every adapter trains on it

    def route(self, model: str, adapter: Optional[str]) -> tuple[str, Optional[str]]:
        """The model spec and adapter the rollout backend is built from for (model, adapter).

        The loop's base model runs on the server, with the adapter loaded into it; any other
        model (a teacher) is left as it is.
        """
        return (self.model, adapter) if model == self.base else (model, adapter)

    def check(self, workers: int = 1) -> None:
        """Fail now, before anything is written, when the base or a server cannot work."""
        if not (Path(self.base) / "config.json").is_file():
            raise ServingError(f"--base {self.base} is not a local model directory (no "
                               "config.json): adapters train on the server's base weights")
        for url in _server_urls(workers):
            self._check_server(url)

    def _check_server(self, url: Optional[str]) -> None:
        from agent.llm.base import LLMError
        from agent.llm.lora_server import LoRAServer
        from agent.llm.openai_compat import ServerHTTP

        http = ServerHTTP(url, max_retries=1, backoff_s=0.2)
        try:
            served = LoRAServer(http).models()
        except LLMError as e:
            raise ServingError(str(e)) from None
        finally:
            http.close()
        name = self.model[len("openai:"):]
        if name and name not in served:
            raise ServingError(f"{http.public_url()} does not serve {name!r} (it lists "
                               f"{', '.join(served) or 'nothing'})")


def _server_urls(workers: int) -> list[Optional[str]]:
    """The servers the rollouts reach: with worker processes, those RESTREACT_OPENAI_BASE_URLS
    lists (agent/workers.py); else the one OPENAI_BASE_URL names (None: the default)."""
    import os

    from agent.workers import BASE_URLS_ENV

    urls = [u.strip() for u in os.environ.get(BASE_URLS_ENV, "").split(",") if u.strip()]
    return urls if workers > 1 and urls else [None]


def served_rollouts(model: str, base_dir: Optional[str], world_model: Optional[str],
                    load_in_4bit: bool, workers: int) -> Optional[ServedRollouts]:
    """improve's rollouts on an OpenAI-compatible server, or None for a local --model.

    `world_model` is the chosen world's model folder, the default base. ServingError on a
    combination that cannot work, before anything is written.
    """
    if not model.startswith("openai:"):
        if base_dir:
            raise ServingError("--base applies to --model openai:NAME (a local --model is its own base)")
        return None
    if load_in_4bit:
        raise ServingError("--4bit applies to local rollouts; with --model openai: the server "
                           "holds the model")
    base_dir = base_dir or world_model
    if not base_dir:
        raise ServingError("--model openai:NAME needs --base DIR: the local copy of the served "
                           "model that each iteration's adapter trains on")
    serving = ServedRollouts(model=model, base=str(Path(base_dir).expanduser().resolve()))
    serving.check(workers)
    return serving
