"""The ranker against real judges: a judge served over HTTP, replayed from its cassette, and the rules.

The HTTP judge (tests/record_ranker_cassettes.py) answers with the rule judge's verdict
for most step kinds and with the malformed replies real judges produce for the others,
so both the ok and the unparseable paths run on recorded real traffic.
"""

from __future__ import annotations

import pytest

from agent.cassette import Cassette, LLMReplayMiss, ReplayLLM
from agent.llm.base import LLMError
from agent.llm.openai_compat import OpenAICompatBackend
from reward.prompts import RANK_PROMPT_VERSION, render_rank_prompt
from reward.ranker import prompt_version, rank_request, rank_run, rank_step
from reward.rules import RULES_VERSION, judge_step
from reward.verdicts import parse_ranking
from store.api import Store
from store.models import LLMCall, Ranking
from tests.openai_server import start_server
from tests.record_ranker_cassettes import (
    JUDGE_MODEL,
    JUDGE_NAME,
    MALFORMED,
    RULES_HTTP_CASSETTE,
    build_run,
    river_steps,
    rules_over_http,
    split_rank_prompt,
)

RERECORD = "re-record with RESTREACT_RECORD=1 python -m tests.record_ranker_cassettes"


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'rank.db'}")
    yield s
    s.close()


@pytest.fixture
def judge_server():
    base_url, stop = start_server(rules_over_http, model=JUDGE_MODEL)
    yield base_url, stop
    stop()


def rankings(store, judge: str) -> dict[int, Ranking]:
    with store.session() as s:
        return {r.step_id: r for r in s.query(Ranking).filter(Ranking.judge == judge)}


def rank_calls(store) -> list[LLMCall]:
    with store.session() as s:
        return list(s.query(LLMCall).filter(LLMCall.purpose == "rank").order_by(LLMCall.id))


def check_stored_rankings(store, run_id: int) -> None:
    """Every ranked step holds the served verdict (or is unparseable, raw reply kept)."""
    candidates = store.steps_of_run(run_id, status="finished", min_samples=2)
    stored = rankings(store, JUDGE_NAME)
    assert set(stored) == {st.id for st in candidates}
    for st in candidates:
        r = stored[st.id]
        assert r.prompt_version == RANK_PROMPT_VERSION
        if st.kind in MALFORMED:
            assert r.status == "unparseable" and r.best_index is None and r.order == []
            assert r.raw == MALFORMED[st.kind] and r.explanation  # the parse error, recorded
        else:
            expected = judge_step(st.kind, st.prompt, [s.text for s in st.samples])
            assert r.status == "ok"
            assert (r.best_index, r.order, r.bad) == (expected.best, expected.order, expected.bad)
            assert r.explanation == expected.explanation and r.raw.startswith("Explanation:")


# --- replayed from the recorded HTTP judge --------------------------------------------------


def test_rank_run_replays_the_recorded_http_judge(store):
    run_id = build_run(store)
    llm = ReplayLLM(Cassette(RULES_HTTP_CASSETTE), name=JUDGE_NAME)
    counts = rank_run(store, run_id, llm, JUDGE_NAME)
    assert counts["errors"] == 0, RERECORD
    # 7 multi-sample steps in the river trajectory + 1 in the Acme one; the K=1 step and
    # the still-running trajectory are not candidates.
    assert counts == {"steps": 8, "skipped": 0, "ok": 5, "unparseable": 3, "errors": 0}
    check_stored_rankings(store, run_id)
    calls = rank_calls(store)
    assert len(calls) == 8
    assert all(c.model == JUDGE_NAME and c.options["temperature"] == 0.0 and c.trajectory_id
               and c.step_id for c in calls)
    assert all(c.prompt.startswith(f"# restreact ranker {RANK_PROMPT_VERSION}") for c in calls)


def test_the_acme_step_is_judged_on_its_empty_thoughts(store):
    run_id = build_run(store)
    rank_run(store, run_id, ReplayLLM(Cassette(RULES_HTTP_CASSETTE)), JUDGE_NAME)
    acme = [st for st in store.steps_of_run(run_id) if "Acme" in st.prompt][0]
    r = rankings(store, JUDGE_NAME)[acme.id]
    assert r.order == [0, 1] and r.bad == [1] and "empty thoughts" in r.explanation


def test_rank_run_is_resumable_and_does_not_call_the_judge_again(store):
    run_id = build_run(store)
    llm = ReplayLLM(Cassette(RULES_HTTP_CASSETTE))
    rank_run(store, run_id, llm, JUDGE_NAME)
    seen = []
    again = rank_run(store, run_id, llm, JUDGE_NAME, progress=lambda done, total: seen.append((done, total)))
    assert again == {"steps": 8, "skipped": 8, "ok": 0, "unparseable": 0, "errors": 0}
    assert seen[-1] == (8, 8) and len(seen) == 8
    assert len(rank_calls(store)) == 8


def test_a_prompt_the_cassette_never_saw_fails_loudly(store):
    run_id = build_run(store)
    steps = store.steps_of_run(run_id, min_samples=2)
    step = steps[0]
    step.samples[0].text += " "  # a different ranking prompt
    with pytest.raises(LLMReplayMiss):
        rank_step(ReplayLLM(Cassette(RULES_HTTP_CASSETTE)), step, JUDGE_NAME)


# --- live against the HTTP judge ---------------------------------------------------------------


def test_live_http_judge_makes_exactly_the_recorded_requests(store, judge_server):
    """The cassette is current: a live run sends the same requests and gets the same replies."""
    base_url, stop = judge_server
    run_id = build_run(store)
    llm = OpenAICompatBackend(base_url=base_url, model=JUDGE_MODEL, max_retries=0)
    counts = rank_run(store, run_id, llm, JUDGE_NAME)
    assert counts["ok"] == 5 and counts["unparseable"] == 3
    check_stored_rankings(store, run_id)
    recorded = Cassette(RULES_HTTP_CASSETTE).records("llm")
    sent = [r.body["messages"][0]["content"] for r in stop.requests if r.path.endswith("/chat/completions")]
    assert sent == [rec["request"]["prompt"] for rec in recorded], RERECORD
    replies = [c.response for c in rank_calls(store)]
    assert replies == [rec["generation"]["completions"][0]["text"] for rec in recorded]


def test_judge_errors_leave_steps_unranked_for_the_next_pass(store, judge_server):
    base_url, stop = judge_server
    run_id = build_run(store)
    llm = OpenAICompatBackend(base_url=base_url, model=JUDGE_MODEL, max_retries=0)
    llm.model  # resolve the name first: the injected failures hit ranking calls only
    stop.fail_next(2, 500)
    counts = rank_run(store, run_id, llm, JUDGE_NAME)
    assert counts["errors"] == 2 and counts["ok"] + counts["unparseable"] == 6
    assert len(rankings(store, JUDGE_NAME)) == 6
    second = rank_run(store, run_id, llm, JUDGE_NAME)
    assert second["skipped"] == 6 and second["errors"] == 0 and second["ok"] + second["unparseable"] == 2
    check_stored_rankings(store, run_id)


def test_a_judge_that_keeps_failing_stops_the_pass(store, judge_server):
    base_url, stop = judge_server
    run_id = build_run(store)
    llm = OpenAICompatBackend(base_url=base_url, model=JUDGE_MODEL, max_retries=0)
    llm.model
    stop.fail_next(3, 503)
    with pytest.raises(LLMError):
        rank_run(store, run_id, llm, JUDGE_NAME)
    assert rankings(store, JUDGE_NAME) == {}


# --- the rule judge and in-memory steps --------------------------------------------------------


def test_rules_judge_ranks_without_an_llm_under_its_own_version(store):
    run_id = build_run(store)
    counts = rank_run(store, run_id, None, "rules")
    assert counts == {"steps": 8, "skipped": 0, "ok": 8, "unparseable": 0, "errors": 0}
    stored = rankings(store, "rules")
    assert {r.prompt_version for r in stored.values()} == {RULES_VERSION} == {prompt_version("rules")}
    assert rank_calls(store) == []
    for st in store.steps_of_run(run_id, min_samples=2):
        # the stored raw reply parses back to the stored verdict
        back = parse_ranking(stored[st.id].raw, len(st.samples))
        assert (back.best, back.order, back.bad) == (stored[st.id].best_index, stored[st.id].order,
                                                      stored[st.id].bad)
    # From the store the rules also see perplexities and break ties among good samples by
    # them; the HTTP judge sees texts only and keeps the original order.
    second = [st for st in store.steps_of_run(run_id) if st.idx == 2][0]
    assert stored[second.id].order == [2, 0, 1] and stored[second.id].bad == [1]
    assert judge_step("decide", second.prompt, [s.text for s in second.samples]).order == [0, 2, 1]


def test_rank_step_takes_an_in_memory_step_over_http(judge_server):
    base_url, _ = judge_server
    step = river_steps()[4]  # decide after both hops: Terminate preferred
    llm = OpenAICompatBackend(base_url=base_url, model=JUDGE_MODEL, max_retries=0)
    v = rank_step(llm, step, JUDGE_NAME)
    assert v.ok and v.best == 1 and v.order == [1, 0] and v.bad == []
    assert rank_step(None, step, "rules").order == [1, 0]


def test_rank_request_shows_the_step_verbatim_and_asks_greedily():
    step = river_steps()[0]
    req = rank_request(step)
    assert (req.n, req.temperature, req.max_new_tokens, req.purpose) == (1, 0.0, 512, "rank")
    assert req.prompt == render_rank_prompt(step.prompt, [s.text for s in step.samples])
    assert split_rank_prompt(req.prompt) == (step.prompt, [s.text for s in step.samples])
    assert "*** Model Can See:\n" + step.prompt in req.prompt
    assert "*** Model Output #3\n" + step.samples[2].text in req.prompt


def test_improve_reranks_earlier_grow_runs_after_a_rules_version_change(store, tmp_path):
    """Rankings are keyed by version and the build reads only the current one: after a
    rubric change, a resumed improve must rank the earlier grow runs again, not train on
    the new run alone."""
    from trainer.improve import ImproveOptions, Improver

    judges = []
    opts = ImproveOptions(name="imp", model="tiny", workdir=str(tmp_path))
    imp = Improver(store, opts, make_judge=judges.append, log=lambda m: None).open("none")
    first = build_run(store, "imp:grow:1")
    for st in store.steps_of_run(first, status="finished", min_samples=2):  # an older rubric's
        store.add_ranking(st.id, "rules", "rules-v0", status="ok", best_index=0, order=[0, 1])
    imp.mark(1, "rank")  # marked done before the stage recorded its version
    second = store.get_run(build_run(store, "imp:grow:2"))

    imp.rank(2, second)
    ranked = store.ranked_step_ids("rules", RULES_VERSION)
    for run_id in (first, second.id):
        assert {st.id for st in store.steps_of_run(run_id, status="finished", min_samples=2)} <= ranked
    built = {ex.step_id for ex in imp.build(2)[0]}
    assert built & {st.id for st in store.steps_of_run(first)}, "iteration 1's steps left out"
    imp.rank(2, second)  # marked under this version: nothing to do, no judge loaded
    assert len(judges) == 1


def test_each_yes_no_judge_keeps_its_rankings_under_its_own_version():
    """The strict judge reads the same scores with another rule, so its rankings must not be
    taken for the relative judge's (a re-rank under either is a fresh, resumable pass)."""
    from reward.llm_judge import YESNO_PROMPT_VERSION, YESNO_STRICT_VERSION, model_of

    assert prompt_version("yesno:m") == YESNO_PROMPT_VERSION != YESNO_STRICT_VERSION
    assert prompt_version("yesno-strict:m") == YESNO_STRICT_VERSION
    assert model_of("yesno-strict:runs/judge") == model_of("yesno:runs/judge") == "runs/judge"


class _SaysNo:
    """A scorer that prefers No to every candidate, less so for the second: a routing test of
    what each yes/no rule keeps (the thing under test is the rule, not a model)."""

    def score_pairs(self, pairs):  # (prompt, "Yes"), (prompt, "No") for each candidate in turn
        return [(-1.0 + (0.5 if i // 2 == 1 else 0.0)) if word == "Yes" else 0.0
                for i, (_, word) in enumerate(pairs)]


def test_the_strict_judge_drops_a_step_whose_every_candidate_is_scored_no():
    import json
    from pathlib import Path
    from types import SimpleNamespace

    from agent.setup import make_judge, make_model
    from reward.ranker import judge

    rec = json.loads((Path(__file__).parent / "cassettes" / "pocket_summarize_step_set.json").read_text())
    step = SimpleNamespace(kind=rec["kind"], prompt=rec["prompt"],
                           samples=[SimpleNamespace(text=t) for t in rec["samples"]])
    relative = judge(_SaysNo(), step, "yesno:any")[0]
    strict = judge(_SaysNo(), step, "yesno-strict:any")[0]
    assert relative.best == strict.best == 1  # the same scores, the same order
    assert 1 not in relative.bad and len(relative.bad) == len(step.samples) - 1
    assert strict.bad == list(range(len(step.samples)))  # its pick too: the step leaves training
    # The judge's model is the spec after either prefix.
    assert type(make_judge("yesno-strict:scripted:pocket")) is type(make_model("scripted:pocket"))
    assert make_judge("rules") is None
