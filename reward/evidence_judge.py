"""A judge that asks the model how much the cited evidence explains what a candidate says.

The yes/no judge (reward/llm_judge.py) asks a 135 M-parameter model whether every name and
year was copied correctly, and it answers at chance (docs/BENCHMARKS.md section 6): comparing
two strings is not something it can be asked to do in words. What a small language model does
well is copy. Shown a text, it finds the words that restate it far likelier than words it would
have to invent. So this judge scores what a candidate claims by how much the evidence it
rests on explains it, from two forward passes and no generated text:

- summarize: the share of the summary's surprisal that the results it cites explain,
  1 - log P(summary | cited results) / log P(summary | no results): near 1 for a summary
  copied from what it cites, lower for one that reads a distractor as if it were the entity
  or swaps a year, below 0 when the evidence makes it less likely. A share rather than the
  difference, because a difference grows with how many rare tokens a claim copies (an
  odd-looking place name scores more than a plain one). A link it cites that the step never
  showed makes it bad.
- answer: log P(answer | summaries and question) - log P(answer | summaries alone): how much
  the question picks this value out of what was found, which tells the answer from the bridge
  entity that led to it. An answer without a [link_id=N] breaks the step's format (the task
  asks for citations) and ranks below every cited one.
- decide: a query is a claim too, copied from the question and the notes: scored by how many
  nats of it they explain, log P(query | question, notes) - log P(query | nothing). Not a
  share here: a half-copied name ("Harb Folmon" for "Hibar Folmon") is rarer on its own, so
  its share can beat the true name's, while the nats the evidence explains drop with every
  letter it gets wrong. A query already searched is bad (the ranking rubric's rule,
  reward/prompts.py).
- stopping: copying cannot say whether the notes are enough, so a stop is scored by how
  ready the notes are: the share of the *question's* surprisal they explain. Notes that
  explain most of it (READY) hold every hop the question names, and a stop ranks first;
  notes that explain little of it (NOT_READY) are a hop short, and a stop is bad. Between the
  two, a step whose samples both stop and search is left out of training: the judge cannot
  tell which is right, and ranking a search first there taught the policy to search on
  after the answer was found.
- summarize: a summary the evidence explains less than SUMMARY_FLOOR of is bad, even when it
  is the step's best: such a step is left out of training rather than teaching a miscopy.
- relevance and grounding: scored by the answer the check leaves (the one under check when
  it passes, the revised one otherwise), as an answer.

The answer's difference compares values that are both copied from the same notes, so rare
tokens weigh on both sides alike. As with the yes/no judge, malformed candidates are bad, the
order is by score, and a candidate scored below zero is bad unless it is the best well-formed
one. Every prompt is a few lines (the evidence, not the whole step), so a step costs two short
forward passes per candidate.

Judge spec: `cite:MODEL` (e.g. `cite:smollm2`), stored under EVIDENCE_PROMPT_VERSION.
"""

from __future__ import annotations

import re

from reward.llm_judge import verdict_of_scores
from reward.rules import PromptState, parse_prompt_state
from reward.verdicts import RankingVerdict, failed
from store.records import Answer, CheckAnswer, ReviseAnswer, Search, SelectLink, Terminate

EVIDENCE_PREFIX = "cite:"
EVIDENCE_PROMPT_VERSION = "cite-v3"
# v2: an empty answer is bad; a claim certain without evidence scores 0.
# v3: queries by nats explained; a stop by how much of the question the notes explain;
#     summaries under SUMMARY_FLOOR are bad; an undecidable stop-or-search step abstains.

# Thresholds set on the design world (seed 2,100,000, the policy's own samples) only; see
# docs/BENCHMARKS.md section 6 for how they fared on worlds drawn later.
READY, NOT_READY = 0.8, 0.6  # share of the question's surprisal the notes explain
SUMMARY_FLOOR = 0.75  # share of a summary's surprisal its cited results explain

_CITATION = re.compile(r"\s*\[link_id\s*=\s*(\d+)\]")
_LEAD = re.compile(r"^\s*(according to|as)\s*,\s*", re.IGNORECASE)  # "According to [link_id=2], ..."

SUMMARY_WITH = "Here is some text from an encyclopedia.\n\n{evidence}\n\nRestate what it says."
SUMMARY_WITHOUT = "Here is some text from an encyclopedia.\n\n(nothing)\n\nRestate what it says."
QUERY_WITH = "Question: {question}\nNotes:\n{notes}\n\nWrite the next search query."
QUERY_WITHOUT = "Write the next search query."
ANSWER_WITH = "Notes:\n{notes}\n\nQuestion: {question}\nAnswer from the notes, in a few words."
ANSWER_WITHOUT = "Notes:\n{notes}\n\nAnswer from the notes, in a few words."
QUESTION_WITH = "Notes:\n{notes}\n\nWrite a question these notes answer."
QUESTION_WITHOUT = "Write a question."


def is_evidence(judge_name: str) -> bool:
    return judge_name.startswith(EVIDENCE_PREFIX)


def model_of(judge_name: str) -> str:
    return judge_name[len(EVIDENCE_PREFIX):]


def claim_of(text: str) -> tuple[str, list[int]]:
    """A summary's or answer's words without its citations, and the links it cites."""
    links = [int(n) for n in _CITATION.findall(text or "")]
    words = _LEAD.sub("", _CITATION.sub("", text or "")).strip()
    return words, links


# Each pair builder takes a claim and the links it cites (claim_of) and returns the two
# (prompt, claim) pairs to score, with whether the claim keeps the step's rules.


def summary_pairs(st: PromptState, claim: str, links: list[int]) -> tuple[list[tuple[str, str]], bool]:
    """A summary's pairs; its rule: every link it cites was shown."""
    shown = all(n in st.results for n in links) and bool(links)
    evidence = "\n".join(st.results[n] for n in dict.fromkeys(links) if n in st.results)
    return [(SUMMARY_WITH.format(evidence=evidence), claim), (SUMMARY_WITHOUT, claim)], shown


def answer_pairs(st: PromptState, claim: str, links: list[int]) -> tuple[list[tuple[str, str]], bool]:
    """An answer's pairs; its rule: it cites a link."""
    notes = _notes(st)
    return [(ANSWER_WITH.format(notes=notes, question=st.question), claim),
            (ANSWER_WITHOUT.format(notes=notes), claim)], bool(links)


def _notes(st: PromptState) -> str:
    return "\n".join(f"- {claim_of(s.summary)[0]}" for s in st.summaries()) or "- (none)"


def query_pairs(st: PromptState, claim: str, links: list[int]) -> tuple[list[tuple[str, str]], bool]:
    """A search's pairs; its rule: the query is new to the trajectory."""
    searched = {a.query.strip().lower() for a in st.past if isinstance(a, Search)}
    return [(QUERY_WITH.format(question=st.question, notes=_notes(st)), claim),
            (QUERY_WITHOUT, claim)], claim.lower() not in searched


def claim_text(action, st: PromptState) -> str:
    """What a step states: a summary, an answer, a query, or the answer a check leaves."""
    if isinstance(action, SelectLink):
        return action.summary
    if isinstance(action, Answer):
        return action.answer
    if isinstance(action, Search):
        return action.query
    if isinstance(action, ReviseAnswer):
        return action.revised_answer
    if isinstance(action, CheckAnswer):
        return st.answer or ""
    return ""  # Terminate states nothing


# Which pairs a step's claim is scored with, and whether the score is a share of surprisal
# (claims copied from evidence) or a difference (what the question adds to the notes).
_PAIRS = {"summarize": (summary_pairs, True), "decide": (query_pairs, False),
          "answer": (answer_pairs, False), "relevance": (answer_pairs, False),
          "grounding": (answer_pairs, False)}


def evidence_scores(llm, kind: str, step_prompt: str, actions: list,
                    st: PromptState | None = None) -> list[float]:
    """One score per parsed action (None: malformed, scored -inf). A claim that breaks the
    step's rules before any model reads it (a summary citing an unseen link, an answer citing
    none, a query already searched) gets -inf; one that states nothing (Terminate, an empty
    summary) gets 0."""
    st = st or parse_prompt_state(step_prompt)  # a caller that parsed it already passes it
    make_pairs, share = _PAIRS[kind]
    pairs, where, scores = [], [], [float("-inf")] * len(actions)
    for i, a in enumerate(actions):
        if a is None:
            continue
        claim, links = claim_of(claim_text(a, st))
        if not claim:
            # A stop, or a summary that keeps nothing, states nothing: the evidence neither
            # supports nor contradicts it. An empty answer (cited or not) is bad.
            if kind in STATING_NOTHING_ALLOWED and not links:
                scores[i] = 0.0
            continue
        two, ok = make_pairs(st, claim, links)
        if ok:
            pairs += two
            where.append(i)
    lp = llm.score_pairs(pairs) if pairs else []
    for j, i in enumerate(where):
        with_it, without = lp[2 * j], lp[2 * j + 1]
        scores[i] = _share(with_it, without) if share else with_it - without
    return scores


STATING_NOTHING_ALLOWED = ("decide", "summarize")  # Terminate; a summary of no result


def _share(with_it: float, without: float) -> float:
    """1 - log P(claim | evidence) / log P(claim | nothing); 0 for a claim so predictable
    without evidence (log P near 0) that there is nothing for the evidence to explain."""
    return 0.0 if without > -1e-6 else 1.0 - with_it / without


def readiness(llm, st: PromptState) -> float:
    """The share of the question's surprisal the notes explain (0 with no notes)."""
    if not st.summaries():
        return 0.0
    with_it, without = llm.score_pairs([(QUESTION_WITH.format(notes=_notes(st)), st.question),
                                        (QUESTION_WITHOUT, st.question)])
    return _share(with_it, without)


def _stop_verdict(llm, st: PromptState, actions: list, scores: list[float]) -> tuple[list[float], set[int], bool]:
    """Scores with every stop's score set by readiness, the stops marked bad, and whether the
    step abstains (a stop and a search both sampled, readiness in between)."""
    stops = [i for i, a in enumerate(actions) if isinstance(a, Terminate)]
    if not stops:
        return scores, set(), False
    ready = readiness(llm, st)
    searches = any(isinstance(a, Search) and scores[i] > float("-inf") for i, a in enumerate(actions))
    scores = list(scores)
    for i in stops:
        scores[i] = float("inf") if ready >= READY else float("-inf") if ready < NOT_READY else 0.0
    bad = set(stops) if ready < NOT_READY else set()
    return scores, bad, searches and NOT_READY <= ready < READY


def judge_evidence(llm, kind: str, step_prompt: str, samples) -> RankingVerdict:
    """Rank a step's samples (0-based indices) by how much their evidence explains them."""
    from agent.parsing import parse_action

    texts = [getattr(s, "text", s) for s in samples]
    if not texts:
        return failed("no samples to rank")
    actions = [parse_action(kind, t)[0] for t in texts]
    st = parse_prompt_state(step_prompt)
    scores = evidence_scores(llm, kind, step_prompt, actions, st)
    bad, abstain = set(), False
    if kind == "decide":
        scores, bad, abstain = _stop_verdict(llm, st, actions, scores)
    elif kind == "summarize":
        bad = {i for i, (a, sc) in enumerate(zip(actions, scores))
               if a is not None and claim_of(a.summary)[0] and sc < SUMMARY_FLOOR}
    verdict = verdict_of_scores(scores, [a is None for a in actions], False, "evidence")
    if abstain:
        bad.add(verdict.best)  # the trainer leaves a step out when its pick is bad
        verdict.explanation += "; stop or search undecided: left out"
    verdict.bad = sorted(set(verdict.bad) | bad)
    return verdict
