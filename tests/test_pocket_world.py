"""The pocket world: reproducible bytes, sizes, honest questions, distractors, readable facts."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from agent.worlds.pocket import names
from agent.worlds.pocket.build import FILES, build_world
from agent.worlds.pocket.questions import load_questions
from agent.worlds.pocket.render import GROUP_OF, MAX_DOC_CHARS, read_facts
from agent.worlds.pocket.world import RELATIONS, WORLD_VERSION, World, generate_world


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def default_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pocket-default")
    build_world(11, out, "default")
    return out


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pocket-small")
    build_world(3, out, "small")
    return out


def test_same_seed_gives_same_bytes_and_another_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    build_world(5, a, "small")
    build_world(5, b, "small")
    build_world(6, c, "small")
    for name in (*FILES, "MANIFEST.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for name in FILES:
        assert (a / name).read_bytes() != (c / name).read_bytes(), name


def test_manifest_records_version_counts_and_file_hashes(small_world):
    m = json.loads((small_world / "MANIFEST.json").read_text())
    assert m["version"] == WORLD_VERSION and m["seed"] == 3 and m["size"] == "small"
    for name in FILES:
        assert m["sha256"][name] == hashlib.sha256((small_world / name).read_bytes()).hexdigest()
    assert m["counts"]["documents"] == len(_rows(small_world / "corpus.jsonl"))


def test_default_size_counts_and_disjoint_splits(default_world):
    docs = _rows(default_world / "corpus.jsonl")
    qs = load_questions(default_world / "questions.jsonl")
    assert len(docs) >= 1500
    split = Counter(q["split"] for q in qs)
    assert split["train"] >= 2000 and split["dev"] >= 200 and split["test"] >= 300
    assert len({q["id"] for q in qs}) == len(qs)
    texts = {s: {q["question"] for q in qs if q["split"] == s} for s in split}
    assert not (texts["train"] & texts["dev"] or texts["train"] & texts["test"]
                or texts["dev"] & texts["test"])
    types = Counter(q["type"] for q in qs)
    assert set(types) == {"one_hop", "two_hop", "three_hop", "comparison"}
    for s in ("dev", "test"):  # every split holds every kind of question
        assert {q["type"] for q in qs if q["split"] == s} == set(types)


def test_no_answer_is_in_its_question(default_world):
    for q in load_questions(default_world / "questions.jsonl"):
        assert q["answer"].casefold() not in q["question"].casefold(), q


def test_hops_lead_to_the_answer_and_support_documents_exist(small_world):
    world = World.from_dict(json.loads((small_world / "world.json").read_text()))
    doc_ids = {d["id"] for d in _rows(small_world / "corpus.jsonl")}
    for q in load_questions(small_world / "questions.jsonl"):
        assert set(q["support"]) <= doc_ids
        hops = q["hops"]
        if q["type"] == "comparison":
            (a, by), (b, _), (winner, then) = hops
            ya, yb = world.value(a, by), world.value(b, by)
            assert ya != yb
            expected = min((ya, a), (yb, b)) if q["compare"] == "min" else max((ya, a), (yb, b))
            assert winner == expected[1]
            assert str(world.value(winner, then)) == q["answer"]
        else:
            entity = hops[0][0]
            for name, rel in hops:
                assert name == entity
                entity = str(world.value(entity, rel))
            assert entity == q["answer"]
            assert len(hops) == {"one_hop": 1, "two_hop": 2, "three_hop": 3}[q["type"]]


def test_documents_are_short_encyclopedia_rows(default_world):
    docs = _rows(default_world / "corpus.jsonl")
    for d in docs:
        assert list(d) == ["id", "title", "url", "text"]
        assert d["url"] == f"pocket://{d['id']}"
        assert len(d["text"]) <= MAX_DOC_CHARS
        assert 2 <= len(re.findall(r"\.(?: |$)", d["text"])) <= 5, d
    assert len({d["id"] for d in docs}) == len(docs)


def test_every_fact_can_be_read_back_from_its_document(small_world):
    """The templates say what the world holds, and the reader's patterns find it."""
    world = World.from_dict(json.loads((small_world / "world.json").read_text()))
    docs = {d["title"]: d["text"] for d in _rows(small_world / "corpus.jsonl")}
    checked = 0
    for rel_name, rel in RELATIONS.items():
        group, slot = GROUP_OF[rel_name]
        for ent in world.entities(rel.subject):
            want = getattr(ent, rel.attr)
            if want is None:
                continue
            facts = read_facts(docs[ent.name], group)
            assert [f[slot] for f in facts] == [str(want)], (rel_name, docs[ent.name])
            checked += 1
    assert checked > 500


def test_phrasings_vary(default_world):
    docs = _rows(default_world / "corpus.jsonl")
    born = Counter()
    for d in docs:
        if d["id"].startswith("person/"):
            for phrase in ("was born in the city of", "is a", "was born in 1", "was born in "):
                if phrase in d["text"]:
                    born[phrase] += 1
                    break
    assert len(born) == 4  # every birth template is used
    qs = load_questions(default_world / "questions.jsonl")
    assert len({q["question"].split()[0] for q in qs}) >= 8


def test_hard_distractors_exist():
    world = generate_world(2, "default")
    people = [p.name for p in world.persons]
    pairs = [(a, b) for a, b in names.FAMILY_PAIRS]
    near = [(n, n + b[len(a):]) for n in people for a, b in pairs
            if n.endswith(" " + a) and n + b[len(a):] in people]
    assert len(near) >= 20  # "Kaste Brom" and "Kaste Bromer"
    given = Counter(n.split()[0] for n in people)
    assert sum(c for c in given.values() if c > 1) >= 300
    for ents in (world.companies, world.universities):
        stems = Counter(e.name.split()[0] for e in ents)
        assert sum(1 for c in stems.values() if c > 1) >= 5
    adjectives = Counter(b.name.split()[1] for b in world.bands)
    assert max(adjectives.values()) > 1


def test_names_are_unique_and_lists_are_disjoint():
    lists = names.word_lists()
    words = [w for lst in lists.values() for w in lst]
    assert len(words) == len(set(words))
    assert all(re.fullmatch(r"[A-Z][a-z]+", w) for w in words)
    assert names.all_name_words() == sorted(set(words) | {"The"})


def test_world_round_trips_through_json():
    w = generate_world(4, "tiny")
    again = World.from_dict(json.loads(json.dumps(w.to_dict())))
    assert again.to_dict() == w.to_dict()


def test_bad_size_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown world size"):
        build_world(1, tmp_path, "huge")
