"""Local corpus search: BM25 (bm25s) over a JSONL file of documents {id, title, url, text}.

Results have the same shape as web results, so the agent cannot tell the two apart.
The pocket world is full of made-up names ("Talvor Brenn"), so tokens are plain
lowercased words and numbers with no stemming: "Brenn" must not match "Brenner".
The index is built once per file version (path, size, mtime) and shared in-process.
"""

from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from agent.inputs import InputError, json_line, read_lines
from agent.search.base import SearchError
from agent.search.web import truncate
from store.records import SearchResult

_WORD = re.compile(r"[^\W_]+")  # letters and digits of any script; "_" and punctuation split
_SENTENCE = re.compile(r"(?<=[.!?])\s+")

# Only the commonest function words: they carry no evidence but would let "the" and "of"
# decide ties. Kept short on purpose so no plausible name is ever dropped.
STOPWORDS = frozenset("""a an and are as at be by for from has have in is it its of on or that
the this to was were what when where which who whom whose why with""".split())

REQUIRED = ("id", "title", "url", "text")


def tokenize(text: str) -> list[str]:
    """Lowercased words and numbers, stopwords removed, no stemming."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    url: str
    text: str


class _Index:
    """Documents, their BM25 index and document frequencies (for picking passages)."""

    def __init__(self, docs: list[Document]):
        # bm25s uses JAX for top-k when JAX is installed; JAX would then grab most of the GPU
        # in every collector process. BM25 is CPU work: keep JAX on the CPU.
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        import bm25s  # imported here: cli.py imports this module at startup

        self.docs = docs
        tokens = [tokenize(f"{d.title} {d.text}") for d in docs]
        self.retriever = bm25s.BM25()
        self.retriever.index(tokens, show_progress=False)
        self.df: dict[str, int] = {}
        for toks in tokens:
            for t in set(toks):
                self.df[t] = self.df.get(t, 0) + 1

    def idf(self, token: str) -> float:
        n = len(self.docs)
        return math.log(1 + (n - self.df.get(token, 0) + 0.5) / (self.df.get(token, 0) + 0.5))

    def top(self, query_tokens: list[str], k: int) -> list[int]:
        """Indices of the k best documents with a positive score; ties go to the earlier doc."""
        known = [t for t in dict.fromkeys(query_tokens) if t in self.df]
        if not known:
            return []
        scores = self.retriever.get_scores(known)
        ranked = sorted((i for i in range(len(self.docs)) if scores[i] > 0),
                        key=lambda i: (-float(scores[i]), i))
        return ranked[:k]


_CACHE: dict[tuple[str, int, int], _Index] = {}
_CACHE_LOCK = threading.Lock()


def load_documents(path: Path) -> list[Document]:
    """Parse the JSONL corpus; any bad line is a ValueError (InputError) naming file and line."""
    if not path.is_file():
        raise InputError(f"corpus file not found: {path}")
    docs: list[Document] = []
    for lineno, line in read_lines(path, "corpus file"):
        if not line.strip():
            continue
        row = json_line(path, lineno, line)
        if not isinstance(row, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        missing = [key for key in REQUIRED if key not in row]
        if missing:
            raise InputError(f"{path}:{lineno}: document lacks {', '.join(missing)} "
                             f"(needs {', '.join(REQUIRED)})")
        bad = [key for key in REQUIRED if not isinstance(row[key], (str, int)) or isinstance(row[key], bool)]
        if bad:
            raise InputError(f"{path}:{lineno}: {', '.join(bad)} must be a string")
        docs.append(Document(*(str(row[key]) for key in REQUIRED)))
    if not docs:
        raise InputError(f"corpus file has no documents: {path}")
    return docs


def _index_for(path: Path) -> _Index:
    """The shared index for this version of the file; rebuilt when the file changes."""
    try:
        st = path.stat()
    except OSError:
        raise ValueError(f"corpus file not found: {path}") from None
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _CACHE_LOCK:
        index = _CACHE.get(key)
        if index is None:
            index = _Index(load_documents(path))
            for old in [k for k in _CACHE if k[0] == key[0]]:
                del _CACHE[old]  # an older version of the same file
            _CACHE[key] = index
        return index


def best_passage(text: str, query_tokens: list[str], idf, max_chars: int) -> str:
    """The run of whole sentences (≤ max_chars) covering the most query weight; else the start.

    Weight is the summed idf of the distinct query tokens a passage contains, so a rare
    name outweighs a common word; ties go to the earliest passage.
    """
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    pieces: list[str] = []
    for sentence in _SENTENCE.split(text):
        while len(sentence) > max_chars:  # an over-long sentence is cut into word windows
            cut = truncate(sentence, max_chars).rstrip("…")
            pieces.append(cut)
            sentence = sentence[len(cut):].lstrip()
        if sentence:
            pieces.append(sentence)
    wanted = set(query_tokens)
    best, best_score = None, 0.0
    for start in range(len(pieces)):
        passage = pieces[start]
        end = start + 1
        while end < len(pieces) and len(passage) + 1 + len(pieces[end]) <= max_chars:
            passage += " " + pieces[end]
            end += 1
        score = sum(idf(t) for t in wanted & set(tokenize(passage)))
        if score > best_score:
            best, best_score = passage, score
    return best if best is not None else truncate(text, max_chars)


class CorpusSearch:
    """BM25 over a JSONL corpus; builds (or reuses) the index when constructed."""

    name = "corpus"

    def __init__(self, path: str | Path, snippet_chars: int = 300):
        if snippet_chars < 20:
            raise ValueError(f"corpus search: snippet_chars must be at least 20, got {snippet_chars}")
        self.path = Path(path).expanduser().resolve()
        self.snippet_chars = snippet_chars
        self._index = _index_for(self.path)

    def search(self, query: str, k: int = 3) -> list[SearchResult]:
        if k < 1:
            raise SearchError(f"corpus search failed: k must be at least 1, got {k}")
        try:
            index = _index_for(self.path)  # cheap stat; picks up an edited file
        except ValueError as e:
            raise SearchError(f"corpus search failed: {e}") from None
        tokens = tokenize(query)
        results = []
        for rank, i in enumerate(index.top(tokens, k), start=1):
            doc = index.docs[i]
            snippet = best_passage(doc.text, tokens, index.idf, self.snippet_chars)
            results.append(SearchResult(link_id=rank, title=doc.title, url=doc.url, snippet=snippet))
        return results
