"""Questions over a pocket world: one-hop, two-hop bridge, three-hop and comparison.

Each question row: {id, question, answer, split, type, hops, compare, support}.
- `hops`: the ordered (entity, relation) lookups a solver makes. A chain's later entities are
  the answers of the earlier lookups; a comparison looks up the compared value of both
  entities, then the asked relation of the winner (its third hop).
- `compare`: "min" or "max" for comparisons (which of the two wins), else null.
- `support`: the ids of the documents those lookups read.

No answer can be read off the question: the answer string never occurs in the question text.
Comparisons therefore ask for an attribute of the winner ("In which city was the older of X
and Y born?") instead of naming one of the two. A semantic question (same entities, same
lookups) appears once across all splits, in whichever phrasing was drawn first.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from agent.worlds.pocket.world import RELATIONS, World, WorldSize, doc_id

# relation chain -> phrasings; {e} is the first entity
CHAINS: dict[tuple[str, ...], tuple[str, ...]] = {
    # one hop
    ("born_in",): ("In which city was {e} born?", "Where was {e} born?",
                   "What is the birthplace of {e}?"),
    ("birth_year",): ("In what year was {e} born?", "When was {e} born?"),
    ("studied_at",): ("Which university did {e} attend?", "Where did {e} study?"),
    ("works_for",): ("Which company does {e} work for?", "Who employs {e}?"),
    ("founded",): ("Which company did {e} found?", "What company was founded by {e}?"),
    ("member_of",): ("Which band does {e} play in?", "{e} is a member of which band?"),
    ("founded_by",): ("Who founded {e}?", "Who is the founder of {e}?"),
    ("founded_year",): ("When was {e} founded?", "In what year was {e} founded?"),
    ("headquartered_in",): ("Where is {e} headquartered?", "In which city is {e} based?"),
    ("in_country",): ("In which country is {e}?", "{e} is a city in which country?"),
    ("capital",): ("What is the capital of {e}?", "Which city is the capital of {e}?"),
    ("located_in",): ("In which city is {e}?", "Where is {e} located?"),
    ("established",): ("When was {e} established?", "In what year was {e} founded?"),
    ("formed_in",): ("Where were {e} formed?", "In which city did the band {e} form?"),
    ("formed_year",): ("In what year were {e} formed?", "When did the band {e} form?"),
    # two hops
    ("born_in", "in_country"): ("In which country was {e} born?",
                                "{e} was born in a city of which country?"),
    ("founded_by", "born_in"): ("In which city was the founder of {e} born?",
                                "Where was the person who founded {e} born?"),
    ("founded_by", "birth_year"): ("In what year was the founder of {e} born?",
                                   "When was the founder of {e} born?"),
    ("founded_by", "studied_at"): ("Which university did the founder of {e} attend?",
                                   "Where did the founder of {e} study?"),
    ("works_for", "founded_by"): ("Who founded the company that {e} works for?",
                                  "Who is the founder of {e}'s employer?"),
    ("works_for", "headquartered_in"): ("In which city is the employer of {e} headquartered?",
                                        "Where is the company {e} works for based?"),
    ("studied_at", "located_in"): ("In which city is the university that {e} attended?",
                                   "Where is the university {e} studied at located?"),
    ("headquartered_in", "in_country"): ("In which country is {e} headquartered?",
                                         "{e} is based in which country?"),
    ("located_in", "in_country"): ("In which country is {e} located?",
                                   "{e} is in which country?"),
    ("formed_in", "in_country"): ("In which country were {e} formed?",
                                  "The band {e} formed in which country?"),
    ("member_of", "formed_in"): ("In which city was the band that {e} plays in formed?",
                                 "Where was {e}'s band formed?"),
    ("in_country", "capital"): ("What is the capital of the country that {e} is in?",
                                "Which city is the capital of the country where {e} lies?"),
    # three hops
    ("founded_by", "born_in", "in_country"): (
        "In which country was the founder of {e} born?",
        "The person who founded {e} was born in which country?"),
    ("born_in", "in_country", "capital"): (
        "What is the capital of the country where {e} was born?",
        "Which city is the capital of {e}'s country of birth?"),
    ("studied_at", "located_in", "in_country"): (
        "In which country is the university that {e} attended?",
        "The university where {e} studied is in which country?"),
    ("works_for", "founded_by", "born_in"): (
        "Where was the founder of {e}'s employer born?",
        "In which city was the person who founded the company {e} works for born?"),
    ("works_for", "headquartered_in", "in_country"): (
        "In which country is the company that {e} works for headquartered?",
        "{e}'s employer is based in which country?"),
    ("member_of", "formed_in", "in_country"): (
        "In which country was the band that {e} plays in formed?",
        "{e}'s band was formed in which country?"),
    ("headquartered_in", "in_country", "capital"): (
        "What is the capital of the country where {e} has its headquarters?",
        "Which city is the capital of the country {e} is based in?"),
}


@dataclass(frozen=True)
class Comparison:
    kind: str  # entity kind compared
    by: str  # relation whose (year) value is compared
    pick: str  # "min" or "max"
    then: str  # relation asked of the winner
    phrasings: tuple[str, ...]


COMPARISONS: tuple[Comparison, ...] = (
    Comparison("person", "birth_year", "min", "born_in", (
        "In which city was the older of {a} and {b} born?",
        "Of {a} and {b}, where was the one born first born?")),
    Comparison("person", "birth_year", "max", "studied_at", (
        "Which university did the younger of {a} and {b} attend?",
        "Where did whoever was born later, {a} or {b}, study?")),
    Comparison("company", "founded_year", "min", "headquartered_in", (
        "Where is the older company, {a} or {b}, headquartered?",
        "Of {a} and {b}, in which city is the one founded first based?")),
    Comparison("company", "founded_year", "max", "founded_by", (
        "Who founded the younger company, {a} or {b}?",
        "Of {a} and {b}, who founded the one started more recently?")),
    Comparison("university", "established", "min", "located_in", (
        "In which city is the older university, {a} or {b}?",
        "Of {a} and {b}, where is the one established first?")),
    Comparison("band", "formed_year", "min", "formed_in", (
        "Where was the band that formed first, {a} or {b}, formed?",
        "Of the bands {a} and {b}, in which city did the earlier one form?")),
)

TYPE_SHARE = {"one_hop": 0.3, "two_hop": 0.3, "three_hop": 0.2, "comparison": 0.2}
HOP_TYPE = {1: "one_hop", 2: "two_hop", 3: "three_hop"}


def _chain_question(rng: random.Random, world: World, chain: tuple[str, ...]) -> dict | None:
    first = rng.choice(world.entities(RELATIONS[chain[0]].subject)).name
    hops, entity = [], first
    for rel in chain:
        value = world.value(entity, rel)
        if value is None:
            return None
        hops.append([entity, rel])
        entity = str(value)
    text = rng.choice(CHAINS[chain]).format(e=first)
    support = [doc_id(RELATIONS[r].subject, e) for e, r in hops]
    return {"question": text, "answer": entity, "type": HOP_TYPE[len(chain)], "hops": hops,
            "compare": None, "support": support, "_key": (chain, first)}


def _comparison_question(rng: random.Random, world: World, c: Comparison) -> dict | None:
    a, b = _pair(rng, world.entities(c.kind))
    va, vb = world.value(a, c.by), world.value(b, c.by)
    if va == vb:
        return None
    winner = (a if va < vb else b) if c.pick == "min" else (a if va > vb else b)
    loser = b if winner == a else a
    answer = world.value(winner, c.then)
    if answer is None or answer == world.value(loser, c.then):
        return None  # the comparison must matter
    text = rng.choice(c.phrasings).format(a=a, b=b)
    return {"question": text, "answer": str(answer), "type": "comparison",
            "hops": [[a, c.by], [b, c.by], [winner, c.then]], "compare": c.pick,
            "support": [doc_id(c.kind, a), doc_id(c.kind, b)],
            "_key": (c.by, c.pick, c.then, tuple(sorted((a, b))))}


def _pair(rng: random.Random, ents: list) -> tuple[str, str]:
    """Two distinct names; half the time near-identical ones (shared first word)."""
    a = rng.choice(ents).name
    if rng.random() < 0.5:
        twins = [e.name for e in ents if e.name != a and _head(e.name) == _head(a)]
        if twins:
            return a, rng.choice(twins)
    while True:
        b = rng.choice(ents).name
        if b != a:
            return a, b


def _head(name: str) -> str:
    """The word near-identical names share: a given name, a stem, a band's adjective."""
    words = name.split()
    return words[1] if words[0] == "The" and len(words) > 1 else words[0]


def _answer_leaks(q: dict) -> bool:
    return q["answer"].casefold() in q["question"].casefold()


def make_questions(world: World, size: WorldSize) -> list[dict]:
    """The question set of a world: seeded, deduplicated, split into train/dev/test."""
    rng = random.Random(f"{world.version}/questions/{world.seed}")
    total = size.train + size.dev + size.test
    chains = {n: [c for c in CHAINS if len(c) == n] for n in (1, 2, 3)}
    wanted = {t: round(share * total) for t, share in TYPE_SHARE.items()}
    wanted["one_hop"] += total - sum(wanted.values())
    pool: list[dict] = []
    keys: set = set()
    for qtype, n in wanted.items():
        made, tries = 0, 0
        while made < n:
            tries += 1
            if tries > 200 * n + 1000:
                raise ValueError(f"world too small for {n} {qtype} questions")
            if qtype == "comparison":
                q = _comparison_question(rng, world, rng.choice(COMPARISONS))
            else:
                hops = {"one_hop": 1, "two_hop": 2, "three_hop": 3}[qtype]
                q = _chain_question(rng, world, rng.choice(chains[hops]))
            if q is None or q["_key"] in keys or _answer_leaks(q):
                continue
            keys.add(q["_key"])
            pool.append(q)
            made += 1
    rng.shuffle(pool)
    return _split(pool, size, world)


def _split(pool: list[dict], size: WorldSize, world: World) -> list[dict]:
    bounds = [("test", size.test), ("dev", size.dev), ("train", size.train)]
    out, start = [], 0
    for split, n in bounds:
        for q in pool[start:start + n]:
            out.append({"id": f"{world.version}-s{world.seed}-{split}-{len(out):05d}",
                        "question": q["question"], "answer": q["answer"], "split": split,
                        "type": q["type"], "hops": q["hops"], "compare": q["compare"],
                        "support": q["support"]})
        start += n
    return out


def write_questions(rows: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def load_questions(path: Path | str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
