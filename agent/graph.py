"""The agent as a LangGraph graph — the whole wiring is in `build_graph`.

    decide ──Search──► search ──► summarize ──► decide …
       └──Terminate (or budget spent)──► answer ──► relevance ──► grounding ──► evidence ──► END

Every node that calls the model goes through `Agent.step`, which samples K outputs,
parses them, keeps the lowest-perplexity parseable one and writes the step (prompt,
samples, LLM call, the search it read) to the store in one transaction. `evidence` calls
no model: it checks that a cited source states the final answer's claim
(agent/evidence.py) and, when none does, falls back to an earlier grounded answer or says
the answer could not be grounded. A search repeating an earlier query of the trajectory is
answered from that query's results, and the summarize prompt says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

from agent import interrupt, prompts
from agent.llm.base import LLM, LLMError
from agent.parsing import parse_action
from agent.search.base import SearchBackend, SearchError
from agent.state import AgentConfig, AgentState
from store.api import ClaimLost
from store.records import (
    Answer,
    CheckAnswer,
    GenRequest,
    ReviseAnswer,
    Sample,
    Search,
    SearchCall,
    SearchResult,
    SelectLink,
    Step,
)

REPEAT_BACKEND = "repeat"  # a search answered from the same query's earlier results


def earlier_search(searches: list[SearchCall], query: str) -> SearchCall | None:
    """The trajectory's earlier successful search for the same query (case and spacing
    aside), whose results a repeat is answered from."""
    key = " ".join(query.lower().split())
    return next((c for c in searches if not c.error and " ".join(c.query.lower().split()) == key),
                None)


Event = Callable[[str, dict], None]  # ("step" | "search" | "evidence" | "final", payload)
# (kind, rendered prompt, samples) -> the index to continue with, or None to fall back to the
# lowest perplexity. The caller injects one for AgentConfig.choose other than "perplexity"
# (the CLI passes reward.rules.choose_by_rules for "rules"): the agent knows no judge.
Chooser = Callable[[str, str, list[Sample]], Optional[int]]


class StepFailed(RuntimeError):
    """No sample of a step parsed after all attempts: the trajectory ends as failed."""


@dataclass
class Agent:
    llm: LLM
    search: SearchBackend
    store: object  # store.api.Store, or None for a dry run
    config: AgentConfig = field(default_factory=AgentConfig)
    on_event: Optional[Event] = None
    chooser: Optional[Chooser] = None  # used when config.choose is not "perplexity"

    def __post_init__(self):
        if self.config.choose != "perplexity" and self.chooser is None:
            raise ValueError(f"choose={self.config.choose!r} needs its chooser: pass Agent(chooser=...)")
        self.graph = build_graph(self)

    # --- one model step -----------------------------------------------------------

    def step(self, state: AgentState, kind: str, prompt: str) -> tuple[Step, dict]:
        """Sample, parse, choose, store. Returns the step and state updates."""
        if self.config.fewshot:
            prompt = prompts.with_examples(kind, prompt)
        cfg = self.config
        index = state.get("step_index", 0)
        searches = [state["pending_search"]] if state.get("pending_search") else []
        for attempt in range(cfg.max_attempts):
            interrupt.raise_if_requested()  # a thread of `collect` stops before its next call
            n = cfg.samples_for(kind)
            request = GenRequest(prompt=prompt, n=n,
                                 temperature=0.0 if n == 1 and cfg.greedy else cfg.temperature,
                                 max_new_tokens=cfg.max_new_tokens, purpose=kind)
            t0 = time.perf_counter()
            gen = self.llm.generate(request)
            samples = [Sample(c.text, c.n_tokens, c.logprob, *parse_action(kind, c.text))
                       for c in gen.completions]
            step = Step(kind=kind, prompt=gen.rendered_prompt, samples=samples,
                        chosen=self._choose(kind, gen.rendered_prompt, samples),
                        latency_s=time.perf_counter() - t0, prompt_tokens=gen.prompt_tokens, attempt=attempt, index=index)
            if self.store is not None and state.get("trajectory_id") is not None:
                self.store.add_step(state["trajectory_id"], step, gen, request, searches)
            searches = []  # written once, with the first attempt
            index += 1
            self._emit("step", {"step": step})
            if step.chosen is not None:
                return step, {"step_index": index, "pending_search": None}
        raise StepFailed(f"{kind}: no parseable sample after {cfg.max_attempts} attempts")

    def _choose(self, kind: str, prompt: str, samples: list[Sample]) -> int | None:
        """The sample the trajectory continues with (AgentConfig.choose)."""
        if self.config.choose != "perplexity" and len(samples) > 1:
            pick = self.chooser(kind, prompt, samples)
            if pick is not None:
                return pick
        return choose_sample(samples)

    def _emit(self, kind: str, payload: dict) -> None:
        if self.on_event:
            self.on_event(kind, payload)

    # --- nodes ----------------------------------------------------------------------

    def decide(self, state: AgentState) -> dict:
        prompt = prompts.render_decide(state["question"], state["past"], state["remaining"])
        step, upd = self.step(state, "decide", prompt)
        if isinstance(step.action, Search):
            return {**upd, "query": step.action.query, "past": state["past"] + [step.action]}
        return {**upd, "query": None}

    def do_search(self, state: AgentState) -> dict:
        query = state["query"]
        interrupt.raise_if_requested()
        t0 = time.perf_counter()
        earlier = earlier_search(state.get("searches") or [], query)
        if earlier is not None:  # the same query again: the stored results, no new search
            call = SearchCall(query=query, backend=REPEAT_BACKEND,
                              results=[SearchResult(**r.to_dict()) for r in earlier.results])
        else:
            call = SearchCall(query=query, backend=getattr(self.search, "name", "search"))
            try:
                call.results = self.search.search(query, self.config.top_k)
            except SearchError as e:
                call.error = str(e)  # recorded; the summarize step sees an empty result list
        call.latency_s = time.perf_counter() - t0
        self._emit("search", {"call": call, "repeated": earlier is not None})
        return {"results": call.results, "pending_search": call, "repeated": earlier is not None,
                "searches": (state.get("searches") or []) + [call],
                "remaining": state["remaining"] - 1}

    def summarize(self, state: AgentState) -> dict:
        prompt = prompts.render_summarize(state["question"], state["past"], state["query"],
                                          state["results"], repeated=state.get("repeated", False))
        step, upd = self.step(state, "summarize", prompt)
        return {**upd, "past": state["past"] + [step.action], "results": [], "repeated": False}

    def answer(self, state: AgentState) -> dict:
        prompt = prompts.render_answer(state["question"], state["past"])
        step, upd = self.step(state, "answer", prompt)
        assert isinstance(step.action, Answer)
        return {**upd, "answer": step.action.answer, "final_answer": step.action.answer}

    def check(self, kind: str, state: AgentState) -> dict:
        prompt = prompts.render_check(kind, state["question"], state["past"],
                                      state["final_answer"])
        step, upd = self.step(state, kind, prompt)
        if isinstance(step.action, ReviseAnswer):
            return {**upd, "final_answer": step.action.revised_answer}
        assert isinstance(step.action, CheckAnswer)
        return upd

    def evidence(self, state: AgentState) -> dict:
        """The deterministic evidence check on the final answer (no model call)."""
        from agent.evidence import cannot_ground, check_answer

        summaries = [a for a in state["past"] if isinstance(a, SelectLink)]
        sources = [c.results for c in state.get("searches") or []]
        final = state["final_answer"]
        verdict = check_answer(final, summaries, sources)
        chosen, first = final, state.get("answer")
        if not verdict.ok:  # the first answer, if a check revised it away and it is stated
            grounded = first and first != final and check_answer(first, summaries, sources).ok
            chosen = first if grounded else cannot_ground(verdict)
        result = {"ok": verdict.ok, "checked": final, "claim": verdict.claim,
                  "missing": verdict.missing, "reason": verdict.reason(),
                  "revised_answer": None if chosen == final else chosen}
        self._emit("evidence", {"evidence": result})
        return {"final_answer": chosen, "evidence": result}

    # --- running a trajectory -----------------------------------------------------

    def run(self, question: str, trajectory_id: int | None = None,
            resume: bool = False) -> AgentState:
        """Run one trajectory to the end; the store row is finished either way.

        With `resume`, the trajectory's stored steps are replayed into the state and the
        graph starts at the node after the last finished step (a crash loses one step).
        """
        state: AgentState = {"question": question, "trajectory_id": trajectory_id, "past": [],
                             "remaining": self.config.max_searches, "results": [],
                             "status": "running", "step_index": 0, "pending_search": None,
                             "searches": []}
        if resume and self.store is not None and trajectory_id is not None:
            stored = self.store.trajectory(trajectory_id)
            state = resume_state(state, stored.steps, stored.searches)
        try:
            state = self.graph.invoke(state, {"recursion_limit": 8 * self.config.max_searches + 40})
            state["status"] = "finished"
        except StepFailed as e:
            state["status"], state["error"] = "failed", str(e)
        except LLMError as e:  # the backend, not the model, failed: a re-run tries again
            state["status"], state["error"] = "error", str(e)
        except ClaimLost as e:
            state["status"], state["error"] = "lost", str(e)
            return state  # another worker owns the row now
        except interrupt.Interrupted as e:  # the step in flight is dropped; the rest is kept
            if self.store is not None and trajectory_id is not None:
                self.store.interrupt_trajectory(trajectory_id, str(e))
            raise
        if self.store is not None and trajectory_id is not None:
            self.store.finish_trajectory(trajectory_id, state["status"], answer=state.get("answer"),
                                         final_answer=state.get("final_answer"),
                                         error=state.get("error"))
        self._emit("final", {"state": state})
        return state


def choose_sample(samples: list[Sample]) -> int | None:
    """Lowest perplexity among parseable samples; the first parseable one if no logprobs."""
    best, best_ppl = None, None
    for i, s in enumerate(samples):
        if not s.parsed:
            continue
        ppl = s.perplexity
        if best is None or (ppl is not None and (best_ppl is None or ppl < best_ppl)):
            best, best_ppl = i, ppl
    return best


# --- resuming: the state after a trajectory's stored steps ------------------------------

def resume_state(state: AgentState, rows, searches=()) -> AgentState:
    """Replay stored steps and searches (store rows, in order) into `state` and say where
    to go on. Every stored search was written with the summarize step that read it."""
    from store.records import Terminate, action_from_dict

    state = dict(state)
    state["searches"] = [SearchCall(query=c.query, backend=c.backend, error=c.error,
                                    results=[SearchResult.from_dict(r) for r in c.results or []])
                         for c in searches if c.step_id is not None]
    at = "decide"
    for row in rows:
        state["step_index"] = row.idx + 1
        action = action_from_dict(row.action) if row.chosen_index is not None else None
        if action is None:
            continue  # an attempt whose samples did not parse: the step is asked again
        if row.kind == "decide":
            if isinstance(action, Search):
                state["past"] = state["past"] + [action]
                state["query"] = action.query
                at = "search" if state["remaining"] > 0 else "answer"
            else:
                assert isinstance(action, Terminate)
                state["query"], at = None, "answer"
        elif row.kind == "summarize":
            state["past"] = state["past"] + [action]
            state["remaining"] -= 1  # its search happened: searches are stored with it
            at = "decide" if state["remaining"] > 0 else "answer"
        elif row.kind == "answer":
            state["answer"] = state["final_answer"] = action.answer
            at = "relevance"
        elif row.kind in ("relevance", "grounding"):
            if isinstance(action, ReviseAnswer):
                state["final_answer"] = action.revised_answer
            at = "grounding" if row.kind == "relevance" else "evidence"
    state["resume_at"] = at
    return state


def entry(state: AgentState) -> Literal["decide", "search", "answer", "relevance", "grounding",
                                       "evidence"]:
    """Where a run starts: decide, or after the last stored step when resuming."""
    return state.get("resume_at") or "decide"


# --- routers: each returns the name of the next node ------------------------------------


def after_decide(state: AgentState) -> Literal["search", "answer"]:
    return "search" if state.get("query") and state["remaining"] > 0 else "answer"


def after_summarize(state: AgentState) -> Literal["decide", "answer"]:
    return "decide" if state["remaining"] > 0 else "answer"


def build_graph(agent: Agent):
    from langgraph.graph import END, START, StateGraph

    g = StateGraph(AgentState)
    g.add_node("decide", agent.decide)
    g.add_node("search", agent.do_search)
    g.add_node("summarize", agent.summarize)
    g.add_node("answer", agent.answer)
    g.add_node("relevance", lambda s: agent.check("relevance", s))
    g.add_node("grounding", lambda s: agent.check("grounding", s))
    g.add_node("evidence", agent.evidence)
    g.add_conditional_edges(START, entry)
    g.add_conditional_edges("decide", after_decide)
    g.add_edge("search", "summarize")
    g.add_conditional_edges("summarize", after_summarize)
    g.add_edge("answer", "relevance")
    g.add_edge("relevance", "grounding")
    g.add_edge("grounding", "evidence")
    g.add_edge("evidence", END)
    return g.compile()
