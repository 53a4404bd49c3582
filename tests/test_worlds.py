"""The world registry (agent/worlds): a world chosen by name turns into ordinary agent options,
and `scripted:WORLD` into its teacher; the Improver takes a world through the same options."""

from __future__ import annotations

import json

import pytest

from agent.llm.base import LLMError
from store.records import GenRequest
from agent.setup import AgentOptions, SetupError, make_model
from agent.worlds import UnknownWorld, get_world, scripted_model, world_names


@pytest.fixture
def tiny_world(tmp_path):
    where = tmp_path / "world"
    get_world("pocket").build(3, where, size="tiny")
    return where


def _question(where) -> str:
    return json.loads((where / "questions.jsonl").read_text().splitlines()[0])["question"]


def _first_step(llm, question: str) -> str:
    from agent.prompts import render_decide

    return llm.generate(GenRequest(render_decide(question, [], 10))).completions[0].text


def test_an_unknown_world_is_one_clear_error():
    assert "pocket" in world_names()
    with pytest.raises(UnknownWorld, match="unknown world 'atlantis'; worlds: pocket"):
        get_world("atlantis")
    with pytest.raises(SetupError, match="unknown world 'atlantis'"):
        AgentOptions(world="atlantis").resolved()


def test_a_world_fills_in_model_corpus_and_search_and_explicit_options_win(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTREACT_CACHE", str(tmp_path / "cache"))
    world = get_world("pocket")
    opts = AgentOptions(world="pocket").resolved()
    assert (opts.model, opts.corpus, opts.search) == (str(world.model_dir), str(world.corpus), "corpus")
    assert world.corpus.is_file() and world.corpus.is_relative_to(tmp_path / "cache")
    mine = AgentOptions(world="pocket", model="other", corpus="c.jsonl", search="frozen").resolved()
    assert (mine.model, mine.corpus, mine.search) == ("other", "c.jsonl", "frozen")


def test_scripted_spec_names_a_world_or_a_built_world_folder(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setenv("RESTREACT_CACHE", str(tmp_path / "cache"))
    by_folder = make_model(f"scripted:{tiny_world}:0.5")
    assert by_folder.error_rate == 0.5 and _first_step(by_folder, _question(tiny_world))
    assert make_model(f"scripted:{tiny_world}").error_rate == 0.3  # the teacher's default
    assert make_model("scripted:pocket:0").error_rate == 0.0
    with pytest.raises(LLMError, match="no-world"):
        scripted_model(f"scripted:{tmp_path / 'no-world'}:0.3")
    with pytest.raises(LLMError, match="adapter do not apply"):
        make_model("scripted:pocket", adapter="some/lora")


def test_the_oracle_reads_the_world_right_where_the_teacher_slips(tmp_path, monkeypatch):
    from agent.graph import Agent
    from agent.search.corpus import CorpusSearch
    from agent.state import AgentConfig
    from reward.autoeval import exact_match

    monkeypatch.setenv("RESTREACT_CACHE", str(tmp_path / "cache"))
    world = get_world("pocket")
    rows = [r for r in world.question_rows() if r["split"] == "dev"][:6]
    search = CorpusSearch(world.corpus)

    def right(llm) -> int:
        agent = Agent(llm=llm, search=search, store=None, config=AgentConfig(samples=1))
        return sum(exact_match(agent.run(r["question"])["final_answer"] or "", r["answer"])
                   for r in rows)

    assert right(world.oracle()) == len(rows)
    assert right(world.teacher(0.9)) < len(rows)


def test_improve_options_refuse_what_cannot_work_before_any_store():
    from trainer.improve import ImproveOptions

    for bad, message in [({"trajectories": "best"}, "--trajectories must be one of all, clean"),
                         ({"grow_choose": "judge"}, "--grow-choose must be one of"),
                         ({"samples": 1, "samples_by_kind": {"summarize": 8}}, "--samples-for"),
                         ({"train_processes": 0}, "--train-processes must be at least 1"),
                         ({"workers": 0}, "--workers must be at least 1")]:
        with pytest.raises(ValueError, match=message):
            ImproveOptions(world="pocket", **bad).check()
    ImproveOptions(world="pocket").check()


def test_an_improve_run_is_named_by_its_config_and_the_world_gives_its_questions(store, tmp_path,
                                                                                monkeypatch):
    """Same options, same run (resuming); another setting, another run. The world's question
    set is imported by prepare(), after the model has loaded."""
    from trainer.improve import ImproveOptions, Improver

    monkeypatch.setenv("RESTREACT_CACHE", str(tmp_path / "cache"))

    def opened(**kw):
        opts = ImproveOptions(world="pocket", model="scripted:pocket", workdir=str(tmp_path), **kw)
        return Improver(store, opts, log=lambda m: None).prepare()

    first = opened()
    world = get_world("pocket")
    assert first.cfg.question_set == world.question_set and store.has_question_set(world.question_set)
    assert first.cfg.name.startswith(f"improve:{world.question_set}:")
    assert opened().improve_run.id == first.improve_run.id
    other = opened(max_batch_tokens=4096)
    assert other.cfg.name != first.cfg.name and other.cfg.train["max_batch_tokens"] == 4096
    assert "max_batch_tokens" not in first.cfg.train  # left out at its default: old names hold
