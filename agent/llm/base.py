"""The one interface every LLM backend implements.

A backend turns a project-rendered prompt (plain text, the code-like prompts of
`agent.prompts`) into K sampled continuations. It reports the *rendered* prompt it
actually fed the model (after any chat template) so the store, the ranker and the
trainer all see the same text the model saw.

Backends must be thread-safe: `collect` runs trajectories in threads, and the local
backend batches their concurrent requests into one `generate` call.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class GenRequest:
    prompt: str  # the project's prompt text (the user message when a chat template applies)
    n: int = 1  # number of samples (K)
    temperature: float = 0.0  # 0 = greedy; with n > 1 and temperature 0 backends use 0.5
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    purpose: str = ""  # step kind or "rank"/"eval"; logged, not part of the cache key

    def key(self) -> str:
        """Stable hash of what determines the answer: used by cassettes."""
        body = {k: v for k, v in asdict(self).items() if k != "purpose"}
        body["stop"] = list(self.stop)
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class Completion:
    text: str
    n_tokens: int = 0
    logprob: float | None = None  # sum over the completion's tokens


@dataclass
class Generation:
    rendered_prompt: str  # what the model saw, verbatim
    completions: list[Completion]
    prompt_tokens: int = 0
    duration_s: float = 0.0
    model: str = ""
    options: dict = field(default_factory=dict)


class LLMError(RuntimeError):
    """A backend could not produce an answer (server down, model missing, ...)."""


@runtime_checkable
class LLM(Protocol):
    name: str

    def generate(self, request: GenRequest) -> Generation: ...
