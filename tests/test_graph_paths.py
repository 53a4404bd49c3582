"""Every path through the graph, replayed from cassettes recorded over real HTTP.

The cassettes come from tests/record_graph_cassettes.py (real loopback server, real
BM25 corpus, real tiny model, the real ddgs client offline). Each test replays one with
a real SQLite store and checks the rows the run left behind.
"""

from __future__ import annotations

import json

import pytest

from agent.cassette import Cassette, ReplayLLM, ReplaySearch
from agent.graph import Agent
from store.api import Store
from tests.record_graph_cassettes import SCENARIOS, cassette_path


def replay(name: str, tmp_path):
    sc = SCENARIOS[name]
    cassette = Cassette(cassette_path(name))
    meta = next(r for r in cassette.records() if r["type"] == "meta")
    store = Store(str(tmp_path / "paths.db"))
    run = store.get_or_create_run(f"replay:{name}", "collect")
    claim = store.claim(run.id, None, meta["question"], 0, model="replay")
    agent = Agent(llm=ReplayLLM(cassette), search=ReplaySearch(cassette), store=store,
                  config=sc.config)
    state = agent.run(meta["question"], claim.trajectory_id)
    t = store.trajectory(claim.trajectory_id)
    calls = store.llm_calls(limit=0, trajectory_id=t.id)
    return meta, state, t, calls


def kinds(t):
    return [s.kind for s in t.steps]


def test_search_loop(tmp_path):
    meta, state, t, calls = replay("search_loop", tmp_path)
    assert kinds(t) == ["decide", "summarize", "decide", "summarize", "decide", "answer",
                        "relevance", "grounding"]
    assert t.status == "finished" and state["final_answer"] == meta["final_answer"]
    assert [s.query for s in t.searches] == [p.action["query"] for p in t.steps if p.kind == "decide"
                                             and p.action["name"] == "Search"]
    # each search is stored with the summarize step that read it
    assert all(s.step_id == t.steps[i * 2 + 1].id for i, s in enumerate(t.searches))
    assert all(len(s.results) == 3 for s in t.searches)
    assert len(calls) == len(t.steps) and {c.purpose for c in calls} >= {"decide", "grounding"}
    assert t.final_answer == t.answer  # both checks passed: nothing revised


def test_budget_exhausted_goes_straight_to_answer(tmp_path):
    meta, state, t, _ = replay("budget_exhausted", tmp_path)
    assert kinds(t) == ["decide", "summarize", "answer", "relevance", "grounding"]
    assert len(t.searches) == 1 and state["remaining"] == 0
    assert "REMAINING_SEARCHES = 1" in t.steps[0].prompt


def test_terminate_without_searching(tmp_path):
    _, state, t, _ = replay("terminate_first", tmp_path)
    assert kinds(t) == ["decide", "answer", "relevance", "grounding"]
    assert t.searches == [] and t.steps[0].action["name"] == "Terminate"
    assert "PAST_ACTIONS = []" in t.steps[1].prompt


@pytest.mark.parametrize("check", ["relevance", "grounding"])
def test_failed_check_revises_answer(tmp_path, check):
    meta, state, t, _ = replay(f"{check}_revised", tmp_path)
    step = next(s for s in t.steps if s.kind == check)
    assert step.action["name"] == "Revise_Answer"
    assert t.final_answer == step.action["revised_answer"] == meta["final_answer"]
    assert t.answer != t.final_answer  # both the first and the revised answer are stored
    assert t.answer == next(s for s in t.steps if s.kind == "answer").action["answer"]


def test_unparseable_sample_is_stored_and_skipped(tmp_path):
    _, state, t, _ = replay("unparseable_mixed", tmp_path)
    assert t.status == "finished"
    for step in t.steps:
        assert len(step.samples) == 2
        bad, good = step.samples
        assert bad.action is None and bad.parse_error
        assert good.action is not None and step.chosen_index == 1


def test_no_parseable_sample_fails_the_trajectory(tmp_path):
    _, state, t, calls = replay("unparseable_all", tmp_path)
    assert t.status == "failed" and "no parseable sample" in t.error
    assert kinds(t) == ["decide", "decide"]  # max_attempts=2, both stored
    assert [s.attempt for s in t.steps] == [0, 1]
    assert all(s.status == "unparseable" and s.chosen_index is None for s in t.steps)
    assert len(calls) == 2


def test_search_failure_is_recorded_and_the_agent_goes_on(tmp_path):
    _, state, t, _ = replay("search_failure", tmp_path)
    assert t.status == "finished"
    assert t.searches and all(s.error and "cannot reach DuckDuckGo" in s.error for s in t.searches)
    assert all(s.results == [] for s in t.searches)
    summarize = [s for s in t.steps if s.kind == "summarize"]
    assert summarize and "the search returned nothing" in summarize[0].prompt


def test_replay_of_unrecorded_request_fails_loudly(tmp_path):
    from agent.llm.base import LLMError

    cassette = Cassette(cassette_path("search_loop"))
    agent = Agent(llm=ReplayLLM(cassette), search=ReplaySearch(cassette), store=None)
    state = agent.run("A question nobody recorded?")
    assert state["status"] == "error" and "no recorded response" in state["error"]  # retried on re-run


def test_cassettes_hold_no_secret():
    for path in cassette_path("x").parent.glob("graph_*.jsonl"):
        text = path.read_text()
        assert "sk-not-a-real-key" not in text
        assert all(json.loads(line)["type"] in ("llm", "search", "meta") for line in text.splitlines())


class _Crash(BaseException):
    """Stands in for SIGKILL inside one process: nothing catches it."""


class _CrashAfter:
    def __init__(self, inner, calls: int):
        self.inner, self.left, self.name = inner, calls, inner.name

    def generate(self, request):
        if self.left == 0:
            raise _Crash()
        self.left -= 1
        return self.inner.generate(request)


@pytest.mark.parametrize("crash_at", range(0, 8))
def test_resume_after_a_crash_loses_only_the_step_in_flight(tmp_path, monkeypatch, crash_at):
    sc = SCENARIOS["search_loop"]
    cassette = Cassette(cassette_path("search_loop"))
    meta = next(r for r in cassette.records() if r["type"] == "meta")
    store = Store(str(tmp_path / "resume.db"))
    store.import_questions("q", [{"question": meta["question"]}])
    (q,) = store.questions("q")
    run = store.get_or_create_run("resume", "collect")
    claim = store.claim(run.id, q.id, meta["question"], 0, model="replay")
    crashing = Agent(llm=_CrashAfter(ReplayLLM(cassette), crash_at), search=ReplaySearch(cassette),
                     store=store, config=sc.config)
    with pytest.raises(_Crash):
        crashing.run(meta["question"], claim.trajectory_id)
    assert len(store.trajectory(claim.trajectory_id).steps) == crash_at  # all but the one in flight

    monkeypatch.setattr("store.api._pid_dead", lambda worker: True)  # the crashed worker is gone
    store = Store(str(tmp_path / "resume.db"))  # the new worker
    again = store.claim(run.id, q.id, meta["question"], 0, model="replay")
    assert again.resumed and again.trajectory_id == claim.trajectory_id
    fresh = ReplayLLM(Cassette(cassette_path("search_loop")))
    calls = []

    class Counting:
        name = "replay"

        def generate(self, request):
            calls.append(request)
            return fresh.generate(request)

    agent = Agent(llm=Counting(), search=ReplaySearch(cassette), store=store, config=sc.config)
    state = agent.run(meta["question"], claim.trajectory_id, resume=True)
    t = store.trajectory(claim.trajectory_id)
    assert t.status == "finished" and state["final_answer"] == meta["final_answer"]
    assert [s.kind for s in t.steps] == ["decide", "summarize", "decide", "summarize", "decide",
                                         "answer", "relevance", "grounding"]
    assert [s.idx for s in t.steps] == list(range(8))
    assert len(calls) == 8 - crash_at  # only the steps not stored before the crash were asked
    assert len(t.searches) == 2
