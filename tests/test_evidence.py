"""The evidence check, repeated searches and the answer panel's sources.

agent/evidence.py is pure Python: its cases run on the README demo's own numbers (a summary
saying "born in Mifedal in 1975" beside the answer "1926"). The agent's routing around it
— fall back to an earlier grounded answer, else say it could not ground one; answer a repeated
query from the stored results — is driven by a scripted fake model (routing only) over the
real BM25 corpus and a real SQLite store.
"""

from __future__ import annotations

from store.records import SearchResult, SelectLink
from agent.evidence import as_data, check_answer
from tests.test_prompt_injection import HOSTILE

Q = "In what year was Zerstu Braro born?"
SUMMARY = SelectLink(summary="According to [link_id=1], Zerstu Braro was born in Mifedal in 1975.",
                     thoughts="", selected_link_ids=(1,))
PAGE = [SearchResult(1, "Zerstu Braro", "pocket://person/zerstu-braro",
                     "Zerstu Braro was born in Mifedal in 1975. She studied at Kolvar University."),
        SearchResult(2, "Zerstu Trukow", "pocket://person/zerstu-trukow", "Zerstu Trukow was born in 1926.")]


def test_the_demo_contradiction_fails_and_the_right_year_passes():
    bad = check_answer("1926 [link_id=1]", [SUMMARY], [PAGE])
    assert not bad.ok and bad.missing == ["1926"] and "1926" in bad.reason()
    good = check_answer("1975 [link_id=1]", [SUMMARY], [PAGE])
    assert good.ok and good.claim == ["1975"]
    # cited results count as evidence too, but only the cited link: 1926 is on link 2
    assert check_answer("Kolvar University [link_id=1]", [SUMMARY], [PAGE]).ok
    assert not check_answer("1926 [link_id=1]", [SUMMARY], [PAGE]).ok
    # an uncited answer is checked against everything the trajectory read
    assert check_answer("1926", [SUMMARY], [PAGE]).ok


def test_the_claim_must_stand_in_one_source():
    other = SelectLink(summary="According to [link_id=1], Mifedal lies in Osk.", thoughts="",
                       selected_link_ids=(1,))
    # "Osk 1975" is spread over two summaries: no one source states it
    assert not check_answer("Osk 1975 [link_id=1]", [SUMMARY, other], [PAGE, []]).ok
    assert check_answer("Zerstu Braro, 1975 [link_id=1]", [SUMMARY], [PAGE]).ok
    # a name blended from the question ("Zerstu Braro") and another summary is in no one source
    assert not check_answer("Mifedal Braro [link_id=1]", [other], [[]]).ok
    assert check_answer("Unknown", [], []).ok  # no claim, nothing to ground


def test_orders_in_evidence_support_nothing():
    page = [SearchResult(1, "Fan page", "https://x.example/fan", HOSTILE[0] + " Acme was founded in 1990.")]
    summary = SelectLink(summary="According to [link_id=1], " + HOSTILE[0], thoughts="",
                         selected_link_ids=(1,))
    q = "When was Acme founded?"
    assert not check_answer("Banana [link_id=1]", [summary], [page]).ok
    assert check_answer("1990 [link_id=1]", [summary], [page]).ok  # the data is still data
    for hostile in HOSTILE[2:6]:  # fake calls and prompt lines are not evidence either
        assert "Banana" not in as_data(hostile), hostile


# --- the agent: routing with a scripted model ------------------------------------------


class Script:
    """Answers each step kind from a fixed table (routing tests only)."""

    name = "script"

    def __init__(self, replies: dict[str, list[str]]):
        self.replies, self.prompts = {k: list(v) for k, v in replies.items()}, []

    def generate(self, request):
        from store.records import Completion, Generation

        self.prompts.append((request.purpose, request.prompt))
        queue = self.replies[request.purpose]
        text = queue.pop(0) if len(queue) > 1 else queue[0]
        return Generation(rendered_prompt=request.prompt, completions=[Completion(text, 5, -1.0)],
                          model=self.name)


class CountingSearch:
    name = "corpus"

    def __init__(self):
        self.queries = []

    def search(self, query, k=3):
        self.queries.append(query)
        return PAGE[:k]


def _run(tmp_path, replies, max_searches=3):
    from agent.graph import Agent
    from agent.state import AgentConfig
    from store.api import Store

    store = Store(str(tmp_path / "e.db"))
    store.import_questions("q", [{"question": Q}])
    run = store.get_or_create_run("e", "collect")
    claim = store.claim(run.id, store.questions("q")[0].id, Q)
    llm, search = Script(replies), CountingSearch()
    events = []
    agent = Agent(llm=llm, search=search, store=store, config=AgentConfig(max_searches=max_searches),
                  on_event=lambda kind, payload: events.append((kind, payload)))
    state = agent.run(Q, claim.trajectory_id)
    return state, store.trajectory(claim.trajectory_id), llm, search, events


SELECT = 'SelectLink(summary="According to [link_id=1], Zerstu Braro was born in Mifedal in 1975.", thoughts="", selected_link_ids=[1])'
PASS = "Check_Answer(passed=True)"


def test_a_contradicted_answer_the_model_passed_is_not_the_final_answer(tmp_path):
    state, t, _, _, events = _run(tmp_path, {
        "decide": ['Search(query="Zerstu Braro", thoughts="")', 'Terminate(thoughts="done")'],
        "summarize": [SELECT], "answer": ['Answer(thoughts="", answer="1926 [link_id=1]")'],
        "relevance": [PASS], "grounding": [PASS]})
    assert t.status == "finished" and t.answer == "1926 [link_id=1]"
    assert "could not ground" in t.final_answer and "1926" in t.final_answer
    [(_, ev)] = [e for e in events if e[0] == "evidence"]
    assert ev["evidence"]["ok"] is False and ev["evidence"]["missing"] == ["1926"]


def test_falls_back_to_the_grounded_first_answer_when_a_check_revised_it_away(tmp_path):
    state, t, _, _, _ = _run(tmp_path, {
        "decide": ['Search(query="Zerstu Braro", thoughts="")', 'Terminate(thoughts="done")'],
        "summarize": [SELECT], "answer": ['Answer(thoughts="", answer="1975 [link_id=1]")'],
        "relevance": [PASS],
        "grounding": ['Revise_Answer(thoughts="", revised_answer="1926 [link_id=1]")']})
    assert t.final_answer == "1975 [link_id=1]" == state["final_answer"]


def test_a_repeated_query_is_answered_from_the_stored_results_and_the_prompt_says_so(tmp_path):
    from agent.live import citations
    from agent.prompts import REPEATED_QUERY

    state, t, llm, search, _ = _run(tmp_path, {
        "decide": ['Search(query="Zerstu Braro", thoughts="")', 'Search(query="zerstu  braro", thoughts="")',
                   'Terminate(thoughts="done")'],
        "summarize": [SELECT], "answer": ['Answer(thoughts="", answer="1975 [link_id=1]")'],
        "relevance": [PASS], "grounding": [PASS]})
    assert search.queries == ["Zerstu Braro"]  # the backend was asked once
    assert [c.backend for c in t.searches] == ["corpus", "repeat"]
    assert t.searches[0].results == t.searches[1].results
    summarize = [p for kind, p in llm.prompts if kind == "summarize"]
    assert REPEATED_QUERY not in summarize[0] and REPEATED_QUERY in summarize[1]
    # the two summaries cite the same page: the panel lists it once, with its title and URL
    assert citations(state) == [(1, "Zerstu Braro", "pocket://person/zerstu-braro", "Zerstu Braro")]


def test_resume_after_the_grounding_step_runs_the_evidence_check(tmp_path):
    from agent.graph import Agent
    from agent.state import AgentConfig
    from store.api import Store

    state, t, _, _, _ = _run(tmp_path, {
        "decide": ['Search(query="Zerstu Braro", thoughts="")', 'Terminate(thoughts="done")'],
        "summarize": [SELECT], "answer": ['Answer(thoughts="", answer="1926 [link_id=1]")'],
        "relevance": [PASS], "grounding": [PASS]})
    from sqlalchemy import text

    store = Store(str(tmp_path / "e.db"))  # as if stopped by Ctrl-C just after grounding
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE trajectories SET status='interrupted', worker='gone:1:x'"))
    run = store.get_run("e")
    claim = store.claim(run.id, store.questions("q")[0].id, Q)
    assert claim.resumed
    agent = Agent(llm=Script({}), search=CountingSearch(), store=store, config=AgentConfig(max_searches=3))
    again = agent.run(Q, claim.trajectory_id, resume=True)  # no model call is left to make
    assert again["final_answer"] == t.final_answer and again["evidence"]["ok"] is False
    assert len(store.trajectory(claim.trajectory_id).steps) == len(t.steps)


def test_one_link_id_of_two_searches_names_each_search_in_the_panel():
    from rich.console import Console

    from agent.live import citations, render_final
    from store.records import SearchCall

    other = [SearchResult(1, "Mifedal", "pocket://city/mifedal", "Mifedal lies in Osk.")]
    second = SelectLink(summary="According to [link_id=1], Mifedal lies in Osk.", thoughts="",
                        selected_link_ids=(1,))
    state = {"status": "finished", "final_answer": "Osk [link_id=1]", "past": [SUMMARY, second],
             "searches": [SearchCall("Zerstu Braro", "corpus", PAGE), SearchCall("Mifedal", "corpus", other)]}
    assert [c[3] for c in citations(state)] == ["Zerstu Braro", "Mifedal"]
    out = Console(width=200, record=True, color_system=None)
    render_final(state, out)
    text = out.export_text()
    assert "(from the search 'Zerstu Braro')" in text and "(from the search 'Mifedal')" in text
    state["searches"] = state["searches"][:1]  # one source only: no search named
    state["past"] = [SUMMARY]
    out = Console(width=200, record=True, color_system=None)
    render_final(state, out)
    assert "from the search" not in out.export_text()
