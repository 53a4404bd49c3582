"""The one interface every search backend implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from store.records import SearchResult


class SearchError(RuntimeError):
    """A search failed for good (after retries). The agent records it and goes on."""


@runtime_checkable
class SearchBackend(Protocol):
    name: str

    def search(self, query: str, k: int = 3) -> list[SearchResult]:
        """Top-k results, link ids numbered from 1. Raises SearchError on failure."""
        ...
