"""Which sample a trajectory continues with: the lowest perplexity, or the rule judge's pick.

Routing only, so a scripted two-sample LLM stands in for the model: its likelier sample
searches for a name that is in neither the question nor any summary (the rule judge marks
that bad), the other one searches for what the question asks. The agent does not know the
judge: the chooser is injected (reward.choosers), as the CLI does.
"""

from __future__ import annotations

import pytest

from agent import prompts
from agent.graph import Agent
from store.records import Completion, Generation
from agent.search.base import SearchBackend
from agent.state import CHOOSERS, AgentConfig
from reward.choosers import CHOOSERS as REWARD_CHOOSERS
from reward.choosers import choose_by_rules, chooser_for

QUESTION = "Who founded Acme?"
INVENTED = 'Search(query="Zorblat Quenn biography", thoughts="look her up")'
ON_TOPIC = 'Search(query="founder of Acme", thoughts="find who founded Acme")'


class TwoSamples:
    """Returns the invented search (likelier) and the on-topic one, for any prompt."""

    def generate(self, request):
        both = [Completion(INVENTED, n_tokens=10, logprob=-1.0),
                Completion(ON_TOPIC, n_tokens=10, logprob=-8.0)]
        return Generation(rendered_prompt=request.prompt, completions=both[:request.n])


class NoSearch(SearchBackend):
    name = "none"

    def search(self, query, top_k):
        return []


def _first_step(choose: str, samples: int = 2):
    agent = Agent(llm=TwoSamples(), search=NoSearch(), store=None,
                  config=AgentConfig(samples=samples, greedy=False, choose=choose),
                  chooser=chooser_for(choose))
    state = {"question": QUESTION, "past": [], "remaining": 3, "step_index": 0}
    step, _ = agent.step(state, "decide", prompts.render_decide(QUESTION, [], 3))
    return step


def test_perplexity_continues_with_the_likelier_sample():
    assert _first_step("perplexity").chosen == 0


def test_rules_continue_with_the_sample_the_judge_passes():
    step = _first_step("rules")
    assert step.chosen == 1 and step.action.query == "founder of Acme"
    assert len(step.samples) == 2  # both alternatives are still stored for the ranker


def test_one_sample_is_taken_as_it_is():
    assert _first_step("rules", samples=1).chosen == 0


def test_an_unknown_chooser_is_refused():
    with pytest.raises(ValueError, match="choose must be one of perplexity, rules"):
        AgentConfig(choose="judge")
    with pytest.raises(ValueError, match="choose must be one of perplexity, rules"):
        chooser_for("judge")
    assert "choose" not in AgentConfig().to_dict()  # default left out: old run names hold


def test_every_configurable_chooser_has_one_to_inject():
    assert set(REWARD_CHOOSERS) == set(CHOOSERS)
    assert chooser_for("perplexity") is None and chooser_for("rules") is choose_by_rules


def test_a_judge_chooser_without_its_callable_is_refused():
    """choose="rules" with nothing injected would silently follow perplexity: refused."""
    with pytest.raises(ValueError, match="needs its chooser"):
        Agent(llm=TwoSamples(), search=NoSearch(), store=None,
              config=AgentConfig(samples=2, choose="rules"))


def test_an_injected_chooser_reaches_the_workers_through_the_order(tmp_path):
    """The work order is JSON: the chooser travels by name and comes back the same function."""
    from agent.collect import Item
    from agent.setup import AgentOptions, SetupError
    from agent.workers import WorkOrder, prepare_options

    opts = AgentOptions(model="scripted:pocket", config=AgentConfig(samples=2, choose="rules"),
                        chooser=choose_by_rules)
    order = WorkOrder.make(1, [Item(1, "q", 0)], opts, workers=2)
    assert order.options["chooser"] == "reward.choosers:choose_by_rules"
    back = WorkOrder.load(order.save(tmp_path / "order.json")).agent_options()
    assert back.chooser is choose_by_rules and back.config.choose == "rules"
    assert WorkOrder.make(1, [], AgentOptions(model="m"), workers=2).agent_options().chooser is None
    opts.chooser = lambda kind, prompt, samples: 0
    with pytest.raises(SetupError, match="module-level function"):
        prepare_options(None, opts, 2)


def test_collect_choose_rules_follows_the_judge_through_the_cli(tmp_path):
    """`collect --choose rules`: every stored step continues with the rule judge's first pick,
    and the run's name and config say so (a perplexity run of the same options stays apart)."""
    from reward.rules import judge_step
    from store.api import Store
    from tests.harness import cli_env, run_cli

    db, env = tmp_path / "s.db", cli_env(tmp_path)
    base = ["--db", str(db), "collect", "--world", "pocket", "--model", "scripted:pocket:0.5",
            "--split", "train", "--limit", "3", "--samples", "4"]
    for choose in ("rules", "perplexity"):
        r = run_cli(base + ["--choose", choose], env)
        assert r.returncode == 0, r.stderr[-2000:]
    store = Store(str(db))
    runs = {r.config["agent"].get("choose", "perplexity"): r for r in store.runs()}
    assert set(runs) == {"rules", "perplexity"} and runs["rules"].name != runs["perplexity"].name
    differ = 0
    for choose, run in runs.items():
        steps = store.steps_of_run(run.id, status="finished", min_samples=2)
        assert steps, "no step with alternatives was stored"
        for st in steps:
            samples = sorted(st.samples, key=lambda x: x.idx)
            pick = judge_step(st.kind, st.prompt, samples).order[0]
            if choose == "rules":
                assert st.chosen_index == pick, (st.kind, st.chosen_index, pick)
            else:
                differ += st.chosen_index != pick
    assert differ > 0, "the perplexity run never left the judge's pick: the test cannot tell them apart"
