"""The records that flow prompt → store → ranker → training: actions, steps, searches, generations.

These small dataclasses are the spine of restreact. The same objects render the next
prompt (`agent.prompts`), are written to the store (`store.api`), are shown to the
ranker (`reward.ranker`) and become training examples (`trainer.examples`). Keep them
plain: everything must round-trip through JSON (`to_dict` / `from_dict`).

This module is the bottom layer: it imports nothing else of the project, so every
layer above (store, backends, agent, reward, trainer, CLI) can share it
(tests/test_layers.py checks that).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Literal, Union

StepKind = Literal["decide", "summarize", "answer", "relevance", "grounding"]
STEP_KINDS: tuple[str, ...] = ("decide", "summarize", "answer", "relevance", "grounding")


# --- actions: what a model output means once parsed -------------------------------


@dataclass(frozen=True)
class Search:
    query: str
    thoughts: str
    name: str = "Search"


@dataclass(frozen=True)
class Terminate:
    thoughts: str
    name: str = "Terminate"


@dataclass(frozen=True)
class SelectLink:
    """The summarize step's result: a grounded summary citing the links it used."""

    summary: str
    thoughts: str
    selected_link_ids: tuple[int, ...]
    name: str = "SelectLink"


@dataclass(frozen=True)
class Answer:
    thoughts: str
    answer: str
    name: str = "Answer"


@dataclass(frozen=True)
class CheckAnswer:
    passed: bool
    name: str = "Check_Answer"


@dataclass(frozen=True)
class ReviseAnswer:
    thoughts: str
    revised_answer: str
    name: str = "Revise_Answer"


Action = Union[Search, Terminate, SelectLink, Answer, CheckAnswer, ReviseAnswer]
ACTION_TYPES: dict[str, type] = {
    "Search": Search,
    "Terminate": Terminate,
    "SelectLink": SelectLink,
    "Answer": Answer,
    "Check_Answer": CheckAnswer,
    "Revise_Answer": ReviseAnswer,
}


def action_to_dict(action: Action | None) -> dict | None:
    if action is None:
        return None
    d = asdict(action)
    if "selected_link_ids" in d:
        d["selected_link_ids"] = list(d["selected_link_ids"])
    return d


def action_from_dict(d: dict | None) -> Action | None:
    if not d:
        return None
    d = dict(d)
    cls = ACTION_TYPES[d.pop("name")]
    if cls is SelectLink:
        d["selected_link_ids"] = tuple(d["selected_link_ids"])
    return cls(**d)


# --- search ----------------------------------------------------------------------


@dataclass
class SearchResult:
    """One hit, in the same shape for web and local corpus backends."""

    link_id: int
    title: str
    url: str
    snippet: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SearchResult":
        return cls(int(d["link_id"]), str(d["title"]), str(d["url"]), str(d["snippet"]))


@dataclass
class SearchCall:
    query: str
    backend: str
    results: list[SearchResult] = field(default_factory=list)
    error: str | None = None
    latency_s: float = 0.0


# --- samples and steps -----------------------------------------------------------


@dataclass
class Sample:
    """One sampled continuation of a step prompt."""

    text: str
    n_tokens: int = 0
    logprob: float | None = None  # sum of token log-probabilities, when the backend gives them
    action: Action | None = None
    parse_error: str | None = None

    @property
    def perplexity(self) -> float | None:
        if self.logprob is None or self.n_tokens <= 0:
            return None
        import math

        return math.exp(min(-self.logprob / self.n_tokens, 700.0))  # servers send -9999 at times

    @property
    def parsed(self) -> bool:
        return self.action is not None


@dataclass
class Step:
    """One LLM step of a trajectory: the verbatim prompt, K samples, the chosen one."""

    kind: StepKind
    prompt: str  # exactly the text the model was given (after any chat template)
    samples: list[Sample]
    chosen: int | None  # index into samples; None when no sample parsed
    latency_s: float = 0.0
    prompt_tokens: int = 0
    attempt: int = 0
    index: int = 0  # position within the trajectory

    @property
    def action(self) -> Action | None:
        return None if self.chosen is None else self.samples[self.chosen].action

    @property
    def completion_tokens(self) -> int:
        return sum(s.n_tokens for s in self.samples)



# --- generations: what an LLM backend is asked and what it answers -----------------


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
