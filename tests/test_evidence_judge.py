"""The evidence judge's rules around the model: which pairs it scores, and what it marks bad.

The scorer here is scripted (it counts how many words of the claim its prompt holds), because
the thing under test is the routing: which evidence goes with which claim, what a citation of
an unseen link, a missing citation or a repeated query does, and what a check or a stop
is scored by. The real model's scores on a recorded step set are tested in tests/test_smollm2.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from reward.evidence_judge import EVIDENCE_PROMPT_VERSION, claim_of, judge_evidence
from reward.ranker import judge, prompt_version

STEP_SET = Path(__file__).parent / "cassettes" / "pocket_summarize_step_set.json"


class _CopyCounter:
    """log P(claim | prompt) = -(claim words the prompt does not hold) - 1: a copier."""

    def __init__(self):
        self.pairs = []

    def score_pairs(self, pairs):
        self.pairs += pairs
        return [-1.0 - sum(w not in prompt.split() for w in claim.split()) for prompt, claim in pairs]


def test_claims_lose_their_citations_and_keep_the_links_they_cite():
    assert claim_of("According to [link_id=2], Mira was born in 1901.") == ("Mira was born in 1901.", [2])
    assert claim_of("Tarsk [link_id=3] [link_id=1]") == ("Tarsk", [3, 1])
    assert claim_of("") == ("", [])


def test_a_summary_that_copies_what_it_cites_ranks_first_and_an_unseen_link_is_bad():
    rec = json.loads(STEP_SET.read_text())
    unseen = 'SelectLink(summary="According to [link_id=9], The Crimson Kings formed in Skofiholm in 2002.", thoughts="x", selected_link_ids=[9])'
    scorer = _CopyCounter()
    v = judge_evidence(scorer, "summarize", rec["prompt"], rec["samples"] + [unseen])
    assert v.best == 0  # the oracle's summary: every word is in the result it cites
    assert v.order[-1] == 3 and 3 in v.bad and v.scores[3] == float("-inf")
    # Each scored summary is paired with its own cited result, then with no results.
    cited = [p for p, _ in scorer.pairs[::2]]
    assert "Skofiholm" in cited[0] and "Brudrurov" not in cited[0]  # link 2 only
    assert "Brudrurov" in cited[2] and "Skofiholm" not in cited[2]  # link 1 only
    assert all("(nothing)" in p for p, _ in scorer.pairs[1::2])


def _answer_prompt():
    from agent.prompts import render_answer
    from store.records import Search, SelectLink

    past = [Search(query="Blue Harbour painter", thoughts="t"),
            SelectLink(summary="According to [link_id=1], Mira Olsen painted Blue Harbour.",
                       thoughts="t", selected_link_ids=(1,)),
            Search(query="Mira Olsen born", thoughts="t"),
            SelectLink(summary="According to [link_id=2], Mira Olsen was born in Tarsk.",
                       thoughts="t", selected_link_ids=(2,))]
    return render_answer("In which city was the painter of Blue Harbour born?", past)


def test_an_answer_is_scored_by_what_the_question_adds_and_one_without_citation_ranks_last():
    scorer = _CopyCounter()
    samples = ['Answer(thoughts="t", answer="Tarsk")',
               'Answer(thoughts="t", answer="Tarsk [link_id=2]")',
               'Answer(thoughts="t", answer="Mira Olsen [link_id=1]")']
    samples += ['Answer(thoughts="t", answer="city of Tarsk [link_id=2]")',
                'Answer(thoughts="t", answer="[link_id=2]")']
    v = judge_evidence(scorer, "answer", _answer_prompt(), samples)
    # "city" and "of" are in the question, not in the notes: the question explains 2 words.
    assert v.scores[3] == 2.0 and v.scores[1] == v.scores[2] == 0.0 and v.best == 3
    assert v.order[-2:] == [0, 4] and {0, 4} <= set(v.bad)  # no citation; cites, says nothing
    assert scorer.pairs[0][1] == "Tarsk" and "Question:" in scorer.pairs[0][0]
    assert "Question:" not in scorer.pairs[1][0] and "Mira Olsen was born in Tarsk." in scorer.pairs[1][0]


class _Certain:
    """A scorer for which every claim is certain, with evidence or without: log P = 0."""

    def score_pairs(self, pairs):
        return [0.0] * len(pairs)


def test_a_claim_certain_without_evidence_scores_zero_and_is_below_the_floor():
    rec = json.loads(STEP_SET.read_text())
    v = judge_evidence(_Certain(), "summarize", rec["prompt"], rec["samples"])
    # No division by zero; and the evidence explains none of it, so no summary is kept.
    assert v.scores == [0.0, 0.0, 0.0] and v.bad == [0, 1, 2]


def _decide_prompt():
    from agent.prompts import render_decide
    from store.records import Search, SelectLink

    past = [Search(query="Blue Harbour painter", thoughts="t"),
            SelectLink(summary="According to [link_id=1], Hibar Folmon painted Blue Harbour.",
                       thoughts="t", selected_link_ids=(1,))]
    return render_decide("Where was the painter of Blue Harbour born?", past, 2)


def _decide(scorer, samples):
    return judge(scorer, SimpleNamespace(kind="decide", prompt=_decide_prompt(),
                                         samples=[SimpleNamespace(text=t) for t in samples]), "cite:any")[0]


def test_a_query_is_scored_by_the_nats_it_copies_and_one_already_searched_is_bad():
    samples = ['Search(query="Harb Folmon", thoughts="t")',
               'Search(query="Hibar Folmon", thoughts="t")',
               'Search(query="Blue Harbour painter", thoughts="t")']
    scorer = _CopyCounter()
    v = _decide(scorer, samples)
    # The copied name explains 2 words, the half-copied one 1; the repeat is bad.
    assert v.order == [1, 0, 2] and v.bad == [2]
    assert v.scores[:2] == [1.0, 2.0] and v.scores[2] == float("-inf")
    assert "Hibar Folmon painted Blue Harbour." in scorer.pairs[0][0]  # the notes, uncited
    assert [c for _, c in scorer.pairs] == ["Harb Folmon"] * 2 + ["Hibar Folmon"] * 2


class _Ready(_CopyCounter):
    """A copier that says how much of the question the notes explain: `share` of it."""

    def __init__(self, share):
        super().__init__()
        self.share = share

    def score_pairs(self, pairs):
        q = "Where was the painter of Blue Harbour born?"
        return [(-10.0 * (1 - self.share) if "notes answer" in p else -10.0) if c == q
                else super(_Ready, self).score_pairs([(p, c)])[0] for p, c in pairs]


def test_a_stop_ranks_by_how_much_of_the_question_the_notes_explain():
    samples = ['Search(query="Hibar Folmon", thoughts="t")', 'Terminate(thoughts="t")']
    ready, short, unsure = (_decide(_Ready(x), samples) for x in (0.9, 0.3, 0.7))
    assert ready.best == 1 and ready.bad == []  # the notes explain the question: stop
    assert short.best == 0 and short.bad == [1]  # a hop short: stopping is bad
    assert unsure.best in unsure.bad  # undecidable: the trainer leaves the step out
    only_stops = _decide(_Ready(0.7), ['Terminate(thoughts="t")'] * 2)
    assert only_stops.best not in only_stops.bad  # nothing to weigh a stop against


def test_a_check_is_scored_by_the_answer_it_leaves_and_keeps_its_own_version():
    from agent.prompts import render_check

    prompt = render_check("relevance", "In which city was the painter of Blue Harbour born?", [],
                          "Tarsk [link_id=2]")
    samples = ['Revise_Answer(thoughts="t", revised_answer="Unknown")', "Check_Answer(passed=True)"]
    scorer = _CopyCounter()
    v = judge(scorer, SimpleNamespace(kind="relevance", prompt=prompt,
                                      samples=[SimpleNamespace(text=t) for t in samples]), "cite:any")[0]
    assert v.best == 1 and v.bad == [0]  # the revision cites nothing
    assert [c for _, c in scorer.pairs] == ["Tarsk", "Tarsk"]  # the answer a pass leaves
    assert prompt_version("cite:any") == EVIDENCE_PROMPT_VERSION != prompt_version("yesno:any")
