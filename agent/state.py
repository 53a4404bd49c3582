"""The graph's state and the agent's configuration."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, TypedDict

from store.records import Action, SearchCall, SearchResult


CHOOSERS = ("perplexity", "rules")


@dataclass
class AgentConfig:
    max_searches: int = 10  # the paper's budget: at most 10 searches a trajectory
    top_k: int = 3  # snippets per search (the paper used about 3)
    samples: int = 1  # K samples per step; the lowest-perplexity parseable one continues
    temperature: float = 0.5  # sampling temperature (the paper's setting)
    greedy: bool = True  # with one sample per step, decode greedily instead of sampling
    max_new_tokens: int = 192  # per sample; an action is one short call
    max_attempts: int = 3  # re-asks of a step whose samples all fail to parse
    fewshot: bool = False  # prepend worked examples (prompted models); off for fine-tuned ones
    # K for some step kinds only, e.g. {"summarize": 8}: more alternatives where the policy is
    # rarely right gives the ranker something right to keep (docs/NOTEBOOK.md).
    samples_by_kind: dict = field(default_factory=dict)
    # Which of K samples the trajectory continues with: "perplexity" (the paper: the lowest),
    # or "rules": the rule judge's first pick, so grow follows the path the judge would keep
    # (reward.rules; pure Python, microseconds a step). Evaluation (K = 1) is unaffected.
    choose: str = "perplexity"

    def __post_init__(self):
        if self.choose not in CHOOSERS:
            raise ValueError(f"choose must be one of {', '.join(CHOOSERS)}, not {self.choose!r}")

    def samples_for(self, kind: str) -> int:
        return int(self.samples_by_kind.get(kind, self.samples))

    def to_dict(self) -> dict:
        d = asdict(self)
        # Defaults left out: run names and configs of earlier runs stay unchanged.
        if not d["samples_by_kind"]:
            del d["samples_by_kind"]
        if d["choose"] == "perplexity":
            del d["choose"]
        return d


def parse_samples_by_kind(specs) -> dict:
    """["summarize=8", "answer=4"] → {"summarize": 8, "answer": 4}; ValueError on a bad one."""
    from store.records import STEP_KINDS

    out = {}
    for spec in specs or []:
        kind, _, k = spec.partition("=")
        if kind not in STEP_KINDS or not k.isdigit() or int(k) < 1:
            raise ValueError(f"--samples-for wants KIND=K with KIND one of {', '.join(STEP_KINDS)} "
                             f"and K >= 1, not {spec!r}")
        out[kind] = int(k)
    return out


class AgentState(TypedDict, total=False):
    question: str
    trajectory_id: Optional[int]
    past: list[Action]  # Search and SelectLink actions so far (the prompt's PAST_ACTIONS)
    remaining: int  # searches left
    query: Optional[str]  # the search the last decide step asked for
    results: list[SearchResult]  # CURRENT_SEARCH_RESULTS for the summarize step
    pending_search: Optional[SearchCall]  # written with the summarize step that reads it
    searches: list[SearchCall]  # every search so far, in order: searches[i] fed summary i
    repeated: bool  # the last search repeated an earlier query: its results are the stored ones
    evidence: Optional[dict]  # the evidence check's verdict on the final answer (agent.evidence)
    answer: Optional[str]  # the answer step's answer
    final_answer: Optional[str]  # after the relevance, grounding and evidence checks
    status: str  # running | finished | failed
    error: Optional[str]
    step_index: int
    resume_at: Optional[str]  # the node to start at when resuming a stored trajectory
