"""A scripted, deliberately imperfect policy for the pocket world, usable as an LLM backend.

`ScriptedPolicy` answers the agent's real prompts (agent.prompts.render_*) with real action
text (agent.prompts.render_action), so the whole graph — store, ranker, trainer — runs on it
offline. It seeds the pocket model's warm-start data and gives `improve` something to beat.

It plans like a solver but reads like a reader:
- It knows each question's lookup plan (the relation chain of `hops`, looked up by the
  question's text) and only the *first* entity; every later entity comes from its own earlier
  summaries, which it parses back out of PAST_ACTIONS. Everything it knows on a step is in
  that step's prompt: it keeps no state between calls.
- It extracts facts from the SNIPPETS in CURRENT_SEARCH_RESULTS with the corpus templates
  (agent.worlds.pocket.render), so a search that misses the document means a failed lookup.
- With probability ~error_rate a step makes a realistic mistake: a vague query, stopping
  early, reading a distractor's document, copying the wrong name, answering with the bridge
  entity or without a citation, failing a self-check that should pass.

Randomness is seeded per request from sha256(seed, sample index, the prompt's task section),
never hash(): the same prompt gives the same samples in every process, with or without few-shot
examples in front. With n > 1 the first sample behaves at
`error_rate`, the others make mistakes more often, and each sample's logprob is worse the more
mistakes it holds (plus noise that grows with error_rate), so the lowest-perplexity sample is
usually, not always, the best one.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from store.records import (
    Completion,
    GenRequest,
    Generation,
    Action,
    Answer,
    CheckAnswer,
    ReviseAnswer,
    Search,
    SearchResult,
    SelectLink,
    Terminate,
)
from agent.parsing import parse_action
from agent.worlds.pocket.render import GROUP_OF, compile_template, read_facts
from agent.prompts import render_action

# How the policy states a fact in a summary (one phrase per fact group; parsed back later).
SAY: dict[str, str] = {
    "born": "{s} was born in {city} in {year}.",
    "studied": "{s} studied at {univ}.",
    "works": "{s} works for {company}.",
    "founder_of": "{s} founded {company}.",
    "member": "{s} is a member of {band}.",
    "founding": "{s} was founded by {person} in {year}.",
    "hq": "{s} is headquartered in {city}.",
    "in_country": "{s} is a city in {country}.",
    "capital": "The capital of {s} is {city}.",
    "location": "{s} is located in {city}.",
    "established": "{s} was established in {year}.",
    "formation": "{s} were formed in {city} in {year}.",
}
_SAID = {g: compile_template(t, anchor=r"(?:^|(?<=\. )|(?<=\], ))") for g, t in SAY.items()}

# Words to add to an entity's name when a plain name search did not find its document.
KEYWORDS = {
    "born_in": ("born", "birthplace"), "birth_year": ("born", "year"),
    "studied_at": ("studied", "graduate"), "works_for": ("works", "employed"),
    "founded": ("founder", "founded"), "member_of": ("band", "member"),
    "founded_by": ("founded", "founder"), "founded_year": ("founded", "started"),
    "headquartered_in": ("headquarters", "based"), "in_country": ("country", "city"),
    "capital": ("capital", "country"), "located_in": ("university", "campus"),
    "established": ("established", "founded"), "formed_in": ("formed", "band"),
    "formed_year": ("formed", "band"),
}
# How thoughts name what a relation looks up.
WHAT = {
    "born_in": "birthplace", "birth_year": "birth year", "studied_at": "university",
    "works_for": "employer", "founded": "company", "member_of": "band", "founded_by": "founder",
    "founded_year": "founding year", "headquartered_in": "headquarters",
    "in_country": "country", "capital": "capital", "located_in": "location",
    "established": "founding year", "formed_in": "home city", "formed_year": "founding year",
}

# Mistake chance of a step = error_rate * weight: searching and reading are where readers slip.
KIND_WEIGHT = {"decide": 0.55, "summarize": 0.8, "answer": 0.45, "relevance": 0.15,
               "grounding": 0.15}
EXTRA_MISTAKES = 0.4  # samples after the first: this share of their correct steps go wrong
MISTAKE_NLL = 0.2  # per-token loss a mistake adds to a sample's logprob
MAX_TRIES = 3  # searches for one lookup before the policy gives up on it
PRONOUNS = ("He", "She", "It", "They")  # a document's later sentences may say these instead
_CITE = re.compile(r"\s*\[link_id=\d+\]")
_STEP_KIND = {"Search": "decide", "Terminate": "decide", "SelectLink": "summarize",
              "LinkSelection": "summarize", "Answer": "answer", "Check_Answer": "relevance",
              "Revise_Answer": "relevance"}


# --- reading a prompt back ------------------------------------------------------------


@dataclass
class PromptState:
    kind: str
    question: str = ""
    past: list[Action] = field(default_factory=list)
    remaining: int = 0
    query: str = ""
    results: list[SearchResult] = field(default_factory=list)
    answer: str = ""


def parse_prompt(prompt: str) -> PromptState:
    """The state a render_* prompt shows; few-shot examples before the real task are skipped."""
    start = prompt.rfind("# restreact ")
    if start < 0:
        raise ValueError("not a restreact prompt: no '# restreact <kind>' header")
    lines = prompt[start:].splitlines()
    st = PromptState(kind=lines[0].split()[2])
    block = None
    for line in lines[1:]:
        if block is not None:
            if line.strip() == "]":
                block = None
            elif block == "past":
                st.past.append(_parse_past(line))
            else:
                st.results.append(_parse_result(line))
            continue
        name, _, value = line.partition(" = ")
        if name == "ORIGINAL_QUESTION":
            st.question = json.loads(value)
        elif name == "REMAINING_SEARCHES":
            st.remaining = int(value)
        elif name == "CURRENT_QUERY":  # may carry a trailing comment (prompts.REPEATED_QUERY)
            st.query = json.JSONDecoder().raw_decode(value)[0]
        elif name == "ANSWER" and value:
            st.answer = json.loads(value)
        elif name in ("PAST_ACTIONS", "CURRENT_SEARCH_RESULTS") and value.startswith("[") \
                and not value.startswith("[]"):
            block = "past" if name == "PAST_ACTIONS" else "results"
    return st


def _parse_past(line: str) -> Action:
    text = line.strip().rstrip(",")
    action, err = parse_action(_STEP_KIND.get(text.split("(")[0], "decide"), text)
    if action is None:
        raise ValueError(f"unreadable past action ({err}): {text[:80]}")
    return action


def _parse_result(line: str) -> SearchResult:
    call = ast.parse(line.strip().rstrip(","), mode="eval").body
    kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    return SearchResult(int(kw["link_id"]), str(kw["title"]), "", str(kw["snippet"]))


# --- what the policy knows: its plan and the facts its summaries hold ----------------------


@dataclass(frozen=True)
class Plan:
    """The lookups a question needs: a chain from `start`, or a comparison of `pair`."""

    start: str
    chain: tuple[str, ...] = ()
    pair: tuple[str, str] | None = None
    by: str = ""
    pick: str = ""
    then: str = ""

    @classmethod
    def of(cls, q: dict) -> "Plan":
        hops = [tuple(h) for h in q["hops"]]
        if q.get("compare"):
            return cls(start=hops[0][0], pair=(hops[0][0], hops[1][0]), by=hops[0][1],
                       pick=q["compare"], then=hops[2][1])
        return cls(start=hops[0][0], chain=tuple(r for _, r in hops))


Facts = dict  # (entity, relation) -> (value, link_id)


def summary_facts(past: list[Action]) -> Facts:
    """Facts stated by the SelectLink summaries in PAST_ACTIONS (later ones win)."""
    facts: Facts = {}
    for a in past:
        if not isinstance(a, SelectLink) or not a.selected_link_ids:
            continue
        for group, pat in _SAID.items():
            for m in pat.finditer(a.summary):
                for rel, (g, slot) in GROUP_OF.items():
                    if g == group:
                        facts[(m.group("s"), rel)] = (m.group(slot), a.selected_link_ids[0])
    return facts


def next_lookup(plan: Plan, facts: Facts) -> tuple[str, tuple[str, ...]] | None:
    """The next (entity, relations to read) the plan needs, or None when it is complete."""
    if plan.pair:
        for e in plan.pair:
            if (e, plan.by) not in facts or (e, plan.then) not in facts:
                return e, (plan.by, plan.then)
        return None
    e = plan.start
    for rel in plan.chain:
        if (e, rel) not in facts:
            return e, (rel,)
        e = facts[(e, rel)][0]
    return None


def resolve(plan: Plan, facts: Facts) -> list[tuple[str, int]]:
    """The values found so far, in plan order; the last is the answer when the plan is done."""
    if plan.pair:
        a, b = plan.pair
        if all((e, r) in facts for e in plan.pair for r in (plan.by, plan.then)):
            ya, yb = int(facts[(a, plan.by)][0]), int(facts[(b, plan.by)][0])
            first, second = (a, b) if (ya <= yb) == (plan.pick == "min") else (b, a)
            return [facts[(second, plan.then)], facts[(first, plan.then)]]
        return [facts[(e, plan.then)] for e in plan.pair if (e, plan.then) in facts]
    out, e = [], plan.start
    for rel in plan.chain:
        if (e, rel) not in facts:
            break
        out.append(facts[(e, rel)])
        e = out[-1][0]
    return out


# --- the steps ------------------------------------------------------------------------------


class _Step:
    """One sample of one step: the correct behaviour, and the mistakes it may make instead."""

    def __init__(self, st: PromptState, plan: Plan | None, rng: random.Random, p_mistake: float):
        self.st, self.plan, self.rng = st, plan, rng
        self.p_mistake = p_mistake
        self.facts = summary_facts(st.past)
        self.mistakes = 0

    def slip(self) -> bool:
        """Decide once whether this sample goes wrong."""
        if self.rng.random() < self.p_mistake:
            self.mistakes += 1
            return True
        return False

    def run(self) -> Action:
        return getattr(self, self.st.kind)()

    # decide ---------------------------------------------------------------------------

    def decide(self) -> Action:
        if self.plan is None:
            return self._decide_unknown()
        todo = next_lookup(self.plan, self.facts)
        if todo is None:
            return Terminate(thoughts=self._pick(
                "Every lookup the question needs is answered.",
                "The summaries already hold the answer."))
        entity, rels = todo
        tries = sum(1 for a in self.st.past if isinstance(a, Search) and entity in a.query)
        if self.st.remaining <= 0 or tries >= MAX_TRIES:
            return Terminate(thoughts=f"I could not find what I need about {entity}; stopping.")
        if self.slip():
            return self._decide_mistake(entity, rels[0])
        return Search(query=self._query(entity, rels[0]), thoughts=self._pick(
            f"Next I need the {WHAT[rels[0]]} of {entity}.",
            f"Look up {entity} to find the {WHAT[rels[0]]}."))

    def _query(self, entity: str, rel: str) -> str:
        """A first query at random; after a miss, a variant not tried yet."""
        variants = [entity] + [f"{entity} {w}" for w in KEYWORDS[rel]]
        if self.rng.random() < 0.5:
            variants[0], variants[1] = variants[1], variants[0]
        tried = {a.query for a in self.st.past if isinstance(a, Search)}
        fresh = [v for v in variants if v not in tried]
        return fresh[0] if fresh else variants[0]

    def _decide_mistake(self, entity: str, rel: str) -> Action:
        choices = ["vague", "early_stop"] if self.facts or self.rng.random() < 0.5 else ["vague"]
        if self.rng.choice(choices) == "early_stop":
            return Terminate(thoughts="That should be enough to answer.")
        words = [w for w in entity.split() if w != "The"]
        if len(words) > 1:  # drop one word of the name: "Kaste" for "Kaste Brom"
            words.pop(self.rng.randrange(len(words)))
            vague = " ".join(words)
        else:
            vague = entity[: max(3, len(entity) - 3)]
        return Search(query=f"{vague} {KEYWORDS[rel][0]}", thoughts=f"Search for {vague}.")

    def _decide_unknown(self) -> Action:
        if any(isinstance(a, Search) for a in self.st.past) or self.st.remaining <= 0:
            return Terminate(thoughts="I searched once; answering from that.")
        return Search(query=self.st.question, thoughts="Search the question as asked.")

    # summarize ------------------------------------------------------------------------------

    def summarize(self) -> Action:
        todo = next_lookup(self.plan, self.facts) if self.plan else None
        if todo is None:
            return self._summarize_unknown()
        entity, rels = todo
        own = [r for r in self.st.results if r.title == entity]
        found = _read(own[0], entity, rels) if own else None
        if self.slip():
            wrong = self._summarize_mistake(entity, rels, own[0] if own else None, found)
            if wrong is not None:
                return wrong
            self.mistakes -= 1
        if found is None:
            return SelectLink(summary="", selected_link_ids=(), thoughts=self._pick(
                f"None of the results is about {entity}.",
                f"No result states the {WHAT[rels[0]]} of {entity}."))
        return self._select(own[0].link_id, entity, found)

    def _select(self, link_id: int, entity: str, values: dict) -> SelectLink:
        said = " ".join(SAY[g].format(s=entity, **v) for g, v in values.items())
        return SelectLink(summary=f"According to [link_id={link_id}], {said}",
                          selected_link_ids=(link_id,), thoughts=self._pick(
                              f"Link {link_id} is the article on {entity}.",
                              f"Result {link_id} answers this lookup."))

    def _summarize_mistake(self, entity, rels, own, found) -> Action | None:
        others = [r for r in self.st.results if r is not own]
        close = [r for r in others if _shares_word(r.title, entity)]
        if self.rng.random() < 0.5 and (close or others):
            r = self.rng.choice(close or others)  # a distractor read as if it were the entity
            values = _read(r, r.title, rels)
            if values:
                return self._select(r.link_id, entity, values)
        if own is not None and found is not None:
            return self._select(own.link_id, entity, self._miscopy(found, others))
        return None

    def _miscopy(self, found: dict, others: list[SearchResult]) -> dict:
        """One value swapped for a similar-looking name (or year) seen in the results."""
        group = self.rng.choice(sorted(found))
        values = dict(found[group])
        slot = self.rng.choice(sorted(values))
        right = values[slot]
        if slot == "year":
            values[slot] = str(int(right) + self.rng.choice((-10, -3, -1, 1, 2, 7)))
            return {**found, group: values}
        # Likeliest slip first: the same kind of value in a neighbouring snippet, then a
        # title of the same shape, then a half-copied name.
        alike = [d.get(slot) for r in others for d in read_facts(r.snippet, group)]
        shaped = [r.title for r in others if len(r.title.split()) == len(right.split())]
        for pool in (alike, shaped):
            pool = [v for v in pool if v and v != right]
            if pool:
                values[slot] = self.rng.choice(pool)
                break
        else:
            values[slot] = _mangle(right)
        return {**found, group: values}

    def _summarize_unknown(self) -> Action:
        if not self.st.results:
            return SelectLink(summary="", selected_link_ids=(), thoughts="Nothing was found.")
        r = self.st.results[0]
        first = r.snippet.split(". ")[0].rstrip(".")
        return SelectLink(summary=f"According to [link_id={r.link_id}], {first}.",
                          selected_link_ids=(r.link_id,), thoughts="The top result may help.")

    # answer and checks ------------------------------------------------------------------------

    def answer(self) -> Action:
        found = resolve(self.plan, self.facts) if self.plan else []
        done = self.plan is not None and next_lookup(self.plan, self.facts) is None
        if not found:
            return Answer(thoughts="The searches found nothing usable.", answer="Unknown")
        value, link = found[-1]
        cite = True
        if self.slip():
            if len(found) > 1 and self.rng.random() < 0.6:
                value, link = found[-2]  # the bridge entity instead of the answer
            else:
                cite = False
        text = f"{value} [link_id={link}]" if cite else value
        if not done:
            thoughts = f"Not every lookup succeeded; the best I have is {value}."
        elif self.plan.pair:
            years = ", ".join(f"{e}: {self.facts[(e, self.plan.by)][0]}" for e in self.plan.pair)
            thoughts = f"Comparing {WHAT[self.plan.by]}s ({years}) gives {value}."
        else:
            thoughts = "Following the summaries: " + " -> ".join(v for v, _ in found) + "."
        return Answer(thoughts=thoughts, answer=text)

    def relevance(self) -> Action:
        if self.slip():
            return ReviseAnswer(thoughts="The answer does not seem to address the question.",
                                revised_answer="Unknown")
        if not self.st.answer.strip():
            return ReviseAnswer(thoughts="The answer is empty.", revised_answer="Unknown")
        return CheckAnswer(passed=True)

    def grounding(self) -> Action:
        stated = [a.summary for a in self.st.past if isinstance(a, SelectLink) and a.summary]
        value = _CITE.sub("", self.st.answer).strip()
        if self.slip():
            names = [v for v, _ in self.facts.values() if v != value]
            return ReviseAnswer(thoughts="The cited evidence supports a different claim.",
                                revised_answer=self.rng.choice(names) if names else "Unknown")
        if value == "Unknown" or any(value in s for s in stated):
            return CheckAnswer(passed=True)
        found = resolve(self.plan, self.facts) if self.plan else []
        fix = f"{found[-1][0]} [link_id={found[-1][1]}]" if found else "Unknown"
        return ReviseAnswer(thoughts="No summary supports that answer.", revised_answer=fix)

    def _pick(self, *options: str) -> str:
        return self.rng.choice(options)


def _read(result: SearchResult, entity: str, rels: tuple[str, ...]) -> dict | None:
    """{group: values} for the relations' fact groups, read from a snippet about `entity`."""
    out = {}
    for rel in rels:
        group = GROUP_OF[rel][0]
        if group in out:
            continue
        hits = [d for d in read_facts(result.snippet, group) if d["s"] in (entity, *PRONOUNS)]
        if not hits:
            return None
        out[group] = {k: v for k, v in hits[0].items() if k != "s" and k != "job"}
    return out


def _shares_word(a: str, b: str) -> bool:
    return bool(set(a.split()) & set(b.split()) - {"The"})


def _mangle(name: str) -> str:
    words = name.split()
    return " ".join(words[:-1]) if len(words) > 1 else name[:-2]


# --- the backend --------------------------------------------------------------------------


def check_kind_weights(weights: dict[str, float]) -> None:
    """ValueError unless every key is a step kind of KIND_WEIGHT and every weight is >= 0."""
    unknown = set(weights) - set(KIND_WEIGHT)
    if unknown:
        raise ValueError(f"kind_weights: unknown step kind {sorted(unknown)[0]!r}")
    if not all(math.isfinite(w) and w >= 0 for w in weights.values()):
        raise ValueError("kind_weights must be finite numbers >= 0")


def parse_kind_weights(spec: str, option: str = "kind weights") -> dict[str, float]:
    """"summarize=2,decide=0.3" -> {"summarize": 2.0, "decide": 0.3}, checked as
    check_kind_weights does; a bad entry is a ValueError naming `option`."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, w = (x.strip() for x in part.partition("="))
        try:
            weight = float(w)
            check_kind_weights({kind: weight})
        except ValueError:
            raise ValueError(f"{option} wants KIND=W with KIND one of {', '.join(KIND_WEIGHT)} "
                             f"and W a number >= 0, not {part!r}") from None
        if kind in out:
            raise ValueError(f"{option} gives {kind} twice")
        out[kind] = weight + 0.0  # -0 -> 0
    return out


class ScriptedPolicy:
    """agent.llm.base.LLM for the pocket world: a reader with a plan and a seeded error rate."""

    def __init__(self, world_dir_or_questions: str | Path | Iterable[dict],
                 error_rate: float = 0.3, seed: int = 0,
                 kind_weights: dict[str, float] | None = None):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be within [0, 1], got {error_rate}")
        # Per step kind, the share of error_rate a step's mistake chance gets (capped at 1):
        # a warm start can be made to slip where the judge sees it, e.g. more summaries.
        check_kind_weights(kind_weights or {})
        self.kind_weights = {**KIND_WEIGHT, **(kind_weights or {})}
        self.error_rate, self.seed = error_rate, seed
        changed = "".join(f",{k}={w:g}" for k, w in sorted((kind_weights or {}).items()))
        self.name = f"pocket-scripted(error_rate={error_rate:g},seed={seed}{changed})"
        self.plans = {_norm(q["question"]): Plan.of(q) for q in _load(world_dir_or_questions)}

    def generate(self, request: GenRequest) -> Generation:
        t0 = time.perf_counter()
        st = parse_prompt(request.prompt)
        plan = self.plans.get(_norm(st.question))
        completions = [self._sample(request.prompt, st, plan, i) for i in range(max(1, request.n))]
        return Generation(rendered_prompt=request.prompt, completions=completions,
                          prompt_tokens=_tokens(request.prompt),
                          duration_s=time.perf_counter() - t0, model=self.name,
                          options={"n": request.n, "error_rate": self.error_rate, "seed": self.seed})

    def _sample(self, prompt: str, st: PromptState, plan: Plan | None, index: int) -> Completion:
        # Keyed on the task itself, so few-shot examples in front do not change the behaviour.
        task = prompt[prompt.rfind("# restreact "):]
        digest = hashlib.sha256(f"{self.seed}\x00{index}\x00{task}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        p = min(1.0, self.error_rate * self.kind_weights.get(st.kind, 0.5))
        if index > 0:
            p += (1 - p) * EXTRA_MISTAKES
        step = _Step(st, plan, rng, p)
        text = render_action(step.run())
        n = _tokens(text)
        # Per-token loss grows with the mistakes made; the noise lets a wrong sample win now
        # and then, more often the sloppier the policy.
        nll = 0.2 + MISTAKE_NLL * step.mistakes + rng.uniform(0.0, 1.5 * self.error_rate)
        return Completion(text=text, n_tokens=n, logprob=-nll * n)


def _load(src) -> list[dict]:
    if isinstance(src, (str, Path)):
        path = Path(src)
        if path.is_dir():
            path = path / "questions.jsonl"
        if not path.is_file():
            raise ValueError(f"scripted policy: no questions file at {path}")
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    return list(src)


def _norm(question: str) -> str:
    return " ".join(question.split())


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)  # about four characters a token: only relative sizes matter
