"""The words of a step's text: its entities (names, places, numbers) and its citations.

One tokenizer for every reader of the agent's text: the rule judge (reward/rules.py) and the
evidence check (agent/evidence.py) match the same words, so what the judge calls an entity
is what the evidence check looks for in a source.
"""

from __future__ import annotations

import re

# Capitalised function words that start sentences and queries; not entities.
STOPWORDS = frozenset("""
a an the and or but nor so yet of in on at to for from by with without about into onto
over under after before between through during since until upon as than then
is are was were be been being has have had do does did will would can could may might
must shall should it its it's he she they them his her hers their theirs this that these
those there here who whom whose which what when where why how yes no not none all any
both each either neither every some many much more most other another such also only
according link links result results search query summary answer source sources page
i we you me us our your my mr mrs ms dr st
""".split())

CITATION = re.compile(r"\[\s*link_id\s*=\s*(\d{1,6})\s*\]", re.IGNORECASE)
TOKEN = re.compile(r"[^\W\d_][\w'’-]*|\d+(?:[.,]\d+)*")


def norm_token(tok: str) -> str:
    tok = tok.lower().replace("’", "'")
    return tok[:-2] if tok.endswith("'s") else tok.strip("'-")


def words(text: str) -> set[str]:
    """Every word of `text`, normalised, citations removed."""
    return {norm_token(t) for t in TOKEN.findall(CITATION.sub(" ", text or ""))}


def entity_words(text: str):
    """Each occurrence of an entity: a capitalised non-function word or a number."""
    for tok in TOKEN.findall(CITATION.sub(" ", text or "")):
        norm = norm_token(tok)
        if norm and norm not in STOPWORDS and (tok[0].isdigit() or tok[0].isupper()):
            yield norm


def entities(text: str) -> list[str]:
    """Capitalised non-function words and numbers, in order, citations removed."""
    return list(dict.fromkeys(entity_words(text)))


def citations(text: str) -> list[int]:
    return [int(n) for n in CITATION.findall(text or "")]
