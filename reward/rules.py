"""The rule judge: the ranker's rubric as deterministic checks, no LLM.

Useful offline, in tests, and as a cheap pre-filter before an LLM judge. It reads the
state a step saw back out of the step's verbatim prompt (the text `agent.prompts`
rendered: ORIGINAL_QUESTION, PAST_ACTIONS, CURRENT_SEARCH_RESULTS, ...), parses each
alternative with `agent.parsing.parse_action`, and marks an alternative BAD when any of
these holds:

- every kind: it does not parse; any text element is empty (thoughts, query, summary,
  answer, revised_answer).
- decide: a Search when no searches remain; a Search repeating an earlier query
  (case, spacing and punctuation ignored); a Search naming an entity (capitalised word or
  number) found neither in the question nor in an earlier summary — the rule that took a
  keep-filter from 52% to 88% precision on sampled pocket trajectories; a Terminate before
  any summary.
- summarize: selects no link; selects or cites a link that is not in the results;
  the summary cites no [link_id=N]; the selected snippets never mention the query's
  entities; a sentence names an entity (capitalised word or number) that is in neither
  the link(s) it cites (title or snippet) nor the question — a sentence without a
  citation goes with the nearest cited one, the previous first; a sentence repeats an
  entity more often than any one sentence of the question or of each cited link (title
  included) does, which is how a miscopy such as "Besvudal is a city in Besvudal" reads.
- answer: cites no [link_id=N]; cites a link that no earlier summary selected; names an
  entity found neither in the earlier summaries nor in the question; its thoughts state a
  number found in neither (a miscopied year: "Comparing founding years (A: 2020, ...)");
  it is the wrong kind of answer (see below).
- grounding: passes (Check_Answer(passed=True)) an answer naming an entity the summaries
  do not contain; revises to such an answer.
- relevance: passes an answer of the wrong kind; revises to one.

"Wrong kind": a question that asks when (When..., In what/which year...) answered with no
number at all ("Mifedal" for "In what year was X born?", though the summary says "born in
Mifedal in 1975"), or one that asks where or who answered with a number alone. Such an
answer is grounded, so rules-v2 passed it: after a CPU loop, eight of the 13 wrong test
answers that rules-v2 passed though the summaries held the reference were year questions
answered with a place or a founder (docs/NOTEBOOK.md, rules-v3).

"Entity" is deliberately crude: a capitalised word outside a short list of function
words, or a number; matching is per word and ignores case. Ranking: good before bad;
among good, fewer steps first (at a decide step, a Terminate goes before a Search when
the summaries already hold a candidate answer, see `_has_candidate`); then lower
perplexity when known; then the original order.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field, fields

from agent.parsing import parse_action
from agent.words import CITATION as _CITATION, STOPWORDS, TOKEN as _TOKEN, citations, entities
from agent.words import entity_words as _entity_words, norm_token as _norm_token, words as _words
from store.records import (
    Action,
    Answer,
    CheckAnswer,
    ReviseAnswer,
    Search,
    SelectLink,
    Terminate,
    STEP_KINDS,
)
from reward.verdicts import RankingVerdict, failed

# Part of every stored ranking's key: a ranking made by an older rubric is never reused as
# this one's (rules-v2: summaries are checked per citation, and entity counts; rules-v3:
# the kind of answer a question asks for, and numbers in an answer's thoughts).
RULES_VERSION = "rules-v3"


# --- what the step saw ------------------------------------------------------------------


@dataclass
class PromptState:
    """The parts of a rendered step prompt the rules need."""

    question: str = ""
    past: list[Action] = field(default_factory=list)
    remaining: int | None = None
    query: str | None = None
    results: dict[int, str] = field(default_factory=dict)  # link_id -> title + snippet
    titles: dict[int, str] = field(default_factory=dict)  # link_id -> title alone
    answer: str | None = None  # the answer under check (relevance, grounding)

    def summaries(self) -> list[SelectLink]:
        return [a for a in self.past if isinstance(a, SelectLink) and a.summary]


_PAST_KIND = {"Search": "decide", "Terminate": "decide", "SelectLink": "summarize",
              "LinkSelection": "summarize", "Answer": "answer", "Check_Answer": "relevance",
              "Revise_Answer": "relevance"}


def parse_prompt_state(prompt: str) -> PromptState:
    """Read the real task's state from a rendered prompt (few-shot examples come earlier)."""
    state = PromptState()
    if not isinstance(prompt, str):
        return state
    start = prompt.rfind("ORIGINAL_QUESTION = ")
    if start < 0:
        return state
    block = None  # which list we are inside: "past" or "results"
    for line in prompt[start:].splitlines():
        stripped = line.strip()
        if block:
            if stripped.startswith("]"):
                block = None
            elif block == "past":
                _add_past(state, stripped.rstrip(","))
            else:
                _add_result(state, stripped.rstrip(","))
            continue
        name, _, value = stripped.partition(" = ")
        value = value.split("  #")[0].strip()  # drop a trailing comment
        if name == "ORIGINAL_QUESTION":
            state.question = _literal(value) or ""
        elif name == "CURRENT_QUERY":
            state.query = _literal(value)
        elif name == "ANSWER":
            state.answer = _literal(value)
        elif name == "REMAINING_SEARCHES" and value.isdigit():
            state.remaining = int(value)
        elif name == "PAST_ACTIONS" and value == "[":
            block = "past"
        elif name == "CURRENT_SEARCH_RESULTS" and value == "[":
            block = "results"
    return state


def _literal(value: str) -> str | None:
    try:
        v, _ = json.JSONDecoder().raw_decode(value)
    except ValueError:
        return None
    return v if isinstance(v, str) else None


def _add_past(state: PromptState, text: str) -> None:
    kind = _PAST_KIND.get(text.split("(", 1)[0])
    if kind:
        action, _ = parse_action(kind, text)
        if action is not None:
            state.past.append(action)


def _add_result(state: PromptState, text: str) -> None:
    try:
        node = ast.parse(text, mode="eval").body
        kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        link_id, title = int(kw["link_id"]), str(kw.get("title", ""))
        state.results[link_id] = f"{title} {kw.get('snippet', '')}"
        state.titles[link_id] = title
    except (SyntaxError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        pass  # a line we cannot read is simply not evidence


# --- words ------------------------------------------------------------------------------


def entity_counts(text: str) -> Counter:
    """How often each entity occurs as one ("Born in Tarsk, she was born" counts born once)."""
    return Counter(_entity_words(text))


def word_counts(text: str) -> Counter:
    """How often each word occurs in `text`, any case (evidence may lower-case a name)."""
    return Counter(_norm_token(t) for t in _TOKEN.findall(_CITATION.sub(" ", text or "")))


def unsupported(text: str, *evidence: str) -> list[str]:
    """The entities of `text` that no evidence text contains (as a word, any case)."""
    support = set().union(*(_words(e) for e in evidence)) if evidence else set()
    return [e for e in entities(text) if e not in support]


def _norm_query(q: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", q.lower()).split())


# --- the rules, one function a step kind ------------------------------------------------


def _empty_elements(action: Action) -> list[str]:
    return [f"empty {f.name}" for f in fields(action)
            if f.name != "name" and isinstance(getattr(action, f.name), str)
            and not getattr(action, f.name).strip()]


def _decide(a: Action, st: PromptState) -> list[str]:
    summaries = st.summaries()
    if isinstance(a, Terminate):
        return [] if summaries else ["terminates before any summary"]
    if not isinstance(a, Search):
        return []
    why = []
    if st.remaining is not None and st.remaining <= 0:
        why.append("searches when none remain")
    earlier = {_norm_query(p.query) for p in st.past if isinstance(p, Search)}
    if _norm_query(a.query) in earlier:
        why.append("repeats an earlier query")
    new = unsupported(a.query, st.question, *(s.summary for s in summaries))
    if new:
        why.append(f"query names {', '.join(new)}, in neither the question nor a summary")
    return why


def _summarize(a: Action, st: PromptState) -> list[str]:
    if not isinstance(a, SelectLink):
        return []
    why = []
    if not a.selected_link_ids:
        why.append("selects no link")
    missing = [i for i in a.selected_link_ids if i not in st.results]
    if missing:
        why.append(f"selects link {missing[0]}, not among the results")
    cited = citations(a.summary)
    if not cited:
        why.append("summary cites no [link_id=N]")
    ghosts = [i for i in cited if i not in st.results]
    if ghosts:
        why.append(f"cites link {ghosts[0]}, not among the results")
    selected = [st.results[i] for i in a.selected_link_ids if i in st.results]
    if selected:
        wanted = entities(st.query or "")
        if wanted and not (set(wanted) & set().union(*(_words(t) for t in selected))):
            why.append("selected results never mention the query's entities")
    return why + _miscopies(a.summary, st)


_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def cited_sentences(summary: str) -> list[tuple[str, list[int]]]:
    """Each sentence (or ;-clause) of a summary with the links it rests on.

    Summaries cite at the start ("According to [link_id=2], ...") or the end, and a
    follow-up sentence often cites nothing though it still reads the same link; so a
    sentence without a citation takes the previous cited sentence's links, or the next
    one's when none comes before.
    """
    parts = [p for p in _SENTENCE_END.split(summary or "") if p.strip()]
    links = [citations(p) for p in parts]
    for i in range(len(links)):  # forward: a follow-up sentence keeps its source
        if not links[i] and i and links[i - 1]:
            links[i] = links[i - 1]
    for i in reversed(range(len(links) - 1)):  # backward: a citation trailing the sentence
        if not links[i]:
            links[i] = links[i + 1]
    return list(zip(parts, links))


def _most_in_a_sentence(text: str, *more: str) -> Counter:
    """Per word, the most times any one sentence of the texts says it (any case)."""
    counts = Counter()
    for part in (p for t in (text, *more) for p in _SENTENCE_END.split(t or "")):
        counts |= word_counts(part)
    return counts


def _link_counts(link_id: int, st: PromptState) -> Counter:
    """What one result can back a sentence's repeats with: the most any single sentence of
    it says a word, its title counting as one. Not the page's total: a page on Besvudal
    names Besvudal in its title and in several sentences, and adding them up would pass
    "Besvudal is a city in Besvudal", a fact no sentence of the page states."""
    title = st.titles.get(link_id, "")
    return _most_in_a_sentence(title, st.results.get(link_id, "").removeprefix(title))


def _miscopies(summary: str, st: PromptState) -> list[str]:
    """A sentence naming what its own cited links do not say, or saying it more often.

    Checked per sentence against the links that sentence cites, not the union of all
    selected results: a fact copied from the wrong result, or a name pasted into the wrong
    slot, passes a union check because every word is somewhere on the page. The question
    backs a word too (a summary may restate what is asked), but its count is not added to
    the snippets': with "In which country is Besvudal?" a sum would pass the miscopy above.
    A word a sentence repeats must be repeated by one sentence of its source, not merely
    occur as often across the page; several cited links do add up ("X [1] ... X [2]").
    """
    why = []
    asked = _most_in_a_sentence(st.question)
    for sentence, links in cited_sentences(summary):
        known = [i for i in links if i in st.results]
        if not known:
            continue  # no citation anywhere, or only missing links: reported already
        source = f"link{'s' * (len(known) > 1)} {', '.join(map(str, known))}"
        new = unsupported(sentence, st.question, *(st.results[i] for i in known))
        if new:
            why.append(f"summary names {', '.join(new)}, not in its cited {source}")
        cited = sum((_link_counts(i, st) for i in known), Counter())
        over = [f"{w} ({k} times)" for w, k in entity_counts(sentence).items()
                if w not in new and k > max(cited[w], asked[w])]
        if over:
            why.append(f"summary names {', '.join(over)}, more often than its cited {source}")
    return why


def _answer_text(text: str, st: PromptState, require_citation: bool) -> list[str]:
    why = []
    cited = citations(text)
    if require_citation and not cited:
        why.append("cites no [link_id=N]")
    selected = {i for s in st.summaries() for i in s.selected_link_ids}
    selected |= {i for s in st.summaries() for i in citations(s.summary)}
    ghosts = [i for i in cited if i not in selected]
    if ghosts:
        why.append(f"cites link {ghosts[0]}, which no summary selected")
    new = unsupported(text, st.question, *(s.summary for s in st.summaries()))
    if new:
        why.append(f"names {', '.join(new)}, found in no summary")
    return why


_ASKS_WHEN = re.compile(r"^\W*(when|(in |during )?(what|which) year)\b", re.IGNORECASE)
_ASKS_WHERE_WHO = re.compile(r"^\W*(where|who|whom|whose)\b", re.IGNORECASE)
_DIGIT = re.compile(r"\d")


def wrong_kind(answer: str, question: str) -> list[str]:
    """Why `answer` cannot be the kind of answer `question` asks for (empty: it can)."""
    bare = _CITATION.sub(" ", answer or "")
    if _ASKS_WHEN.match(question or "") and not _DIGIT.search(bare):
        return ["the question asks when, but the answer states no number"]
    tokens = _TOKEN.findall(bare)
    if _ASKS_WHERE_WHO.match(question or "") and tokens and all(t[0].isdigit() for t in tokens):
        return ["the question asks where or who, but the answer is a number"]
    return []


def _answer(a: Action, st: PromptState) -> list[str]:
    if not isinstance(a, Answer):
        return []
    evidence = (st.question, *(s.summary for s in st.summaries()))
    numbers = [e for e in unsupported(a.thoughts, *evidence) if e[0].isdigit()]
    why = [f"its thoughts state {', '.join(numbers)}, found in no summary"] if numbers else []
    return _answer_text(a.answer, st, True) + why + wrong_kind(a.answer, st.question)


def _relevance(a: Action, st: PromptState) -> list[str]:
    if isinstance(a, CheckAnswer) and a.passed and st.answer is not None:
        return [f"passes an answer of the wrong kind: {w}" for w in wrong_kind(st.answer, st.question)]
    if isinstance(a, ReviseAnswer):
        return [f"revises to an answer of the wrong kind: {w}"
                for w in wrong_kind(a.revised_answer, st.question)]
    return []


def _grounding(a: Action, st: PromptState) -> list[str]:
    if isinstance(a, CheckAnswer) and a.passed and st.answer is not None:
        new = unsupported(st.answer, st.question, *(s.summary for s in st.summaries()))
        return [f"passes an answer naming {', '.join(new)}, found in no summary"] if new else []
    if isinstance(a, ReviseAnswer):
        new = unsupported(a.revised_answer, st.question, *(s.summary for s in st.summaries()))
        return [f"revised answer names {', '.join(new)}, found in no summary"] if new else []
    return []


_RULES = {"decide": _decide, "summarize": _summarize, "answer": _answer,
          "grounding": _grounding, "relevance": _relevance}


def check(kind: str, action: Action | None, parse_error: str | None, st: PromptState) -> list[str]:
    """Why one parsed alternative is bad; empty when it passes every rule."""
    if action is None:
        return [f"does not parse ({parse_error})"]
    return _empty_elements(action) + _RULES[kind](action, st)


def _has_candidate(st: PromptState) -> bool:
    """Do the summaries already hold a candidate answer? (Prefer Terminate then.)

    A cheap proxy for "the last hop is done": the latest Search followed a bridge (its
    query names something the question does not) and the summary after it brought a new
    name (one in neither the question nor any query). One-hop questions and comparisons
    never trigger it, so there the tie falls to perplexity; a third hop can be cut short.
    """
    last_search = max((i for i, a in enumerate(st.past) if isinstance(a, Search)), default=None)
    if last_search is None:
        return False
    after = [a for a in st.past[last_search + 1:] if isinstance(a, SelectLink) and a.summary]
    if not after:
        return False
    query = st.past[last_search].query
    if not unsupported(query, st.question):
        return False
    queries = [a.query for a in st.past if isinstance(a, Search)]
    return bool(unsupported(after[-1].summary, st.question, *queries))


# --- the judge --------------------------------------------------------------------------


def _text_and_ppl(sample) -> tuple[object, float | None]:
    if isinstance(sample, tuple) and len(sample) == 2:
        text, ppl = sample
    elif hasattr(sample, "text"):
        text, ppl = sample.text, getattr(sample, "perplexity", None)
    else:
        text, ppl = sample, None
    if not isinstance(ppl, (int, float)) or isinstance(ppl, bool) or math.isnan(ppl):
        ppl = None
    return text, ppl


def judge_step(kind: str, prompt: str, samples, context: dict | None = None) -> RankingVerdict:
    """Rank one step's alternatives by the rules (see the module docstring).

    `samples` are texts, (text, perplexity) pairs, or objects with `.text` and
    `.perplexity` (store.records.Sample, store.models.StepSample). `context` may override
    what is read from the prompt: question, past (actions), remaining, query, answer,
    results (a list of store.records.SearchResult).
    """
    if kind not in STEP_KINDS:
        return failed(f"unknown step kind {kind!r}")
    samples = list(samples or [])
    if not samples:
        return failed("no samples to rank")
    st = parse_prompt_state(prompt)
    for key, value in (context or {}).items():
        if key not in {f.name for f in fields(PromptState)}:
            raise ValueError(f"unknown context key {key!r}")
        if key == "results":
            st.titles = {r.link_id: r.title for r in value}
            value = {r.link_id: f"{r.title} {r.snippet}" for r in value}
        setattr(st, key, value)
    candidate = kind == "decide" and _has_candidate(st)
    keys, reasons = [], []
    for i, sample in enumerate(samples):
        text, ppl = _text_and_ppl(sample)
        action, error = parse_action(kind, text)
        why = check(kind, action, error, st)
        reasons.append(why)
        extra_steps = 1 if candidate and isinstance(action, Search) else 0
        keys.append((bool(why), extra_steps, ppl if ppl is not None else math.inf, i))
    order = [k[-1] for k in sorted(keys)]
    bad = [i for i, why in enumerate(reasons) if why]
    notes = [f"#{i + 1} " + ("bad: " + "; ".join(why) if why else "good") for i, why in enumerate(reasons)]
    if candidate:
        notes.append("The summaries already hold a candidate answer, so ending the search is preferred")
    return RankingVerdict(ok=True, best=order[0], order=order, bad=bad, explanation=". ".join(notes) + ".")
