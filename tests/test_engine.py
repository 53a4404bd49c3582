"""Rollout engine options (agent/llm/engine.py) on a real tiny Llama: every option gives the
plain path's greedy tokens and log-probabilities; shared prefill really skips prefills;
continuous batching serves concurrent callers and leaves the model as it found it."""

from __future__ import annotations

import math
import os
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agent.llm.base import LLMError
from store.records import GenRequest
from tests.harness import all_at_once  # noqa: E402
from tests.openai_server import build_lively_model  # noqa: E402

PROMPTS = [
    "hi",
    'Search(query="founder of Acme", thoughts="find the founder")',
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9",
    "xyz",
    "Answer",
    "ORIGINAL_QUESTION PAST_ACTIONS REMAINING_SEARCHES CURRENT_SEARCH_RESULTS",
]
CB_SMALL = dict(cb_block_size=16, cb_num_blocks=128, cb_max_batch_tokens=512, seed=0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_lively_model(tmp_path_factory.mktemp("lively-engine"))


def _backend(model_dir, engine=None, max_batch=32, wait=0.3):
    from agent.llm.hf import HFBackend

    return HFBackend(str(model_dir), dtype="fp32", max_batch=max_batch, batch_wait_s=wait,
                     engine=engine)


@pytest.fixture(scope="module")
def plain(model_dir):
    b = _backend(model_dir, engine="plain", max_batch=1, wait=0.0)  # explicit: 'auto' is graph on CUDA
    yield b
    b.close()


def _concurrently(backend, requests):
    return all_at_once(backend.generate_detailed, requests)


def _greedy_requests():
    return [GenRequest(p, max_new_tokens=6 + 3 * i) for i, p in enumerate(PROMPTS)]


def _assert_same_greedy(plain, got_list, requests):
    texts = set()
    for req, (gen, lps) in zip(requests, got_list):
        ref, ref_lps = plain.generate_detailed(req)
        a, b = gen.completions[0], ref.completions[0]
        assert (a.text, a.n_tokens) == (b.text, b.n_tokens), req.prompt
        assert len(lps[0]) == len(ref_lps[0]) == a.n_tokens
        assert all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(lps[0], ref_lps[0])), req.prompt
        texts.add(a.text)
    assert len(texts) > 1  # the lively model answers prompts differently: not vacuous


# --- options ---------------------------------------------------------------------------


def test_options_parse_and_refuse_bad_combinations(model_dir):
    from agent.llm.engine import EngineOptions

    assert EngineOptions.parse(None).is_plain and EngineOptions.parse("plain").is_plain
    opts = EngineOptions.parse("static+compile")
    assert (opts.cache, opts.compile, opts.label()) == ("static", True, "static+compile")
    assert EngineOptions.parse("share-prefix").share_prefix
    assert EngineOptions.parse("continuous").kind == "continuous"
    for bad in ("compile", "static+share-prefix", "continuous+static", "warp-drive"):
        with pytest.raises(ValueError):
            EngineOptions.parse(bad)
    with pytest.raises(LLMError, match="unknown engine option 'warp-drive'"):
        _backend(model_dir, engine="warp-drive")


def test_unique_rows_and_positions_match_generate():
    import torch

    from agent.llm.engine import left_pad, positions, unique_rows

    distinct, index = unique_rows([[1, 2], [3], [1, 2], [3], [4, 5, 6]])
    assert distinct == [[1, 2], [3], [4, 5, 6]] and index == [0, 1, 0, 1, 2]
    ids, mask = left_pad([[7, 8], [9]], pad_id=0)
    assert ids.tolist() == [[7, 8], [0, 9]] and mask.tolist() == [[1, 1], [0, 1]]
    assert torch.equal(positions(mask), torch.tensor([[0, 1], [1, 0]]))


# --- greedy equality, option by option -------------------------------------------------


@pytest.mark.parametrize("engine", ["static", "share-prefix"])
def test_generate_engines_match_the_plain_path(model_dir, plain, engine):
    requests = _greedy_requests()
    with _backend(model_dir, engine=engine) as b:
        got = _concurrently(b, requests)
        assert b.generate_calls < len(requests)  # still batched
        assert got[0][0].options["engine"] == engine
    _assert_same_greedy(plain, got, requests)
    assert "engine" not in plain.generate(requests[0]).options  # default records unchanged


def test_continuous_engine_matches_the_plain_path_and_restores_the_model(model_dir, plain):
    from agent.llm.engine import EngineOptions

    requests = _greedy_requests()
    b = _backend(model_dir, engine=EngineOptions(kind="continuous", **CB_SMALL))
    try:
        got = _concurrently(b, requests)
        assert got[0][0].options["engine"] == "continuous"
        twin = b._continuous.twin
        assert twin.model.embed_tokens.weight.data_ptr() == b.model.model.embed_tokens.weight.data_ptr()
        # transformers 5.17 switches the served model to paged attention while the manager
        # runs (5.25 leaves it as it is); the twin the plain path uses keeps SDPA either way.
        assert "paged" not in twin.config._attn_implementation
    finally:
        b.close()
    assert "paged" not in b.model.config._attn_implementation  # restored on close
    _assert_same_greedy(plain, got, requests)


@pytest.mark.slow  # ~20 s with a cold inductor cache
def test_static_cache_compiled_on_cpu_matches(model_dir, plain):
    """torch.compile of the static-cache decode step (forced on CPU) keeps greedy outputs."""
    from agent.llm.engine import EngineOptions

    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("torch.compile on CPU needs a C compiler")
    requests = _greedy_requests()[:3]
    opts = EngineOptions(cache="static", compile=True, compile_everywhere=True)
    with _backend(model_dir, engine=opts) as b:
        got = _concurrently(b, requests)
    _assert_same_greedy(plain, got, requests)


# --- shared prefill --------------------------------------------------------------------------


def test_shared_prefill_skips_repeated_prompts_and_keeps_greedy_rows(model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agent.llm.engine import EngineOptions, GenerateEngine, left_pad

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    a, b = (tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS[1:3])
    rows = [a, a, a, b, a, b]  # K copies of two prompts, interleaved
    kw = dict(max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id,
              eos_token_id=tok.eos_token_id)
    ids, mask = left_pad(rows, tok.pad_token_id)
    with torch.inference_mode():
        ref = model.generate(input_ids=ids, attention_mask=mask, **kw)
    engine = GenerateEngine(EngineOptions(share_prefix=True))
    got = engine.generate(model, rows, tok.pad_token_id, **kw)
    assert torch.equal(got, ref)
    assert engine.prefill_rows_saved == 4  # six rows, two distinct prompts
    assert ref[0, ids.shape[1]:].tolist() != ref[3, ids.shape[1]:].tolist()  # not vacuous


def test_k_samples_with_shared_prefill_equal_plain_sampling_and_carry_raw_logprobs(model_dir):
    """Sampled rows from a shared prefill: with the same seed the very same tokens as the plain
    path, and the backend's log-prob recorder sees the raw distribution a teacher-forced pass
    gives for those tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    from agent.llm.engine import EngineOptions, GenerateEngine, rescore
    from agent.llm.hf import _LogprobRecorder

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt = tok(PROMPTS[2], add_special_tokens=False)["input_ids"]
    rows = [prompt] * 4 + [prompt[:5]]  # K = 4 samples of one prompt, plus a shorter prompt
    width = max(len(r) for r in rows)
    out = {}
    for share in (False, True):
        recorder = _LogprobRecorder()
        engine = GenerateEngine(EngineOptions(share_prefix=share))
        torch.manual_seed(0)
        seqs = engine.generate(model, rows, tok.pad_token_id, max_new_tokens=8, do_sample=True,
                               top_k=0, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                               logits_processor=LogitsProcessorList([recorder]))
        steps = recorder.finish(seqs[:, -1])
        out[share] = (seqs[:, width:].tolist(), [[s[r] for s in steps] for r in range(len(rows))],
                      engine.prefill_rows_saved)
    assert out[True][0] == out[False][0]  # same seed, same samples
    assert (out[False][2], out[True][2]) == (0, 3)
    new, recorded, _ = out[True]
    assert len({tuple(n) for n in new[:4]}) > 1  # the K samples differ
    again = rescore(model, rows, new, tok.pad_token_id)
    for toks, lp, re in zip(new, recorded, again):
        # Up to and including EOS (after it generate pads the row).
        end = toks.index(tok.eos_token_id) + 1 if tok.eos_token_id in toks else len(toks)
        assert all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(lp[:end], re[:end]))


def test_continuous_samples_at_paper_temperature_with_raw_logprobs(model_dir, plain):
    from agent.llm.engine import EngineOptions

    b = _backend(model_dir, engine=EngineOptions(kind="continuous", **CB_SMALL))
    try:
        gen, lps = b.generate_detailed(GenRequest(PROMPTS[1], n=4, max_new_tokens=10))
    finally:
        b.close()
    assert gen.options["temperature"] == 0.5 and len(gen.completions) == 4
    assert len({c.text for c in gen.completions}) > 1
    for c, lp in zip(gen.completions, lps):
        assert 1 <= c.n_tokens == len(lp) <= 10
        assert all(x <= 0 and math.isfinite(x) for x in lp)
        assert math.isclose(c.logprob, sum(lp), abs_tol=1e-6)


# --- the graph engine (agent/llm/graph_engine.py) -----------------------------------------
# On a CPU it runs its decode loop eagerly: the same prefill, cache bookkeeping, masks and
# sampling that the CUDA graph replays on a GPU.


def test_graph_engine_matches_the_plain_path(model_dir, plain):
    from agent.llm.engine import EngineOptions

    requests = _greedy_requests()
    with _backend(model_dir, engine="graph") as b:
        got = _concurrently(b, requests)
        assert b.generate_calls < len(requests)  # batched
        assert got[0][0].options["engine"] == "graph"
        shapes = list(b._graph.slots)
        assert b.model.config._attn_implementation == "restreact_sdpa"  # the GQA decode path ran
    step = EngineOptions().cache_len_step
    assert all(rows & (rows - 1) == 0 and length % step == 0 for rows, length in shapes)
    _assert_same_greedy(plain, got, requests)


def test_graph_engine_stops_at_stop_strings_and_reuses_its_shapes(model_dir, plain):
    from agent.llm.engine import EngineOptions

    free = GenRequest(PROMPTS[2], max_new_tokens=40)
    ref = plain.generate(free).completions[0].text
    stop = ref[len(ref) // 2: len(ref) // 2 + 2]  # a string the free run is known to reach
    assert stop.strip()
    req = GenRequest(PROMPTS[2], max_new_tokens=40, stop=[stop])
    with _backend(model_dir, engine=EngineOptions(kind="graph", check_every=2), wait=0.0) as b:
        got = b.generate(req)
        again = b.generate(req)
        assert len(b._graph.slots) == 1  # the second call reused the first one's cache
    want = plain.generate(req).completions[0]
    assert got.completions[0].text == want.text == again.completions[0].text
    assert got.completions[0].n_tokens == want.n_tokens
    assert stop not in got.completions[0].text


def test_graph_engine_samples_k_rows_from_one_prefill_with_raw_logprobs(model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agent.llm.engine import EngineOptions, rescore
    from agent.llm.graph_engine import GraphEngine

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt = tok(PROMPTS[1], add_special_tokens=False)["input_ids"]
    rows = [prompt] * 4 + [prompt[:6]]
    engine = GraphEngine(model, EngineOptions(kind="graph"), [tok.eos_token_id], tok.pad_token_id)
    torch.manual_seed(0)
    new, lps = engine.run(rows, [12] * 5, do_sample=True, temperature=0.5)
    assert len({tuple(n) for n in new[:4]}) > 1  # the K samples differ
    assert list(engine.slots) == [(8, 256)]  # five rows ride in the 8-row shape
    again = rescore(model, rows, new, tok.pad_token_id)
    for toks, lp, re in zip(new, lps, again):
        end = toks.index(tok.eos_token_id) + 1 if tok.eos_token_id in toks else len(toks)
        assert all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(lp[:end], re[:end]))


def test_graph_engine_samples_on_its_own_generator_seeded_from_torchs(model_dir):
    """Sampling noise leaves the default generator alone (graph capture registers that one,
    and a failed capture would break every later draw on it), yet `torch.manual_seed` still
    repeats a run."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agent.llm.engine import EngineOptions
    from agent.llm.graph_engine import GraphEngine

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = [tok(PROMPTS[1], add_special_tokens=False)["input_ids"]] * 4

    def sampled():
        torch.manual_seed(7)
        engine = GraphEngine(model, EngineOptions(kind="graph"), [tok.eos_token_id], tok.pad_token_id)
        before = torch.get_rng_state()
        new, _ = engine.run(rows, [10] * 4, do_sample=True, temperature=1.0)
        assert torch.equal(torch.get_rng_state(), before)  # no draw on the default generator
        return new

    first = sampled()
    assert len({tuple(n) for n in first}) > 1
    assert sampled() == first


def test_graph_engine_runs_a_batch_too_big_for_its_memory_as_smaller_ones(model_dir):
    """A batch over `batch_gib` runs in pieces (one slot shape each) with the greedy tokens,
    log-probabilities and stop checks of the batch run whole."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agent.llm.engine import EngineOptions
    from agent.llm.graph_engine import GraphEngine

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS[1:4]] * 2
    seen = []

    def stop_row_4_early(r, toks):
        seen.append(r)
        return r == 4 and len(toks) >= 3

    whole = GraphEngine(model, EngineOptions(kind="graph"), [tok.eos_token_id], tok.pad_token_id)
    want = whole.run(rows, [16] * 6, do_sample=False, temperature=0.0, done_check=stop_row_4_early)
    one_row = whole._batch_bytes(rows[:1], max(map(len, rows)) + 16)
    small = GraphEngine(model, EngineOptions(kind="graph", batch_gib=1.5 * one_row / 2**30),
                        [tok.eos_token_id], tok.pad_token_id)
    seen.clear()
    got = small.run(rows, [16] * 6, do_sample=False, temperature=0.0, done_check=stop_row_4_early)
    assert list(whole.slots) == [(8, 256)] and list(small.slots) == [(1, 256)]
    assert 5 in seen  # the second piece's checks name the batch's rows, not the piece's
    for a, b, la, lb in zip(want[0], got[0], want[1], got[1]):
        end = min(len(a), len(b))
        assert a[:end] == b[:end] and end >= 3
        assert all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(la[:end], lb[:end]))
    assert len(got[0][4]) < 16  # row 4 stopped on its check


def test_graph_engine_fused_prefill_equals_transformers_prefill_on_padded_rows(model_dir):
    """The engine's own prefill against the model's forward: prompts of different lengths
    (left-padded, masked), a repeated prompt (one prefill, two slot rows) and a 1-token one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agent.llm.engine import EngineOptions
    from agent.llm.graph_engine import GraphEngine

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS[1:4]]
    rows = [rows[0], rows[1], rows[0], rows[2], rows[1][:1]]
    assert len({len(r) for r in rows}) > 2
    out = {}
    for fused in (True, False):
        engine = GraphEngine(model, EngineOptions(kind="graph", fused_prefill=fused),
                             [tok.eos_token_id], tok.pad_token_id)
        out[fused] = engine.run(rows, [10] * len(rows), do_sample=False, temperature=1.0)
    (new, lps), (want, want_lps) = out[True], out[False]
    assert new == want and len({tuple(n) for n in new}) > 2
    assert all(math.isclose(x, y, abs_tol=1e-4) for a, b in zip(lps, want_lps) for x, y in zip(a, b))


def test_graph_engine_serves_a_shape_from_the_shortest_cache_that_fits(model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from agent.llm.engine import EngineOptions
    from agent.llm.graph_engine import GraphEngine

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    engine = GraphEngine(model, EngineOptions(kind="graph", cache_len_step=64), [2], 0)
    short, long = engine._slot(2, 100), engine._slot(2, 300)
    assert (short.length, long.length) == (128, 320)
    assert engine._slot(2, 90) is short  # now the most recently used; `long` is the oldest...
    assert engine._slot(2, 100) is short  # ...and fits too, but each decode step reads its whole cache
    assert engine._slot(2, 200) is long
    assert engine._slot(4, 90).rows == 4
    assert len(engine.slots) == 3


def test_graph_engine_refuses_bad_options():
    from agent.llm.engine import EngineOptions

    assert EngineOptions.parse("graph").kind == "graph"
    assert EngineOptions.parse("graph+unfused").label() == "graph+unfused"
    assert EngineOptions.parse("graph+unpacked").label() == "graph+unpacked"
    assert EngineOptions.parse("graph+hf-prefill").label() == "graph+hf-prefill"
    assert EngineOptions.parse("graph+unpacked+hf-prefill").label() == "graph+unpacked+hf-prefill"
    with pytest.raises(ValueError, match="unpacked"):
        EngineOptions.parse("graph+unfused+unpacked")
    for bad in ("graph+static", "graph+share-prefix", "unfused", "hf-prefill", "graph+unfused+hf-prefill"):
        with pytest.raises(ValueError):
            EngineOptions.parse(bad)
    with pytest.raises(ValueError):
        EngineOptions(kind="graph", check_every=0)


def test_gqa_decode_attention_equals_sdpa_with_repeated_heads():
    import torch
    from torch import nn
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from agent.llm.graph_engine import gqa_decode_attention

    torch.manual_seed(0)
    module = nn.Module().eval()
    module.num_key_value_groups, module.is_causal = 4, True
    q = torch.randn(3, 8, 1, 16)
    k, v = torch.randn(3, 2, 10, 16), torch.randn(3, 2, 10, 16)
    mask = torch.rand(3, 1, 1, 10) > 0.3
    mask[:, :, :, 0] = True
    want, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.25)
    got, _ = gqa_decode_attention(module, q, k, v, mask, scaling=0.25)
    assert got.shape == want.shape == (3, 1, 8, 16)
    assert torch.allclose(got, want, atol=1e-5)
    everything = torch.ones_like(mask)
    unmasked, _ = gqa_decode_attention(module, q, k, v, everything, scaling=0.25)
    assert not torch.allclose(got, unmasked)  # the mask is used


def _fused_vs_forward(model, compile: bool, lengths=(5, 2, 5, 1), length: int = 16):
    """Largest |logit difference| between the fused step and the model's own forward.

    Rows are left-padded as the graph engine lays them out: prompts of different lengths end
    at one column, so rows differ in position and leading cache columns hold junk to mask.
    """
    import torch
    from transformers import StaticCache

    from agent.llm.fused_decode import FusedLlamaStep

    step = FusedLlamaStep(model, compile=compile)
    vocab, dev = model.config.vocab_size, next(model.parameters()).device
    rows, width = len(lengths), max(lengths)
    prompts = [torch.randint(0, vocab, (1, n), device=dev) for n in lengths]
    tok = torch.randint(0, vocab, (rows, 1), device=dev)
    cache = StaticCache(config=model.config, max_cache_len=length)
    valid = torch.zeros(rows, length, dtype=torch.bool, device=dev)
    with torch.inference_mode():
        model(input_ids=tok, past_key_values=cache, use_cache=True)  # allocates; junk in column 0
        for r, ids in enumerate(prompts):  # each prompt's K/V, right-aligned at `width`
            one = StaticCache(config=model.config, max_cache_len=ids.shape[1])
            model(input_ids=ids, past_key_values=one, use_cache=True)
            for big, small in zip(cache.layers, one.layers):
                big.keys[r, :, width - ids.shape[1]:width] = small.keys[0]
                big.values[r, :, width - ids.shape[1]:width] = small.values[0]
            valid[r, width - ids.shape[1]:width + 1] = True
        position = torch.tensor([[n] for n in lengths], device=dev)
        got = step(tok, position, valid, torch.tensor([width], device=dev), cache)
        want = torch.cat([model(input_ids=torch.cat([ids, tok[r:r + 1]], 1)).logits[:, -1]
                          for r, ids in enumerate(prompts)])
    assert got.shape == want.shape
    return (got - want).abs().max().item(), want.abs().max().item()


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "torch.compile"])
def test_fused_decode_step_equals_the_model_forward(model_dir, compile):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if torch.cuda.is_available():  # on a GPU, inductor's Triton kernels are what runs
        model = model.cuda()
    diff, scale = _fused_vs_forward(model, compile)
    assert scale > 1.0 and diff < 1e-4 * scale


def _fused_prefill_vs_forward(model, compile: bool, lengths=(7, 3, 7, 1), step=None):
    """Largest |difference| of the fused prefill from the model's own forward, in the last
    logits and (relative to 1 + their size) in the cached K/V of every real (non-pad) prompt
    token: (logits, K/V, logit scale)."""
    import torch
    from transformers import StaticCache

    from agent.llm.engine import left_pad, positions
    from agent.llm.fused_decode import FusedLlamaStep

    step = step or FusedLlamaStep(model, compile=compile)
    vocab, dev = model.config.vocab_size, next(model.parameters()).device
    prompts = [torch.randint(0, vocab, (n,)).tolist() for n in lengths]
    ids, attn = left_pad(prompts, 0)
    ids, attn = ids.to(dev), attn.to(dev)
    width = ids.shape[1]
    cols = torch.arange(width, device=dev)
    mask = (((cols[None, :] <= cols[:, None])[None] & attn.bool()[:, None, :])
            | torch.eye(width, dtype=torch.bool, device=dev)[None])[:, None]
    written = {}
    with torch.inference_mode():
        unpadded = len(set(lengths)) == 1  # the engine passes no mask then: plain causal attention
        got = step.prefill(ids, positions(attn), None if unpadded else mask,
                           lambda i, k, v: written.update({i: (k.clone(), v.clone())}))
        kv_diff, want = 0.0, []
        for r, p in enumerate(prompts):
            one = StaticCache(config=model.config, max_cache_len=len(p))
            want.append(model(input_ids=torch.tensor([p], device=dev), past_key_values=one,
                              use_cache=True).logits[:, -1])
            for i, layer in enumerate(one.layers):
                k, v = written[i]
                kv_diff = max(kv_diff, (k[r, :, width - len(p):] - layer.keys[0]).abs().max().item()
                              / (1.0 + layer.keys[0].abs().max().item()),
                              (v[r, :, width - len(p):] - layer.values[0]).abs().max().item()
                              / (1.0 + layer.values[0].abs().max().item()))
        want = torch.cat(want)
    assert got.shape == want.shape and len(written) == model.config.num_hidden_layers
    return (got - want).abs().max().item(), kv_diff, want.abs().max().item()


def _needs_a_compiler(compile: bool) -> None:
    import torch

    if compile and not torch.cuda.is_available() and shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("torch.compile on a CPU needs a C compiler")


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "torch.compile"])
def test_fused_prefill_equals_the_model_forward(model_dir, compile):
    import torch
    from transformers import AutoModelForCausalLM

    from agent.llm import fused_decode

    _needs_a_compiler(compile)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if torch.cuda.is_available():
        model = model.cuda()
    step = fused_decode.FusedLlamaStep(model, compile=compile)
    for lengths in ((7, 3, 7, 1), (4, 9), (6, 6, 6)):  # padded, a new shape, no padding (no mask)
        diff, kv_diff, scale = _fused_prefill_vs_forward(model, compile, lengths, step=step)
        assert scale > 1.0 and diff < 1e-4 * scale and kv_diff < 1e-4, lengths
    compiled = step.prompt_ops.rms_norm is not fused_decode.prompt_rms_norm
    assert compiled == compile and step.prompt_fallback is None  # no silent fall back to eager


def test_compiled_fused_prefill_serves_many_prompt_shapes_without_falling_back(model_dir):
    """Every batch brings a new (rows, width): the compiled prompt pieces must generalise, not
    recompile per shape until torch's recompile limit sends them back to eager."""
    import random

    import torch
    from transformers import AutoModelForCausalLM

    from agent.llm import fused_decode

    _needs_a_compiler(True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if torch.cuda.is_available():
        model = model.cuda()
    step = fused_decode.FusedLlamaStep(model, compile=True)
    rng, worst = random.Random(0), 0.0
    torch.manual_seed(0)
    for i in range(12):  # more shapes than torch's recompile limit (8)
        rows = rng.choice([1, 2, 3, 5])
        lengths = [rng.randint(1, 20)] * rows if i % 3 == 0 else [rng.randint(1, 20) for _ in range(rows)]
        diff, kv_diff, scale = _fused_prefill_vs_forward(model, True, tuple(lengths), step=step)
        worst = max(worst, diff / scale, kv_diff)
    assert worst < 1e-4
    assert step.prompt_ops.rms_norm is not fused_decode.prompt_rms_norm  # still compiled
    assert step.prompt_fallback is None


def test_fused_step_packs_projection_weights_without_copying_or_changing_the_model(model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from agent.llm.fused_decode import FusedLlamaStep

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    step = FusedLlamaStep(model, compile=False)
    qkv, gate_up = step.packed[0]
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    assert qkv.shape[0] == sum(m.weight.shape[0] for m in (attn.q_proj, attn.k_proj, attn.v_proj))
    # the modules' weights are row slices of the packed matrix: no second copy in memory
    assert attn.v_proj.weight.untyped_storage().data_ptr() == qkv.untyped_storage().data_ptr()
    assert mlp.up_proj.weight.untyped_storage().data_ptr() == gate_up.untyped_storage().data_ptr()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)
    assert FusedLlamaStep(model, compile=False).packed[0][0] is qkv  # a second step reuses it
    diff, scale = _fused_vs_forward(model, compile=False)
    assert diff < 1e-4 * scale


def test_fused_decode_step_runs_lora_adapters_and_refuses_other_architectures(model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    from agent.llm.fused_decode import FusedLlamaStep, supports

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                           init_lora_weights=False)).eval()
    diff, scale = _fused_vs_forward(lora, compile=False)
    assert diff < 1e-4 * scale
    qkv, gate_up = FusedLlamaStep(lora, compile=False).packed[0]
    assert qkv is None and gate_up is not None  # LoRA-wrapped q/v keep their modules
    with torch.no_grad():  # the adapter really changes the output, so the match above is not vacuous
        ids = torch.tensor([[1, 2, 3]])
        with lora.disable_adapter():
            plain = lora(input_ids=ids).logits
        assert not torch.allclose(plain, lora(input_ids=ids).logits, atol=1e-3)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    assert "gpt2" in supports(gpt2)
    with pytest.raises(ValueError, match="cannot run this model"):
        FusedLlamaStep(gpt2, compile=False)


def test_graph_engine_uses_the_fused_step_unless_told_not_to(model_dir, plain):
    from agent.llm.engine import EngineOptions

    requests = _greedy_requests()[:3]
    with _backend(model_dir, engine=EngineOptions(kind="graph", fused_decode=False), wait=0.0) as b:
        assert b._graph.fused is None
        unfused = [b.generate_detailed(r) for r in requests]
    with _backend(model_dir, engine="graph", wait=0.0) as b:
        import torch

        # Compiled on a GPU; on a CPU the same pieces run eagerly.
        assert b._graph.fused is not None and b._graph.fused.compiled == torch.cuda.is_available()
        assert b._graph.fused.packed[0][0] is not None
        packed = [b.generate_detailed(r) for r in requests]
    with _backend(model_dir, engine="graph+unpacked", wait=0.0) as b:
        assert b._graph.fused.packed[0] == (None, None)
        unpacked = [b.generate_detailed(r) for r in requests]
    with _backend(model_dir, engine="graph+hf-prefill", wait=0.0) as b:
        assert not b._graph.options.fused_prefill
        hf_prefill = [b.generate_detailed(r) for r in requests]
    for got in (unfused, packed, unpacked, hf_prefill):
        _assert_same_greedy(plain, got, requests)


def test_default_engine_follows_the_environment(model_dir, monkeypatch):
    from agent.llm.hf import default_engine

    monkeypatch.delenv("RESTREACT_ENGINE", raising=False)
    assert (default_engine("cpu"), default_engine("cuda:0")) == (None, "graph")
    monkeypatch.setenv("RESTREACT_ENGINE", "graph")
    with _backend(model_dir, wait=0.0) as b:
        assert b.engine_label == "graph" and b._graph is not None
    monkeypatch.setenv("RESTREACT_ENGINE", "warp-drive")
    with pytest.raises(LLMError, match="warp-drive"):
        _backend(model_dir, wait=0.0)


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_graph_engine_prefills_prompts_in_groups_under_its_budget_with_the_same_tokens(model_dir, prefix_cache):
    """Prompts of mixed lengths prefilled in groups under `prefill_gib` (the longest alone) give the greedy tokens and log-probabilities of one prefill pass over all of them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agent.llm.engine import EngineOptions
    from agent.llm.graph_engine import GraphEngine

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    rows = rows + rows[1:3]  # K samples of two prompts share their prefill
    eos = [tok.eos_token_id]
    whole = GraphEngine(model, EngineOptions(kind="graph", prefix_cache=prefix_cache), eos, tok.pad_token_id)
    width = max(map(len, rows))
    assert len(whole._prefill_groups([len(r) for r in rows], width)) == 1
    want = whole.run(rows, [12] * len(rows), do_sample=False, temperature=0.0)
    one = whole._prefill_bytes(1, width, width)
    opts = EngineOptions(kind="graph", prefix_cache=prefix_cache, prefill_gib=1.5 * one / 2**30)
    grouped = GraphEngine(model, opts, eos, tok.pad_token_id)
    groups = grouped._prefill_groups([len(r) for r in rows], width)
    assert len(groups) > 2 and sorted(j for g in groups for j in g) == list(range(len(rows)))
    got = grouped.run(rows, [12] * len(rows), do_sample=False, temperature=0.0)
    assert got[0] == want[0]
    for la, lb in zip(want[1], got[1]):
        assert all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(la, lb))
    assert grouped.prefix_stats["prefilled_tokens"] == whole.prefix_stats["prefilled_tokens"]
