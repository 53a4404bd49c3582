"""The prefix cache (agent/llm/prefix_cache.py) and the graph engine's reuse of it across steps:
greedy outputs equal a fresh prefill's, token for token, over multi-step trajectories; the
counters say how much was prefilled, reused and recomputed; eviction under a small budget
costs recomputation, never correctness."""

from __future__ import annotations

import math
import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.openai_server import build_lively_model  # noqa: E402


def _kv(tokens, layers=2, heads=1, dim=2):
    """A fake KV block whose values encode each token's id, to check which tokens come back."""
    import torch

    t = torch.tensor(tokens, dtype=torch.float32)
    return t.view(1, 1, 1, -1, 1).expand(layers, 2, heads, len(tokens), dim).clone()


def _store(cache, seq):
    return cache.insert(seq, lambda a, b: _kv(seq[a:b]))


def _gather(match):
    return [int(kv[0, 0, 0, i, 0]) for kv, a, b in match.pieces for i in range(a, b)]


def test_match_returns_the_cached_kv_of_the_longest_prefix_and_splits_where_sequences_diverge():
    from agent.llm.prefix_cache import PrefixCache, common_prefix

    assert common_prefix([1, 2, 3, 4], [1, 2, 9]) == 2 and common_prefix([5], [6]) == 0
    assert common_prefix(list(range(100)), list(range(57)) + [0]) == 57
    cache = PrefixCache(budget_bytes=10**6)
    assert _store(cache, [1, 2, 3, 4, 5]) == 5
    assert _store(cache, [1, 2, 3, 9, 9]) == 2  # only the new tail is asked for
    m = cache.match([1, 2, 3, 9, 9, 7])
    assert (m.length, m.seen, _gather(m)) == (5, 5, [1, 2, 3, 9, 9])
    m = cache.match([1, 2, 3, 4, 5], limit=4)  # the engine always leaves a token to prefill
    assert (m.length, _gather(m)) == (4, [1, 2, 3, 4])
    assert cache.match([2, 1]).length == 0
    assert cache.kv_tokens == 7 and cache.bytes == 7 * 2 * 2 * 1 * 2 * 4


def test_eviction_keeps_tokens_as_seen_and_refills_them():
    from agent.llm.prefix_cache import PrefixCache

    per_token = 2 * 2 * 1 * 2 * 4
    cache = PrefixCache(budget_bytes=8 * per_token)
    _store(cache, [1, 2, 3, 4, 5])
    _store(cache, [7, 8, 9, 10, 11])  # over budget: the older sequence loses its KV
    old, new = cache.match([1, 2, 3, 4, 5]), cache.match([7, 8, 9, 10, 11])
    assert (old.length, old.seen) == (0, 5)  # computed before, no longer held: a recompute
    assert new.length == 5 and cache.bytes <= cache.budget_bytes
    assert cache.stats["evicted_tokens"] == 5
    _store(cache, [1, 2, 3])  # KV again for a seen prefix
    assert _gather(cache.match([1, 2, 3, 4])) == [1, 2, 3]
    small = PrefixCache(budget_bytes=0, max_seen_tokens=4)
    small.insert([1, 2, 3], None)
    small.insert([4, 5, 6], None)  # token-only records, capped
    assert small.seen_tokens <= 4 and small.bytes == 0


@pytest.fixture(scope="module")
def lively(tmp_path_factory):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_lively_model(tmp_path_factory.mktemp("lively-prefix"))
    tok = AutoTokenizer.from_pretrained(path)
    return tok, AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _engine(lively, **kw):
    from agent.llm.engine import EngineOptions
    from agent.llm.graph_engine import GraphEngine

    tok, model = lively
    return GraphEngine(model, EngineOptions(kind="graph", **kw), [tok.eos_token_id], tok.pad_token_id)


def _trajectory_steps(vocab, steps=4, trajectories=3, seed=0):
    """Step prompts as an agent makes them: a shared instruction header; each step keeps its
    previous prompt (less a 2-token turn end, like a chat template's), then adds new tokens."""
    rng = random.Random(seed)
    draw = lambda n: [rng.randrange(5, vocab) for _ in range(n)]  # noqa: E731
    header, end = draw(20), draw(2)
    bodies = [header + draw(6 + 4 * i) for i in range(trajectories)]
    out = []
    for _ in range(steps):
        out.append([b + end for b in bodies])
        bodies = [b + draw(7) for b in bodies]
    return out


def test_greedy_steps_from_cached_prefixes_equal_fresh_prefills_and_count_what_they_skip(lively):
    tok, _ = lively
    cached, fresh = _engine(lively), _engine(lively, prefix_cache=False)
    assert cached.prefix is not None and fresh.prefix is None
    texts, asked = set(), 0
    for step, prompts in enumerate(_trajectory_steps(len(tok))):
        rows = [p for p in prompts for _ in range(2)]  # K = 2 rows a prompt
        asked += sum(len(p) for p in prompts)
        got = cached.run(rows, [6] * len(rows), do_sample=False, temperature=1.0)
        want = fresh.run(rows, [6] * len(rows), do_sample=False, temperature=1.0)
        assert got[0] == want[0], step
        assert all(math.isclose(x, y, abs_tol=1e-4) for a, b in zip(got[1], want[1]) for x, y in zip(a, b))
        texts.update(tuple(t) for t in got[0])
    assert len(texts) > 2  # the prompts get different answers: not vacuous
    st = cached.prefix_stats
    assert st["prompt_tokens"] == 2 * asked and st["distinct_prompt_tokens"] == asked
    assert st["recomputed_tokens"] == 0  # nothing computed twice, header included
    assert st["prefilled_tokens"] + st["reused_tokens"] >= asked
    assert st["prefilled_tokens"] < 0.45 * asked  # only each step's new tokens (and the turn end)
    assert fresh.prefix_stats["prefilled_tokens"] == asked  # one prefill a distinct prompt
    assert fresh.prefix_stats["recomputed_tokens"] > 0  # the header, once per trajectory


def test_generated_tokens_are_cached_so_a_prompt_that_continues_an_answer_reuses_them(lively):
    tok, _ = lively
    engine = _engine(lively)
    prompt = tok('Search(query="founder of Acme", thoughts="find the founder")',
                 add_special_tokens=False)["input_ids"]
    (out,), _ = engine.run([prompt], [8], do_sample=False, temperature=1.0)
    before = engine.prefix_stats["prefilled_tokens"]
    follow = prompt + out[:7] + prompt[:3]  # the answer (all but its last token has K/V) and more
    (again,), _ = engine.run([follow], [5], do_sample=False, temperature=1.0)
    assert engine.prefix_stats["prefilled_tokens"] - before == 3
    (want,), _ = _engine(lively, prefix_cache=False).run([follow], [5], do_sample=False, temperature=1.0)
    assert again == want


def test_a_tiny_budget_evicts_and_recomputes_with_the_same_outputs(lively):
    tok, _ = lively
    small = _engine(lively, prefix_cache_gib=40 * 1024 / 2**30)  # ~40 KB: a few dozen tokens
    fresh = _engine(lively, prefix_cache=False)
    for prompts in _trajectory_steps(len(tok), steps=3, seed=1):
        got = small.run(prompts, [5] * len(prompts), do_sample=False, temperature=1.0)
        assert got[0] == fresh.run(prompts, [5] * len(prompts), do_sample=False, temperature=1.0)[0]
    assert small.prefix.stats["evicted_tokens"] > 0
    assert small.prefix_stats["recomputed_tokens"] > 0  # counted, not hidden
    assert small.prefix.bytes <= small.prefix.budget_bytes


def test_sampled_k_rows_from_a_cached_prefix_carry_raw_logprobs(lively):
    import torch

    from agent.llm.engine import rescore

    tok, model = lively
    engine = _engine(lively)
    steps = _trajectory_steps(len(tok), steps=2, trajectories=1, seed=2)
    engine.run(steps[0], [4], do_sample=False, temperature=1.0)
    rows = steps[1] * 4
    torch.manual_seed(0)
    new, lps = engine.run(rows, [10] * 4, do_sample=True, temperature=0.5)
    assert engine.prefix_stats["reused_tokens"] > 0 and len({tuple(n) for n in new}) > 1
    for toks, lp, re in zip(new, lps, rescore(model, rows, new, tok.pad_token_id)):
        end = toks.index(tok.eos_token_id) + 1 if tok.eos_token_id in toks else len(toks)
        assert all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(lp[:end], re[:end]))


def test_the_backend_reports_the_counters_and_the_option_parses(lively, tmp_path):
    from store.records import GenRequest
    from agent.llm.engine import EngineOptions
    from agent.llm.hf import HFBackend

    assert EngineOptions.parse("graph+no-prefix-cache").label() == "graph+no-prefix-cache"
    assert EngineOptions.parse("graph").label() == "graph"
    with pytest.raises(ValueError):
        EngineOptions.parse("plain+no-prefix-cache")
    path = build_lively_model(tmp_path / "m")
    with HFBackend(str(path), dtype="fp32", engine="graph") as b:
        prompt = "ORIGINAL_QUESTION PAST_ACTIONS REMAINING_SEARCHES"
        b.generate(GenRequest(prompt, max_new_tokens=3))
        b.generate(GenRequest(prompt + " CURRENT_SEARCH_RESULTS", max_new_tokens=3))
        st = b.prefix_stats
    assert st["reused_tokens"] > 0 and st["cache_tokens"] > 0 and st["recomputed_tokens"] == 0
    with HFBackend(str(path), dtype="fp32", engine="plain") as b:
        assert b.prefix_stats is None


def test_eviction_takes_the_same_victims_as_a_full_scan_for_the_least_recent_leaf():
    """The heap eviction frees exactly what picking, victim by victim, the least recently used
    KV leaf of the whole trie frees (the definition of LRU here), on a workload that splits,
    extends, evicts and refills nodes."""
    import random

    import torch

    from agent.llm.prefix_cache import PrefixCache
    from benchmarks.prefix_cache_host import WalkPerVictim as FullScan

    def held(cache):
        return sorted((n.start, n.tokens) for n in cache._nodes() if n.kv is not None)

    rng = random.Random(3)
    heads = [[rng.randrange(50) for _ in range(rng.randrange(3, 12))] for _ in range(4)]
    kv = lambda a, b: torch.zeros(1, 1, 1, b - a, 1)  # noqa: E731 (4 bytes a token)
    fast, slow = PrefixCache(4 * 60), FullScan(4 * 60)
    seqs = []
    for _ in range(300):
        base = rng.choice(seqs) if seqs and rng.random() < 0.6 else rng.choice(heads)
        seq = base[:rng.randrange(1, len(base) + 1)] + [rng.randrange(50) for _ in range(rng.randrange(1, 8))]
        seqs.append(seq)
        for cache in (fast, slow):
            cache.match(seq)
            cache.insert(seq, kv)
        assert held(fast) == held(slow)
    assert fast.stats == slow.stats and fast.stats["evicted_tokens"] > 100
