"""Dependencies point one way. The rule this test enforces, on every import of the project
(read with `ast` from tests/import_graph.py, function-level and TYPE_CHECKING imports included):

1. Layers, lowest first: records (store/records.py) < store < protocol (agent/prompts.py,
   agent/parsing.py, agent/words.py: the text the agent and a model exchange) < backends
   (agent/llm, agent/search, agent/cassette.py, agent/retry.py, the offline worlds, and the
   file readers and interrupt flag they share: agent/inputs.py, agent/interrupt.py) < agent < reward
   < trainer < cli < scripts (tests/ and benchmarks/, which the wheel does not install and
   which may use each other). A module imports its own layer or lower ones, never a higher one,
   not even lazily inside a function. So the store imports nothing of the agent, and the
   agent nothing of reward or trainer: what a lower layer needs from a higher one (the
   step chooser a judge provides) is passed in as a callable.
2. store/records.py imports nothing of the project: every layer can share the records.
3. Reward and trainer use the agent only through its public modules (AGENT_PUBLIC in
   tests/import_graph.py: setup, graph, state, collect, workers, questions_io — build and
   run an agent, grow and evaluate with it); the rest of the agent layer (the CLI's views)
   is internal. Everything below the agent layer (records, store, protocol, backends) is
   open to all.
4. No product module takes a private (`_name`) name from another top-level package.
5. Records are imported from store.records itself, not relayed through another module.
6. No import cycle between the product's top-level packages (store, agent, reward, trainer,
   cli).

`python -m tests.import_graph` prints the layer arrows; `--dot` the module graph.
"""

from __future__ import annotations

import textwrap

import pytest

from tests import import_graph as g


def test_the_project_keeps_its_layers():
    found = g.breaches(g.graph())
    assert not found, "\n".join(found)


def test_every_module_has_a_layer_and_the_records_import_nothing():
    mods = g.modules()
    assert {"store.records", "store.api", "agent.graph", "reward.rules", "trainer.sft", "cli"} <= set(mods)
    assert {m: g.layer_of(m) for m in ("store.records", "store.api", "agent.parsing",
                                       "agent.llm.factory", "agent.graph", "cli")} == {
        "store.records": "records", "store.api": "store", "agent.parsing": "protocol",
        "agent.llm.factory": "backends", "agent.graph": "agent", "cli": "cli"}
    for m in mods:
        g.layer_of(m)  # raises for a module outside every layer
    assert [e for e in g.graph() if e.source == "store.records"] == []


def _tree(root, files: dict[str, str]):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for pkg in ("agent", "agent/llm", "store", "reward", "trainer"):
        (root / pkg).mkdir(parents=True, exist_ok=True)
        (root / pkg / "__init__.py").touch()


def test_the_checker_finds_each_kind_of_breach(tmp_path):
    """A small tree with one breach of each rule, most of them hidden inside functions."""
    _tree(tmp_path, {
        "store/records.py": """
            class Step: ...
            def helper():
                from store import api
        """,
        "store/api.py": """
            from store.records import Step
            def save(step):
                from agent.graph import Agent  # store -> agent
        """,
        "agent/llm/base.py": "from store.records import Step\n",
        "agent/console.py": "def show(): ...\n",
        "agent/graph.py": """
            from store import api
            from agent.llm.base import Step  # a record relayed through another module
            class Agent:
                def choose(self):
                    from reward.rules import judge  # agent -> reward
        """,
        "reward/rules.py": """
            from agent.graph import Agent
            from .verdicts import _parse
            def judge():
                from agent.console import show  # not the agent's public interface
                from trainer.sft import _private  # reward -> trainer, and a private name
        """,
        "reward/verdicts.py": "def _parse(): ...\n",
        "trainer/sft.py": "_private = 1\n",
    })
    found = "\n".join(g.breaches(g.graph(tmp_path), tmp_path))
    for expected in (
        "store.records imports store.api; the records import nothing",
        "store.records:4: store.records (records) imports store.api (store), a higher layer",
        "store.api:4: store.api (store) imports agent.graph (agent), a higher layer",
        "agent.graph:6: agent.graph (agent) imports reward.rules (reward), a higher layer",
        "agent.graph:3: agent.graph takes Step from agent.llm.base; records come from store.records",
        "reward.rules:5: reward.rules imports agent.console, not one of the agent's public modules",
        "reward.rules:6: reward.rules (reward) imports trainer.sft (trainer), a higher layer",
        "reward.rules imports _private from trainer.sft: a private name of another package",
        "import cycle between packages: agent -> reward -> agent",
        "import cycle between packages: store -> agent -> store",
    ):
        assert expected in found, f"{expected!r} not in:\n{found}"
    # a relative import inside one package is resolved, and a private name there is fine
    assert "_parse" not in found and "reward.verdicts" not in found


def test_the_graph_prints_as_text_and_as_dot(capsys):
    assert g.main([]) == 0
    text = capsys.readouterr().out
    assert "store -> records" in text and "0 breach(es)" in text
    assert g.main(["--dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith("digraph imports {") and dot.rstrip().endswith("}")
    assert 'subgraph "cluster_records"' in dot and '"store.api" -> "store.records";' in dot
    assert '"agent.graph" -> "reward.' not in dot and '"store.api" -> "agent.' not in dot


@pytest.mark.parametrize("module,layer", [("agent.worlds.pocket.policy", "backends"),
                                          ("agent.worlds.pocket.world", "backends"),
                                          ("agent.retry", "backends"),
                                          ("benchmarks.analysis.headroom", "scripts")])
def test_nested_modules_take_their_longest_prefix(module, layer):
    assert g.layer_of(module) == layer
