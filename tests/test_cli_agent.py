"""`ask` and `collect` end to end, offline: the shipped pocket model (a real local
LlamaForCausalLM directory) over the pocket world's BM25 corpus, driven through the CLI,
plus the local backend's batching of concurrent trajectories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.worlds import get_world
from tests.harness import HANG_S

MODEL_DIR = get_world("pocket").model_dir

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (MODEL_DIR / "config.json").is_file(),
                                reason="the pocket model is not in data/pocket/model")


def cli(tmp_path, *args, timeout=HANG_S):
    env = {**os.environ, "RESTREACT_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "--db", str(tmp_path / "r.db"), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def open_store(tmp_path):
    from store.api import Store

    return Store(str(tmp_path / "r.db"))


def test_ask_shows_steps_and_stores_the_trajectory(tmp_path, monkeypatch):
    question = _a_question(tmp_path, monkeypatch)
    p = cli(tmp_path, "ask", "--world", "pocket", "--max-searches", "2", question)
    assert p.returncode in (0, 2), p.stderr  # 2 = the model failed to produce an answer
    assert "decide" in p.stdout and "search" in p.stdout
    store = open_store(tmp_path)
    [t] = store.trajectories()
    t = store.trajectory(t.id)
    assert t.question == question and t.status in ("finished", "failed")
    assert t.steps and t.steps[0].kind == "decide"
    assert t.steps[0].prompt.startswith("<|begin_of_text|><|start_header_id|>user")  # chat template
    assert len(store.llm_calls(limit=0, trajectory_id=t.id)) == len(t.steps)
    if t.status == "finished":
        assert t.final_answer
        assert [s.kind for s in t.steps][-3:] == ["answer", "relevance", "grounding"]


def test_collect_runs_a_split_and_resumes_without_duplicates(tmp_path):
    args = ("collect", "--world", "pocket", "--split", "dev", "--limit", "2",
            "--concurrency", "2", "--max-searches", "2")
    first = cli(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    again = cli(tmp_path, *args)
    assert again.returncode == 0, again.stderr
    assert "2 skipped" in again.stdout.replace("\n", " ")
    store = open_store(tmp_path)
    ts = store.trajectories()
    assert len(ts) == 2 and len({t.question_id for t in ts}) == 2
    assert all(t.status in ("finished", "failed") for t in ts)


def test_concurrent_trajectories_share_generate_calls(tmp_path, monkeypatch):
    """N trajectories at once: fewer generate calls than steps, same greedy results."""
    from agent.collect import Item, collect
    from agent.graph import Agent
    from agent.llm.hf import HFBackend
    from agent.search.corpus import CorpusSearch
    from agent.state import AgentConfig
    from store.api import Store

    monkeypatch.setenv("RESTREACT_CACHE", str(tmp_path / "cache"))
    world = get_world("pocket")
    rows = [r for r in world.question_rows() if r["split"] == "dev"][:3]
    search = CorpusSearch(world.corpus)
    outcomes = {}
    for concurrency in (1, 3):
        store = Store(str(tmp_path / f"c{concurrency}.db"))
        store.import_questions("q", rows)
        llm = HFBackend(str(world.model_dir), dtype="float32", max_batch=16, batch_wait_s=0.05)
        agent = Agent(llm=llm, search=search, store=store, config=AgentConfig(max_searches=2))
        run = store.get_or_create_run("batching", "collect")
        items = [Item(q.id, q.text) for q in store.questions("q")]
        collect(agent, run.id, items, concurrency=concurrency)
        steps = sum(len(store.trajectory(t.id).steps) for t in store.trajectories(run.id))
        outcomes[concurrency] = (llm.generate_calls, steps,
                                 {t.question: (t.status, t.final_answer)
                                  for t in store.trajectories(run.id)})
        llm.close()
    calls3, steps3, answers3 = outcomes[3]
    calls1, steps1, answers1 = outcomes[1]
    assert calls1 == steps1  # one at a time: a generate call per step
    assert calls3 < steps3  # concurrent trajectories were batched together
    assert answers3 == answers1 and steps3 == steps1


def _a_question(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("RESTREACT_CACHE", str(tmp_path / "cache"))
    return next(r["question"] for r in get_world("pocket").question_rows()
                if r["split"] == "test")


def test_samples_for_one_step_kind(tmp_path):
    # The ranker needs alternatives where the policy is rarely right (summaries): K there only.
    p = cli(tmp_path, "collect", "--world", "pocket", "--split", "dev", "--limit", "1",
            "--samples", "1", "--samples-for", "summarize=3", "--max-searches", "2")
    assert p.returncode == 0, p.stderr
    store = open_store(tmp_path)
    steps = [s for t in store.trajectories() for s in store.trajectory(t.id).steps]
    counts = {(s.kind, len(s.samples)) for s in steps}
    assert ("summarize", 3) in counts, counts
    assert all(n == 3 for kind, n in counts if kind == "summarize")
    assert all(n == 1 for kind, n in counts if kind != "summarize")
    [run] = store.runs()
    assert run.config["agent"]["samples_by_kind"] == {"summarize": 3}


def test_samples_for_rejects_an_unknown_kind(tmp_path):
    p = cli(tmp_path, "collect", "--world", "pocket", "--samples-for", "sumarize=3")
    assert p.returncode != 0
    assert p.stderr.strip().splitlines()[-1].startswith("error: --samples-for wants KIND=K")
