"""Record the graph-path cassettes that tests/test_graph_paths.py replays.

Each scenario is a real run: the agent talks over real HTTP to the loopback
OpenAI-compatible test server, whose answers come from real programs — the pocket
world's scripted reader (agent/worlds/pocket/policy.py) and, for unparseable output, a real
tiny Llama — and searches a real BM25 corpus (or the real ddgs client, offline, for the
search-failure path). Re-record after changing prompts:

    RESTREACT_RECORD=1 python -m tests.record_graph_cassettes
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from agent.state import AgentConfig

CASSETTES = Path(__file__).parent / "cassettes"
WORLD_SEED = 11


@dataclass
class Scenario:
    name: str
    question_type: str  # which pocket question to ask
    config: AgentConfig = field(default_factory=AgentConfig)
    search: str = "corpus"  # corpus | web (offline: fails)
    terminate_first: bool = False  # the decide step stops before searching
    failing_check: str | None = None  # "relevance" | "grounding": that check answers as a careless reader
    garbage_model: str | None = None  # "all": every sample from a random tiny model; "mixed": sample 0 only


SCENARIOS = {s.name: s for s in [
    Scenario("search_loop", "two_hop"),
    Scenario("budget_exhausted", "two_hop", AgentConfig(max_searches=1)),
    Scenario("terminate_first", "one_hop", terminate_first=True),
    Scenario("relevance_revised", "one_hop", failing_check="relevance"),
    Scenario("grounding_revised", "one_hop", failing_check="grounding"),
    Scenario("unparseable_mixed", "one_hop", AgentConfig(samples=2), garbage_model="mixed"),
    Scenario("unparseable_all", "one_hop", AgentConfig(max_attempts=2), garbage_model="all"),
    Scenario("search_failure", "one_hop", AgentConfig(max_searches=2), search="web"),
]}


def cassette_path(name: str) -> Path:
    return CASSETTES / f"graph_{name}.jsonl"


def _responder(sc: Scenario, world: Path, tiny_dir: Path | None):
    from store.records import GenRequest
    from agent.worlds.pocket.policy import ScriptedPolicy

    reader = ScriptedPolicy(world, error_rate=0.0)
    # Careless readers wrongly fail a check now and then: use the first seed that does.
    careless = [ScriptedPolicy(world, error_rate=1.0, seed=seed) for seed in range(64)]
    tiny = None
    if tiny_dir is not None:
        from agent.llm.hf import HFBackend

        tiny = HFBackend(str(tiny_dir), chat=False)

    def respond(prompt: str, n: int, temperature: float, max_tokens: int):
        kind = prompt[prompt.rfind("# restreact "):].split()[2]
        if sc.terminate_first and kind == "decide" and "PAST_ACTIONS = []" in prompt:
            return [('Terminate(thoughts="I will answer from what I know.")', None)] * n
        request = GenRequest(prompt, n=n, temperature=temperature)
        gen = reader.generate(request)
        if kind == sc.failing_check:
            gen = next(g for g in (p.generate(request) for p in careless)
                       if "Revise_Answer" in g.completions[0].text)
        out = [(c.text, None) for c in gen.completions]
        if tiny is not None:
            junk = tiny.generate(GenRequest(prompt[-400:], n=1, max_new_tokens=24)).completions[0].text
            if sc.garbage_model == "all":
                out = [(junk, None)] * n
            else:
                out[0] = (junk, None)
        return out

    return respond


def record(sc: Scenario, out: Path) -> None:
    from agent.cassette import Cassette, RecordingLLM, RecordingSearch
    from agent.graph import Agent
    from agent.llm.openai_compat import OpenAICompatBackend
    from agent.worlds.pocket.build import build_world
    from agent.search.factory import make_search
    from tests.openai_server import start_server
    from tests.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_world(WORLD_SEED, tmp / "world", size="tiny")
        questions = [json.loads(x) for x in (tmp / "world" / "questions.jsonl").read_text().splitlines()]
        q = next(x for x in questions if x["type"] == sc.question_type)
        tiny = build_tiny_model(tmp / "tiny") if sc.garbage_model else None
        base_url, stop = start_server(_responder(sc, tmp / "world", tiny))
        try:
            out.unlink(missing_ok=True)
            cassette = Cassette(out)
            llm = RecordingLLM(OpenAICompatBackend(base_url=base_url, model="pocket-reader",
                                                   api_key="sk-not-a-real-key"), cassette)
            if sc.search == "web":
                search = make_search("web", deadline_s=3.0, max_retries=1)
            else:
                search = make_search("corpus", corpus=str(tmp / "world" / "corpus.jsonl"))
            agent = Agent(llm=llm, search=RecordingSearch(search, cassette), store=None,
                          config=sc.config)
            state = agent.run(q["question"])
            cassette.append({"type": "meta", "question": q["question"], "answer": q["answer"],
                             "status": state["status"], "final_answer": state.get("final_answer")})
        finally:
            stop()


def main() -> None:
    CASSETTES.mkdir(exist_ok=True)
    for sc in SCENARIOS.values():
        record(sc, cassette_path(sc.name))
        print("recorded", cassette_path(sc.name))


if __name__ == "__main__":
    main()
