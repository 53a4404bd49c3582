"""Frozen search replays results stored in a real SQLite Store."""

from __future__ import annotations

import pytest

from agent.search.base import SearchBackend, SearchError
from agent.search.frozen import FrozenSearch
from store.records import SearchCall, SearchResult

HITS = [
    SearchResult(1, "Talvor Brenn", "https://pocket.example/talvor-brenn", "Talvor Brenn was born in Miradel."),
    SearchResult(2, "Miradel", "https://pocket.example/miradel", "Miradel is a city in Varnland."),
    SearchResult(3, "Quillworks", "https://pocket.example/quillworks", "Quillworks makes pens."),
]


@pytest.fixture
def store(tmp_path):
    from store.api import Store

    s = Store(str(tmp_path / "t.db"))
    yield s
    s.close()


def test_replays_stored_results_for_the_exact_query(store):
    store.add_search(SearchCall(query="Talvor Brenn born", backend="web", results=HITS, latency_s=0.4))
    fs = FrozenSearch(store.search_cache)
    assert isinstance(fs, SearchBackend) and fs.name == "frozen"
    assert fs.search("Talvor Brenn born", k=3) == HITS
    two = fs.search("Talvor Brenn born", k=2)
    assert [(r.link_id, r.url) for r in two] == [(1, HITS[0].url), (2, HITS[1].url)]


def test_unknown_or_only_similar_query_is_an_error(store):
    store.add_search(SearchCall(query="Talvor Brenn born", backend="web", results=HITS))
    fs = FrozenSearch(store.search_cache)
    for query in ("Talvor Brenn", "talvor brenn born", "never searched"):
        with pytest.raises(SearchError, match="frozen search: no stored results for query"):
            fs.search(query)


def test_failed_searches_are_not_replayed_but_empty_ones_are(store):
    store.add_search(SearchCall(query="flaky", backend="web", error="web search failed: timed out"))
    store.add_search(SearchCall(query="nothing there", backend="corpus", results=[]))
    fs = FrozenSearch(store.search_cache)
    with pytest.raises(SearchError, match="no stored results for query 'flaky'"):
        fs.search("flaky")
    assert fs.search("nothing there") == []


def test_newest_stored_results_win(store):
    store.add_search(SearchCall(query="q", backend="web", results=HITS[:1]))
    store.add_search(SearchCall(query="q", backend="web", results=HITS[1:]))
    assert [r.title for r in FrozenSearch(store.search_cache).search("q")] == ["Miradel", "Quillworks"]


def test_broken_lookup_is_a_search_error_not_an_empty_answer(tmp_path):
    from store.api import Store

    s = Store(str(tmp_path / "gone.db"))
    fs = FrozenSearch(s.search_cache)
    s.engine.dispose()
    (tmp_path / "gone.db").unlink()
    (tmp_path / "gone.db").mkdir()  # the database path is now a directory: SQLite cannot open it
    with pytest.raises(SearchError, match="frozen search failed: cannot read stored results"):
        fs.search("q")
