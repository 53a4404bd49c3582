"""Build a search backend from its name on the command line."""

from __future__ import annotations

from agent.search.base import SearchBackend

SPECS = ("web", "corpus", "frozen")


def make_search(spec: str, corpus: str | None = None, store=None, **opts) -> SearchBackend:
    """"web" (DuckDuckGo), "corpus" (BM25 over a JSONL file) or "frozen" (stored results).

    `opts` go to the backend's constructor (e.g. deadline_s for web, snippet_chars for corpus).
    """
    name = (spec or "").strip().lower()
    if name == "web":
        from agent.search.web import WebSearch

        return WebSearch(**opts)
    if name == "corpus":
        if not corpus:
            raise ValueError("search 'corpus' needs a corpus file (JSONL of id, title, url, text)")
        from agent.search.corpus import CorpusSearch

        return CorpusSearch(corpus, **opts)
    if name == "frozen":
        if store is None:
            raise ValueError("search 'frozen' needs a store to replay stored results from")
        if opts:
            raise ValueError(f"search 'frozen' takes no options, got {', '.join(sorted(opts))}")
        from agent.search.frozen import FrozenSearch

        return FrozenSearch(store.search_cache)
    raise ValueError(f"unknown search backend {spec!r}: choose one of {', '.join(SPECS)}")
