"""Frozen search: answers only from results already stored for the exact same query.

A collection or an evaluation re-run in frozen mode sees exactly the evidence the first
run saw, so differences come from the model, not from a search engine that changed.
"""

from __future__ import annotations

from typing import Callable

from agent.search.base import SearchError
from store.records import SearchResult

Lookup = Callable[[str], "list[dict] | None"]


class FrozenSearch:
    """Replays stored results; an unknown query is an error, never a live search."""

    name = "frozen"

    def __init__(self, lookup: Lookup):
        self.lookup = lookup  # e.g. Store.search_cache: newest successful results, or None

    def search(self, query: str, k: int = 3) -> list[SearchResult]:
        if k < 1:
            raise SearchError(f"frozen search failed: k must be at least 1, got {k}")
        try:
            rows = self.lookup(query)
        except Exception as e:  # a broken store must not look like "no results"
            raise SearchError(f"frozen search failed: cannot read stored results: {e}") from None
        if rows is None:
            raise SearchError(f"frozen search: no stored results for query {query!r}")
        try:
            stored = [SearchResult.from_dict(r) for r in rows]
        except (KeyError, TypeError, ValueError) as e:
            raise SearchError(f"frozen search failed: malformed stored result for query {query!r}: {e!r}") from None
        # Stored in the order first shown; renumber so a smaller k still counts from 1.
        return [SearchResult(i, r.title, r.url, r.snippet) for i, r in enumerate(stored[:k], start=1)]
