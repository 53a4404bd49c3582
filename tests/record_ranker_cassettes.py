"""Record the ranker cassettes from a real HTTP judge: `RESTREACT_RECORD=1 python -m tests.record_ranker_cassettes`.

The judge is an OpenAI-compatible server on loopback (tests/openai_server.py) whose
replies are written by the rule judge: it reads the ranking prompt it is sent back into
the step prompt and the K outputs, judges them with `reward.rules.judge_step`, and
answers in the ranker's reply format. For some step kinds it answers the way real
judges go wrong instead — no Ranking line, a ranking that is not a permutation, an
empty reply — so the unparseable path is recorded from real traffic too.

The same run data (`build_run`) is rebuilt by the replay tests in tests/test_ranker.py,
so the recorded requests match exactly; a change to the ranking prompt makes replay
miss loudly until the cassettes are re-recorded with this script.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

from agent.prompts import (
    render_action,
    render_answer,
    render_check,
    render_decide,
    render_summarize,
)
from store.records import (
    Answer,
    CheckAnswer,
    ReviseAnswer,
    Sample,
    Search,
    SearchResult,
    SelectLink,
    Step,
    Terminate,
)
from reward.rules import judge_step
from reward.verdicts import format_ranking_reply

CASSETTES = Path(__file__).parent / "cassettes"
RULES_HTTP_CASSETTE = CASSETTES / "ranker_rules_http.jsonl"
JUDGE_MODEL = "rules-over-http"
JUDGE_NAME = f"openai:{JUDGE_MODEL}"

# How the served judge answers, by the kind of step it is shown.
MALFORMED = {
    "summarize": "Explanation: The first summary is grounded; the second invents a year.\nAnswer: #1",
    "relevance": "Explanation: Both look fine.\nAnswer: #1\nRanking: #1 > #1",
    "grounding": "",
}

# --- the run the ranker is pointed at -------------------------------------------------------

Q = "Which river flows through the city where the painter of Blue Harbour was born?"
S1 = Search(query="painter of Blue Harbour", thoughts="First find the painter.")
L1 = SelectLink(summary="According to [link_id=2], Blue Harbour was painted by Mira Olsen, born in Tarsk.",
                thoughts="Link 2 names the painter and her birthplace.", selected_link_ids=(2,))
S2 = Search(query="river Tarsk", thoughts="Now the river of Tarsk.")
L2 = SelectLink(summary="According to [link_id=1], the Vell river flows through Tarsk.",
                thoughts="Link 1 answers the second hop.", selected_link_ids=(1,))
R1 = [SearchResult(1, "Harbour paintings", "https://example.org/1", "A list of harbour scenes."),
      SearchResult(2, "Mira Olsen", "https://example.org/2",
                   "Mira Olsen, born in Tarsk, painted Blue Harbour in 1921.")]
R2 = [SearchResult(1, "Vell", "https://example.org/3", "The Vell river flows through Tarsk.")]
FINAL = "The Vell river [link_id=1], through Tarsk [link_id=2]."


def _step(kind: str, prompt: str, outputs: list[str], index: int,
          logprobs: list[float] | None = None) -> Step:
    """A step whose samples carry perplexities (by default, later samples less likely)."""
    from agent.parsing import parse_action

    samples = []
    for j, text in enumerate(outputs):
        action, error = parse_action(kind, text)
        logprob = logprobs[j] if logprobs else -4.0 - 3.0 * j
        samples.append(Sample(text, n_tokens=20, logprob=logprob, action=action, parse_error=error))
    chosen = next((j for j, s in enumerate(samples) if s.action is not None), None)
    return Step(kind=kind, prompt=prompt, samples=samples, chosen=chosen, index=index)


def river_steps() -> list[Step]:
    """A two-hop trajectory: every kind of step, most with several samples."""
    a = render_action
    return [
        _step("decide", render_decide(Q, [], 10),
              [a(S1), a(Search("river Paris", "Guess a city.")), "Search(query='painter"], 0),
        _step("summarize", render_summarize(Q, [S1], S1.query, R1),
              [a(L1), a(SelectLink("According to [link_id=2], Mira Olsen painted it in 1922.", "t", (2,)))], 1),
        _step("decide", render_decide(Q, [S1, L1], 9),
              [a(S2), a(Search("Painter of Blue Harbour", "again")), a(Terminate("Enough."))], 2,
              logprobs=[-10.0, -4.0, -6.0]),  # the Terminate is likelier than the good Search
        _step("summarize", render_summarize(Q, [S1, L1, S2], S2.query, R2), [a(L2)], 3),  # K=1
        _step("decide", render_decide(Q, [S1, L1, S2, L2], 8),
              [a(Search("Vell river length", "More detail.")), a(Terminate("Both hops are answered."))], 4),
        _step("answer", render_answer(Q, [S1, L1, S2, L2]),
              [a(Answer("Born in Tarsk; the Vell flows there.", FINAL)), a(Answer("Guess.", "The Rhine."))], 5),
        _step("relevance", render_check("relevance", Q, [], FINAL),
              [a(CheckAnswer(True)), a(ReviseAnswer("Shorter.", "The Vell [link_id=1]."))], 6),
        _step("grounding", render_check("grounding", Q, [S1, L1, S2, L2], FINAL),
              [a(CheckAnswer(True)), a(ReviseAnswer("Hedge.", "Perhaps the Danube [link_id=1]."))], 7),
    ]


def build_run(store, run_name: str = "grow-1") -> int:
    """Write the run the ranker is tested on: two finished trajectories and a running one."""
    run = store.get_or_create_run(run_name, "grow")
    t1 = store.claim(run.id, None, Q, sample_index=0, model="tiny")
    for step in river_steps():
        store.add_step(t1.trajectory_id, step)
    store.finish_trajectory(t1.trajectory_id, "finished", answer=FINAL, final_answer=FINAL)

    q2 = "Who founded Acme?"
    t2 = store.claim(run.id, None, q2, sample_index=1, model="tiny")
    store.add_step(t2.trajectory_id, _step("decide", render_decide(q2, [], 10), [
        render_action(Search("Acme founder", "Look it up.")),
        render_action(Search("Acme founder", "")),
    ], 0))
    store.finish_trajectory(t2.trajectory_id, "finished", answer=None, final_answer=None)

    t3 = store.claim(run.id, None, "Where is Lowtown?", sample_index=2, model="tiny")  # still running
    store.add_step(t3.trajectory_id, _step("decide", render_decide("Where is Lowtown?", [], 10), [
        render_action(Search("Lowtown", "Find it.")), render_action(Search("Lowtown location", "x"))], 0))
    return run.id


# --- the judge served over HTTP ------------------------------------------------------------

_OUTPUT = re.compile(r"\n\n\*\*\* Model Output #(\d+)\n")


def split_rank_prompt(prompt: str) -> tuple[str, list[str]]:
    """The step prompt and the outputs a ranking prompt shows (its inverse, for the server)."""
    seen = prompt.split("\n*** Model Can See:\n", 1)[1]
    seen = seen.rsplit("\n\n*** Your Verdict\n", 1)[0]
    parts = _OUTPUT.split(seen)
    return parts[0], parts[2::2]


def rules_over_http(prompt: str, n: int, temperature: float, max_tokens: int):
    """Responder for tests/openai_server.py: the rule judge's verdict as the reply text."""
    step_prompt, outputs = split_rank_prompt(prompt)
    kind = re.search(r"# restreact (\w+) ", step_prompt).group(1)
    reply = MALFORMED[kind] if kind in MALFORMED else format_ranking_reply(
        judge_step(kind, step_prompt, outputs))
    return [(reply, None)] * n


def record(path: Path = RULES_HTTP_CASSETTE) -> dict:
    """Rank `build_run`'s steps through the served judge, recording every call to `path`."""
    from agent.cassette import Cassette, RecordingLLM
    from agent.llm.openai_compat import OpenAICompatBackend
    from reward.ranker import rank_run
    from store.api import Store
    from tests.openai_server import start_server

    path.unlink(missing_ok=True)
    base_url, stop = start_server(rules_over_http, model=JUDGE_MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/record.db")
        try:
            run_id = build_run(store)
            llm = RecordingLLM(OpenAICompatBackend(base_url=base_url, model=JUDGE_MODEL, max_retries=0),
                               Cassette(path))
            return rank_run(store, run_id, llm, JUDGE_NAME)
        finally:
            store.close()
            stop()


if __name__ == "__main__":
    if os.environ.get("RESTREACT_RECORD") != "1":
        sys.exit("set RESTREACT_RECORD=1 to overwrite the ranker cassettes")
    print(record())
