"""KV of token sequences the engine already computed, kept in a token trie for prompts that extend them.

Why: an agent's step prompt repeats most of what the model saw one step earlier (the
instructions, the question, the actions so far), and trajectories share their instructions.
Prefilling those tokens again is the cost that grows with the trajectory. The graph engine
(agent/llm/graph_engine.py) looks every prompt up here, prefills only the tokens after the
longest cached prefix, and stores what it computed afterwards.

The KV of a token depends only on the tokens before it (positions count from the sequence
start, whatever column a row is padded to), so a node's KV serves every later sequence that
starts with the node's path. A node holds one segment of tokens and its KV as one tensor
[layers, 2 (keys, values), kv heads, segment length, head dim]; a lookup may end inside a
segment. Nodes are split where sequences diverge.

The KV is only valid for the weights that computed it: an engine, and so its cache, serves
one model (a new adapter is a new backend, agent/setup.py's PolicyPool).

Memory is bounded by `budget_bytes`: the least recently used leaves lose their KV first, so
the nodes holding KV always form a prefix-closed tree. A node that lost its KV keeps its
tokens (a few bytes each, capped by `max_seen_tokens`), which is how the counters tell a
token computed for the first time from one computed again ("recomputed").
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    if tuple(a[:n]) == tuple(b[:n]):  # the common case, at C speed
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]: bisect on slice equality
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if tuple(a[lo:mid]) == tuple(b[lo:mid]):
            lo = mid
        else:
            hi = mid
    return lo if a[lo] != b[lo] else lo + 1


@dataclass(eq=False)
class Node:
    tokens: tuple  # this node's segment (the root's is empty)
    parent: Optional["Node"]
    start: int  # tokens before this segment (the depth of its first token)
    kv: object = None  # [layers, 2, kv heads, len(tokens), head dim], or None once evicted
    children: dict = field(default_factory=dict)  # first token -> Node
    used: int = 0  # LRU stamp

    @property
    def end(self) -> int:
        return self.start + len(self.tokens)

    def nbytes(self) -> int:
        return 0 if self.kv is None else self.kv.numel() * self.kv.element_size()


@dataclass
class Match:
    """A lookup: the first `length` tokens have KV in `pieces` (tensor, first, end) in order;
    `seen` tokens were computed before at some point (>= length)."""

    length: int
    pieces: list
    seen: int


class PrefixCache:
    """Token trie of cached KV; see the module docstring. Not thread-safe (one engine thread)."""

    def __init__(self, budget_bytes: int, max_seen_tokens: int = 4_000_000):
        self.budget_bytes = int(budget_bytes)
        self.max_seen_tokens = int(max_seen_tokens)
        self.root = Node(tokens=(), parent=None, start=0)
        self.bytes = 0
        self.kv_tokens = 0  # tokens with KV held
        self.seen_tokens = 0  # tokens in the trie, with KV or not
        self._clock = itertools.count(1)
        self.stats = {"lookups": 0, "hits": 0, "evicted_tokens": 0, "inserted_tokens": 0}

    # --- lookup -----------------------------------------------------------------------

    def match(self, tokens: Sequence[int], limit: Optional[int] = None) -> Match:
        """The longest cached prefix of `tokens` (at most `limit` tokens) and how far it was seen."""
        limit = len(tokens) if limit is None else min(limit, len(tokens))
        stamp = next(self._clock)
        node, pos, pieces, kv_len = self.root, 0, [], 0
        kv_ok = True
        while pos < len(tokens):
            child = node.children.get(tokens[pos])
            if child is None:
                break
            n = common_prefix(child.tokens, tokens[pos:pos + len(child.tokens)])
            child.used = stamp
            if kv_ok and child.kv is not None:
                take = min(n, limit - pos)
                if take > 0:
                    pieces.append((child.kv, 0, take))
                    kv_len = pos + take
            else:
                kv_ok = False
            pos += n
            if n < len(child.tokens):
                break
            node = child
        self.stats["lookups"] += 1
        self.stats["hits"] += kv_len > 0
        return Match(length=kv_len, pieces=pieces, seen=pos)

    # --- insert -------------------------------------------------------------------------

    def insert(self, tokens: Sequence[int], kv_of: Optional[Callable[[int, int], object]]) -> int:
        """Store the KV of `tokens`; `kv_of(a, b)` gives tokens[a:b]'s KV (a fresh tensor).

        Only the part not already cached is asked for. Returns the tokens newly given KV.
        With `kv_of=None` the tokens are only remembered as seen (for the counters).
        """
        tokens = tuple(tokens)
        stamp = next(self._clock)
        node, pos = self.root, 0
        while pos < len(tokens):
            child = node.children.get(tokens[pos])
            if child is None:
                break
            n = common_prefix(child.tokens, tokens[pos:pos + len(child.tokens)])
            child.used = stamp
            if n < len(child.tokens):
                child = self._split(child, n)
            if child.kv is None and kv_of is not None:  # seen before, KV evicted since: fill it in
                self._set_kv(child, kv_of(child.start, child.end))
                self.stats["inserted_tokens"] += len(child.tokens)
            pos += n
            node = child
        added = 0
        if pos < len(tokens):
            new = Node(tokens=tokens[pos:], parent=node, start=pos, used=stamp)
            node.children[tokens[pos]] = new
            self.seen_tokens += len(new.tokens)
            if kv_of is not None:
                self._set_kv(new, kv_of(pos, len(tokens)))
                added = len(new.tokens)
                self.stats["inserted_tokens"] += added
        self._fit()
        return added

    def _split(self, node: Node, n: int) -> Node:
        """Cut `node` after its first n tokens; returns the new upper part (same parent)."""
        upper = Node(tokens=node.tokens[:n], parent=node.parent, start=node.start, used=node.used)
        if node.kv is not None:  # clones, so each part's memory is freed on its own
            upper.kv = node.kv[:, :, :, :n].clone()
            node.kv = node.kv[:, :, :, n:].clone()
        node.parent.children[node.tokens[0]] = upper
        node.tokens, node.start, node.parent = node.tokens[n:], node.start + n, upper
        upper.children[node.tokens[0]] = node
        return upper

    def _set_kv(self, node: Node, kv) -> None:
        self._drop_kv(node)
        node.kv = kv
        self.bytes += node.nbytes()
        self.kv_tokens += len(node.tokens)

    def _drop_kv(self, node: Node) -> None:
        if node.kv is not None:
            self.bytes -= node.nbytes()
            self.kv_tokens -= len(node.tokens)
            node.kv = None

    # --- memory -------------------------------------------------------------------------

    def evict(self, need_bytes: int) -> int:
        """Free at least `need_bytes` of KV (least recently used leaves first); bytes freed.

        One walk of the trie finds the leaves holding KV; a heap then gives them out oldest
        first, and a parent joins it once its last child with KV is gone. (A walk per victim
        made a full cache's evictions quadratic: seconds of host time a trajectory batch,
        benchmarks/prefix_cache_host.py.)
        """
        if need_bytes <= 0 or self.bytes == 0:
            return 0
        freed = 0
        for victim in self._oldest_first(self._kv_leaf):
            if freed >= need_bytes:
                break
            freed += victim.nbytes()
            self.stats["evicted_tokens"] += len(victim.tokens)
            self._drop_kv(victim)
        return freed

    def _oldest_first(self, is_leaf: Callable[[Node], bool]):
        """Nodes for which `is_leaf` holds, least recently used first, from one walk of the
        trie and a heap. The caller removes each node it is given (its KV, or the node) before
        asking for the next; a parent that has become a leaf then joins the heap."""
        order = itertools.count()
        heap = [(x.used, next(order), x) for x in self._nodes() if is_leaf(x)]
        heapq.heapify(heap)
        while heap:
            _, _, node = heapq.heappop(heap)
            yield node
            parent = node.parent
            if parent is not self.root and is_leaf(parent):
                heapq.heappush(heap, (parent.used, next(order), parent))

    @staticmethod
    def _kv_leaf(node: Node) -> bool:
        """Holds KV, and none of its children does: the only nodes eviction may take."""
        return node.kv is not None and not any(c.kv is not None for c in node.children.values())

    def clear(self) -> None:
        """Drop all KV (tokens stay for the counters)."""
        self.evict(self.bytes + 1)

    def _fit(self) -> None:
        if self.bytes > self.budget_bytes:
            self.evict(self.bytes - self.budget_bytes)
        if self.seen_tokens > self.max_seen_tokens:
            self._forget(self.seen_tokens - self.max_seen_tokens)

    def _nodes(self):
        stack = [self.root]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            if node is not self.root:
                yield node

    def _forget(self, n_tokens: int) -> None:
        """Remove whole KV-less leaves (least recent first) until n_tokens are gone; a parent
        left childless and KV-less becomes a leaf in its turn."""
        gone = 0
        for leaf in self._oldest_first(lambda x: not x.children and x.kv is None):
            if gone >= n_tokens:
                break
            del leaf.parent.children[leaf.tokens[0]]
            gone += len(leaf.tokens)
            self.seen_tokens -= len(leaf.tokens)
