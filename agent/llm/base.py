"""The one interface every LLM backend implements.

A backend turns a project-rendered prompt (plain text, the code-like prompts of
`agent.prompts`) into K sampled continuations: a `GenRequest` in, a `Generation` out
(both records of `store.records`). It reports the *rendered* prompt it actually fed
the model (after any chat template) so the store, the ranker and the trainer all see
the same text the model saw.

Backends must be thread-safe: `collect` runs trajectories in threads, and the local
backend batches their concurrent requests into one `generate` call.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from store.records import GenRequest, Generation


class LLMError(RuntimeError):
    """A backend could not produce an answer (server down, model missing, ...)."""


@runtime_checkable
class LLM(Protocol):
    name: str

    def generate(self, request: GenRequest) -> Generation: ...
