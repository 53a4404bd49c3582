"""HFBackend on a real tiny Llama: batching, greedy equivalence, sampling, logprobs,
rendering, loading errors, LoRA adapters."""

from __future__ import annotations

import json
import math
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agent.llm.base import LLMError
from store.records import GenRequest, Sample
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


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_lively_model(tmp_path_factory.mktemp("lively"))


@pytest.fixture(scope="module")
def batched(model_dir):
    from agent.llm.hf import HFBackend

    b = HFBackend(str(model_dir), dtype="fp32", max_batch=32, batch_wait_s=0.5)
    yield b
    b.close()


@pytest.fixture(scope="module")
def single(model_dir):
    from agent.llm.hf import HFBackend

    b = HFBackend(str(model_dir), dtype="fp32", max_batch=1, batch_wait_s=0.0)
    yield b
    b.close()


def _concurrently(backend, requests):
    return all_at_once(backend.generate, requests)


def test_concurrent_requests_share_generate_calls_and_match_unbatched(batched, single):
    requests = [GenRequest(p, max_new_tokens=8 + 2 * i) for i, p in enumerate(PROMPTS)]
    calls0, served0 = batched.generate_calls, batched.requests_served
    together = _concurrently(batched, requests)
    assert batched.requests_served - served0 == len(requests)
    assert batched.generate_calls - calls0 < len(requests)
    texts = set()
    for req, got in zip(requests, together):
        alone = single.generate(req)
        assert got.rendered_prompt == alone.rendered_prompt
        a, b = got.completions[0], alone.completions[0]
        assert (a.text, a.n_tokens) == (b.text, b.n_tokens)
        assert a.logprob == pytest.approx(b.logprob, rel=1e-4, abs=1e-4)
        assert 0 < a.n_tokens <= req.max_new_tokens
        texts.add(a.text)
    assert len(texts) > 1, "the tiny model should answer different prompts differently"


def test_greedy_logprob_equals_an_independent_forward_pass(single):
    import torch

    req = GenRequest(PROMPTS[1], max_new_tokens=6)
    gen, token_lps = single.generate_detailed(req)
    tok, model = single.tokenizer, single.model
    ids = tok(gen.rendered_prompt, add_special_tokens=False)["input_ids"]
    assert gen.prompt_tokens == len(ids)
    total, new = 0.0, []
    with torch.no_grad():
        for _ in range(req.max_new_tokens):  # greedy by hand, no cache, no batching
            logits = model(torch.tensor([ids + new])).logits[0, -1].float()
            lp = torch.log_softmax(logits, -1)
            nxt = int(lp.argmax())
            new.append(nxt)
            total += float(lp[nxt])
            if nxt == tok.eos_token_id:
                break
    c = gen.completions[0]
    assert c.n_tokens == len(new) == len(token_lps[0])
    assert c.text == tok.decode([t for t in new if t != tok.eos_token_id], skip_special_tokens=True)
    assert c.logprob == pytest.approx(total, abs=1e-4)


def test_k_samples_at_paper_temperature_have_finite_perplexity(batched):
    gen = batched.generate(GenRequest(PROMPTS[2], n=4, temperature=0.0, max_new_tokens=12))
    assert gen.options["do_sample"] is True and gen.options["temperature"] == 0.5
    assert len(gen.completions) == 4
    for c in gen.completions:
        assert 0 < c.n_tokens <= 12 and c.logprob is not None and c.logprob <= 0
        ppl = Sample(c.text, c.n_tokens, c.logprob).perplexity
        assert ppl is not None and math.isfinite(ppl) and ppl >= 1.0
    assert gen.model == batched.name and gen.duration_s > 0


def test_mixed_temperatures_in_one_batch(batched):
    reqs = [GenRequest(PROMPTS[0], max_new_tokens=5), GenRequest(PROMPTS[3], n=3, temperature=1.0,
                                                                 max_new_tokens=5)]
    greedy, sampled = _concurrently(batched, reqs)
    assert len(greedy.completions) == 1 and greedy.options["do_sample"] is False
    assert len(sampled.completions) == 3 and sampled.options["temperature"] == 1.0


def test_stop_string_cuts_text_and_its_tokens(single):
    full = single.generate(GenRequest(PROMPTS[5], max_new_tokens=20)).completions[0]
    # a clean two-character piece of the greedy continuation, past its start
    stop = next(full.text[i:i + 2] for i in range(2, len(full.text) - 1)
                if "\ufffd" not in full.text[i:i + 2] and full.text.find(full.text[i:i + 2]) > 0)
    cut = single.generate(GenRequest(PROMPTS[5], max_new_tokens=20, stop=(stop,))).completions[0]
    assert cut.text == full.text[:full.text.find(stop)]
    assert stop not in cut.text
    assert 0 < cut.n_tokens < full.n_tokens and cut.logprob > full.logprob


def test_rendering_is_what_is_tokenized(model_dir, single):
    from agent.llm.hf import HFBackend

    tok = single.tokenizer
    chat = single.render("hello")
    assert chat.startswith(tok.bos_token) and chat.count(tok.bos_token) == 1
    assert chat.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    gen = single.generate(GenRequest("hello", max_new_tokens=2))
    assert gen.rendered_prompt == chat
    ids = tok(chat, add_special_tokens=False)["input_ids"]
    assert gen.prompt_tokens == len(ids) and ids.count(tok.bos_token_id) == 1
    with HFBackend(str(model_dir), chat=False, max_batch=1) as plain:
        assert plain.render("hello") == tok.bos_token + "hello"
        assert plain.generate(GenRequest("hello", max_new_tokens=2)).options["chat"] is False


def test_missing_model_is_one_clear_line(tmp_path, monkeypatch):
    from agent.llm.hf import HFBackend

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec in (str(tmp_path / "nope"), "meta-llama/Meta-Llama-3-8B-Instruct", str(tmp_path)):
        with pytest.raises(LLMError) as info:
            HFBackend(spec)
        msg = str(info.value)
        assert "\n" not in msg and "--model" in msg and "local" in msg


def test_adapter_loads_and_corrupt_adapter_fails(model_dir, single, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from agent.llm.hf import HFBackend

    base = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True,
                                                dtype=torch.float32)
    torch.manual_seed(0)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))  # non-zero: changes logits
    lora.save_pretrained(tmp_path / "adapter")
    req = GenRequest(PROMPTS[1], max_new_tokens=6)
    with HFBackend(str(model_dir), adapter=str(tmp_path / "adapter"), max_batch=1) as tuned:
        assert tuned.name.endswith("adapter")
        got = tuned.generate(req).completions[0]
    plain = single.generate(req).completions[0]
    assert got.logprob != pytest.approx(plain.logprob, abs=1e-3)

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": "x"}))
    for adapter in (bad, tmp_path / "absent"):
        with pytest.raises(LLMError) as info:
            HFBackend(str(model_dir), adapter=str(adapter))
        assert "\n" not in str(info.value) and "adapter" in str(info.value)


def test_closed_backend_refuses(model_dir):
    from agent.llm.hf import HFBackend

    b = HFBackend(str(model_dir), max_batch=1)
    b.close()
    with pytest.raises(LLMError, match="closed"):
        b.generate(GenRequest("hi"))
    with pytest.raises(LLMError, match="bad request"):
        HFBackend.generate(b, GenRequest("hi", n=0))


def test_factory_builds_local_backends_and_refuses_misplaced_options(model_dir):
    from agent.llm.factory import make_llm
    from agent.llm.hf import HFBackend

    for spec in (str(model_dir), f"hf:{model_dir}"):
        b = make_llm(spec, adapter=None, dtype="fp32", max_batch=2)
        try:
            assert isinstance(b, HFBackend) and b.max_batch == 2
        finally:
            b.close()
    with pytest.raises(LLMError, match="base_url do not apply"):
        make_llm(str(model_dir), base_url="http://127.0.0.1:1/v1")
    with pytest.raises(LLMError, match="no model given"):
        make_llm("  ")


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs CUDA")
def test_cuda_defaults_to_bf16_and_batches(model_dir):
    from agent.llm.hf import HFBackend

    with HFBackend(str(model_dir), batch_wait_s=0.5) as gpu, \
            HFBackend(str(model_dir), dtype="fp32", batch_wait_s=0.5) as gpu32, \
            HFBackend(str(model_dir), dtype="fp32", max_batch=1) as gpu32_single:
        assert gpu.device == "cuda" and gpu.dtype_name == "bfloat16"
        gen = gpu.generate(GenRequest(PROMPTS[2], n=4, max_new_tokens=8))
        assert all(c.logprob is not None and math.isfinite(c.logprob) for c in gen.completions)
        requests = [GenRequest(p, max_new_tokens=8) for p in PROMPTS]
        together = _concurrently(gpu32, requests)
        assert gpu32.generate_calls < len(requests)
        for req, got in zip(requests, together):
            alone = gpu32_single.generate(req).completions[0]
            assert got.completions[0].text == alone.text
