"""Render a pocket world into a corpus of short encyclopedia-style documents.

One document an entity, 2–5 sentences, at most MAX_DOC_CHARS characters so that a search
snippet of that length shows the whole document (the pocket model reads snippets, never pages).
Every fact has several paraphrase templates; which one, the order of the facts and whether a
later sentence names its subject or says "She"/"It" are all drawn from the seeded generator.

TEMPLATES is also the reader's grammar: `fact_patterns(group)` compiles the same templates
into regular expressions, which is how the scripted policy reads a fact back out of a snippet.
Placeholders: {S} the subject at the start of a sentence (its name, or a pronoun after the
first sentence), {s} the subject by name only, {year}, {city}, {country}, {person}, {company},
{univ}, {band}, {members} (a list of persons), {job} and {list} (decoration, never read).
"""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path

from agent.worlds.pocket.world import World, doc_id

MAX_DOC_CHARS = 300

# fact group -> paraphrases. A group is what one sentence states; see GROUP_OF for relations.
TEMPLATES: dict[str, tuple[str, ...]] = {
    # person
    "born": ("{S} was born in {city} in {year}.", "{S} was born in {year} in {city}.",
             "{s} is {job} born in {city} in {year}.",
             "{S} was born in the city of {city} in {year}."),
    "studied": ("{S} studied at {univ}.", "{S} is a graduate of {univ}.", "{S} attended {univ}."),
    "works": ("{S} works for {company}.", "{S} is employed by {company}.",
              "{S} has a job at {company}."),
    "founder_of": ("{S} founded {company}.", "{S} is the founder of {company}.",
                   "{S} started the company {company}."),
    "member": ("{S} plays in the band {band}.", "{S} is a member of {band}.",
               "{S} performs with {band}."),
    # company
    "founding": ("{S} was founded by {person} in {year}.", "{person} founded {s} in {year}.",
                 "{S} was started in {year} by {person}.",
                 "{s} is a company founded by {person} in {year}."),
    "hq": ("{S} is headquartered in {city}.", "{S} has its headquarters in {city}.",
           "The head office of {s} is in {city}.", "{S} is based in {city}."),
    # city
    "in_country": ("{S} is a city in {country}.", "{S} lies in {country}.",
                   "{s} is a town in the country of {country}.", "{S} is located in {country}."),
    "home_to": ("{S} is home to {list}.", "{list} can be found in {s}."),
    "population": ("{S} has about {list} thousand inhabitants.",
                   "Some {list} thousand people live in {s}."),
    # country
    "capital": ("{S} is a country whose capital is {city}.", "The capital of {s} is {city}.",
                "{city} is the capital of {s}.", "{S} has its capital in {city}."),
    "cities": ("Other cities in {s} include {list}.", "{S} also has the cities {list}."),
    # university
    "location": ("{S} is a university in {city}.", "{S} is located in {city}.",
                 "{S} has its campus in {city}."),
    "established": ("{S} was founded in {year}.", "{S} was established in {year}.",
                    "{S} opened in {year}."),
    # band
    "formation": ("{S} were formed in {city} in {year}.", "{S} formed in {year} in {city}.",
                  "{s} are a band formed in {city} in {year}."),
    "members": ("The members of {s} are {members}.", "{members} play in {s}.",
                "{S} are made up of {members}."),
}

# relation -> (fact group, placeholder that holds its value)
GROUP_OF: dict[str, tuple[str, str]] = {
    "born_in": ("born", "city"), "birth_year": ("born", "year"),
    "studied_at": ("studied", "univ"), "works_for": ("works", "company"),
    "founded": ("founder_of", "company"), "member_of": ("member", "band"),
    "founded_by": ("founding", "person"), "founded_year": ("founding", "year"),
    "headquartered_in": ("hq", "city"), "in_country": ("in_country", "country"),
    "capital": ("capital", "city"), "located_in": ("location", "city"),
    "established": ("established", "year"), "formed_in": ("formation", "city"),
    "formed_year": ("formation", "year"),
}

PRONOUNS = {"company": "It", "city": "It", "country": "It", "university": "It", "band": "They"}
DECORATION = {"home_to", "cities", "population"}  # sentences that state no fact the questions ask about

NAME = r"[A-Z][a-z]+(?: [A-Z][a-z]+)*"  # every pocket name: capitalised words
_SLOT = {"year": r"\d{4}", "job": r"an? [a-z]+", "list": r"[^.]+",
         "members": rf"{NAME}(?:, {NAME})*(?: and {NAME})?"}
_SUBJECT = rf"{NAME}|He|She|It|They"


# --- writing ----------------------------------------------------------------------------


def entity_facts(world: World, kind: str, ent) -> list[tuple[str, dict]]:
    """(group, values) for each sentence an entity's document states, facts first."""
    if kind == "person":
        facts = [("born", {"city": ent.born_in, "year": ent.birth_year,
                            "job": _article(ent.job)}),
                 ("studied", {"univ": ent.studied_at})]
        if ent.works_for:
            facts.append(("works", {"company": ent.works_for}))
        if ent.founded:
            facts.append(("founder_of", {"company": ent.founded}))
        if ent.member_of:
            facts.append(("member", {"band": ent.member_of}))
        return facts
    if kind == "company":
        return [("founding", {"person": ent.founder, "year": ent.founded_year}),
                ("hq", {"city": ent.headquartered_in})]
    if kind == "city":
        facts = [("in_country", {"country": ent.country}),
                 ("population", {"list": str(ent.population)})]
        here = _located_here(world, ent.name)
        if here:
            facts.append(("home_to", {"list": _and(here)}))
        return facts
    if kind == "country":
        others = [c.name for c in world.cities if c.country == ent.name and c.name != ent.capital]
        facts = [("capital", {"city": ent.capital})]
        if others:
            facts.append(("cities", {"list": _and(others[:3])}))
        return facts
    if kind == "university":
        return [("location", {"city": ent.located_in}), ("established", {"year": ent.established})]
    if kind == "band":
        return [("formation", {"city": ent.formed_in, "year": ent.formed_year}),
                ("members", {"members": _and(ent.members)})]
    raise ValueError(f"unknown kind {kind!r}")


def _located_here(world: World, city: str) -> list[str]:
    names = [u.name for u in world.universities if u.located_in == city]
    names += [c.name for c in world.companies if c.headquartered_in == city]
    return names[:2]


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def render_document(rng: random.Random, world: World, kind: str, ent) -> dict:
    """One corpus row: {id, title, url, text}."""
    facts = entity_facts(world, kind, ent)
    rng.shuffle(facts)
    # A decoration sentence never opens a document: the first sentence says what the entity is.
    facts.sort(key=lambda f: f[0] in DECORATION)
    pronoun = ent.pronoun if kind == "person" else PRONOUNS[kind]
    sentences = []
    for i, (group, values) in enumerate(facts):
        tpl = rng.choice(TEMPLATES[group])
        subject = ent.name if i == 0 or rng.random() < 0.5 else pronoun
        sentences.append(tpl.format(S=subject, s=ent.name, **values))
    # Drop decoration from the end until the document fits a snippet; facts are never cut.
    while len(" ".join(sentences)) > MAX_DOC_CHARS and facts[len(sentences) - 1][0] in DECORATION:
        sentences.pop()
    text = " ".join(sentences)
    did = doc_id(kind, ent.name)
    return {"id": did, "title": ent.name, "url": f"pocket://{did}", "text": text}


def render_corpus(world: World) -> list[dict]:
    """Every entity's document, in a fixed order (kind, then generation order)."""
    rng = random.Random(f"{world.version}/corpus/{world.seed}")
    kinds = ("person", "company", "university", "band", "city", "country")
    return [render_document(rng, world, k, e) for k in kinds for e in world.entities(k)]


def write_corpus(rows: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


# --- reading: the same templates as patterns ----------------------------------------------


SENTENCE_START = r"(?:^|(?<=\. ))"


def compile_template(template: str, anchor: str = SENTENCE_START) -> re.Pattern:
    """A template as a pattern capturing each placeholder; `anchor` says where a fact starts."""
    parts = [anchor]
    for literal, field_name, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field_name is None:
            continue
        if field_name == "S":
            parts.append(f"(?P<s>{_SUBJECT})")
        elif field_name == "s":
            parts.append(f"(?P<s>{NAME})")
        else:
            parts.append(f"(?P<{field_name}>{_SLOT.get(field_name, NAME)})")
    return re.compile("".join(parts))


_PATTERNS = {g: tuple(compile_template(t) for t in ts) for g, ts in TEMPLATES.items()}


def fact_patterns(group: str) -> tuple[re.Pattern, ...]:
    """Compiled patterns for one fact group; group 's' is the subject (a name or pronoun)."""
    return _PATTERNS[group]


def read_facts(text: str, group: str) -> list[dict]:
    """Every statement of `group` in `text`, as {placeholder: value} (subject under 's')."""
    found = []
    for pat in _PATTERNS[group]:
        for m in pat.finditer(text):
            found.append((m.start(), {k: v for k, v in m.groupdict().items() if v is not None}))
    return [d for _, d in sorted(found, key=lambda x: x[0])]
