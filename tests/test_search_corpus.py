"""BM25 corpus search over a real JSONL file, and the search factory."""

from __future__ import annotations

import json
import os

import pytest

from agent.search.base import SearchBackend, SearchError
from agent.search.corpus import CorpusSearch, best_passage, tokenize
from agent.search.factory import make_search

DOCS = [
    {"id": "d1", "title": "Talvor Brenner", "url": "https://pocket.example/talvor-brenner",
     "text": "Talvor Brenner is a painter. Talvor Brenner was born in Kessing in 1930."},
    {"id": "d2", "title": "Talvar Brenn", "url": "https://pocket.example/talvar-brenn",
     "text": "Talvar Brenn is a sailor. Talvar Brenn was born in Ostrava in 1904."},
    {"id": "d3", "title": "Talvor Brenn", "url": "https://pocket.example/talvor-brenn",
     "text": "Talvor Brenn founded Quillworks. Talvor Brenn was born in Miradel in 1921."},
    {"id": "d4", "title": "Quillworks", "url": "https://pocket.example/quillworks",
     "text": "Quillworks is a company in Miradel. It makes pens."},
    {"id": "d5", "title": "Miradel", "url": "https://pocket.example/miradel",
     "text": "Miradel is a city in Varnland."},
]


def write_corpus(path, docs=DOCS):
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "docs.jsonl")


def test_exact_fictional_name_beats_near_identical_distractors(corpus):
    cs = CorpusSearch(corpus)
    assert isinstance(cs, SearchBackend) and cs.name == "corpus"
    results = cs.search("Talvor Brenn", k=3)
    assert results[0].url == "https://pocket.example/talvor-brenn"
    assert results[0].title == "Talvor Brenn"
    assert [r.link_id for r in results] == [1, 2, 3]
    # each distractor shares only one of the two name tokens: ranked below the exact match
    assert {r.url for r in results[1:]} == {"https://pocket.example/talvor-brenner",
                                            "https://pocket.example/talvar-brenn"}
    # the other spellings find their own documents first
    assert cs.search("Talvor Brenner", k=1)[0].url.endswith("/talvor-brenner")
    assert cs.search("talvar brenn", k=1)[0].url.endswith("/talvar-brenn")


def test_no_stemming_and_numbers_are_tokens():
    assert tokenize("Brenner's brenn, born 1921!") == ["brenner", "s", "brenn", "born", "1921"]
    assert tokenize("The founder of Quillworks") == ["founder", "quillworks"]


def test_numbers_match_and_unknown_words_give_nothing(corpus):
    cs = CorpusSearch(corpus)
    assert cs.search("1904", k=3)[0].url.endswith("/talvar-brenn")
    assert cs.search("zzzunknown qqq", k=3) == []
    assert cs.search("the of", k=3) == []  # only stopwords: nothing to match
    assert len(cs.search("Miradel", k=2)) == 2


def test_ties_are_broken_by_document_order(tmp_path):
    twins = [{"id": str(i), "title": f"Twin {i}", "url": f"https://pocket.example/{i}",
              "text": "Orlin Vask lives here."} for i in range(4)]
    cs = CorpusSearch(write_corpus(tmp_path / "twins.jsonl", twins))
    assert [r.url for r in cs.search("Orlin Vask", k=3)] == [f"https://pocket.example/{i}" for i in range(3)]


def test_snippet_is_the_best_matching_passage(tmp_path):
    filler = " ".join(f"Sentence {i} talks about rivers and weather." for i in range(30))
    doc = {"id": "x", "title": "Long page", "url": "https://pocket.example/long",
           "text": filler + " Talvor Brenn was born in Miradel. " + filler}
    cs = CorpusSearch(write_corpus(tmp_path / "long.jsonl", [doc]), snippet_chars=120)
    snippet = cs.search("where was Talvor Brenn born", k=1)[0].snippet
    assert "Talvor Brenn was born in Miradel." in snippet
    assert len(snippet) <= 120
    # with no match in the text (title-only hit) the snippet is the start of the text
    assert best_passage(filler, ["nomatch"], lambda t: 1.0, 60).startswith("Sentence 0 talks")
    assert len(best_passage(filler, ["nomatch"], lambda t: 1.0, 60)) <= 60


def test_index_is_cached_and_rebuilt_when_the_file_changes(corpus):
    a, b = CorpusSearch(corpus), CorpusSearch(str(corpus))
    assert a._index is b._index  # built once per file version
    docs = DOCS + [{"id": "d6", "title": "Orlin Vask", "url": "https://pocket.example/orlin",
                    "text": "Orlin Vask is a new entry."}]
    write_corpus(corpus, docs)
    st = corpus.stat()
    os.utime(corpus, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert a.search("Orlin Vask", k=1)[0].url == "https://pocket.example/orlin"


@pytest.mark.parametrize("content, message", [
    ('{"id": "1", "title": "t", "url": "u", "text": "ok"}\n{"id": 2, "title": "t"\n',
     r"docs\.jsonl:2: invalid JSON \(expecting ',' delimiter at column 23\)"),
    ('{"id": "1", "title": "t", "text": "no url"}\n', r"docs\.jsonl:1: document lacks url"),
    ('["a", "list"]\n', r"docs\.jsonl:1: expected a JSON object, got list"),
    ('{"id": "1", "title": "t", "url": "u", "text": null}\n', r"docs\.jsonl:1: text must be a string"),
    ("\n\n", r"corpus file has no documents"),
])
def test_malformed_corpus_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "docs.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        CorpusSearch(path)
    assert "\n" not in str(info.value)


def test_missing_corpus_file(tmp_path, corpus):
    with pytest.raises(ValueError, match="corpus file not found: .*nope.jsonl"):
        CorpusSearch(tmp_path / "nope.jsonl")
    cs = CorpusSearch(corpus)
    corpus.unlink()
    with pytest.raises(SearchError, match="corpus search failed: corpus file not found"):
        cs.search("Talvor")


# --- factory --------------------------------------------------------------------------


def test_factory_builds_each_backend(corpus, tmp_path):
    from store.api import Store

    web = make_search("web", deadline_s=2.0)
    assert web.name == "web" and web.deadline_s == 2.0
    cs = make_search("corpus", corpus=str(corpus), snippet_chars=50)
    assert cs.name == "corpus" and cs.search("Miradel", k=1)[0].title == "Miradel"
    store = Store(str(tmp_path / "t.db"))
    try:
        assert make_search("frozen", store=store).name == "frozen"
    finally:
        store.close()


def test_factory_refuses_bad_specs():
    with pytest.raises(ValueError, match="unknown search backend 'bing': choose one of web, corpus, frozen"):
        make_search("bing")
    with pytest.raises(ValueError, match="needs a corpus file"):
        make_search("corpus")
    with pytest.raises(ValueError, match="needs a store"):
        make_search("frozen")
