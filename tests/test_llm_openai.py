"""OpenAICompatBackend against a real loopback server that serves a real tiny model."""

from __future__ import annotations

import math
import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agent.llm.base import LLMError
from store.records import GenRequest
from agent.llm.openai_compat import OpenAICompatBackend  # noqa: E402
from tests.openai_server import build_lively_model, hf_responder, start_server  # noqa: E402

SECRET = "sk-test-SECRET123"


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    from agent.llm.hf import HFBackend

    b = HFBackend(str(build_lively_model(tmp_path_factory.mktemp("lively"))), dtype="fp32",
                  max_batch=8, batch_wait_s=0.0)
    yield b
    b.close()


@pytest.fixture()
def server(hf):
    url, handle = start_server(hf_responder(hf))
    yield url, handle
    handle()


def _backend(url, **kw) -> OpenAICompatBackend:
    kw.setdefault("backoff_s", 0.01)
    return OpenAICompatBackend(base_url=url, model="tiny", api_key=SECRET, **kw)


def test_chat_mode_k_samples_with_logprobs(server):
    url, handle = server
    gen = _backend(url).generate(GenRequest("Answer the question", n=3, max_new_tokens=8))
    assert gen.rendered_prompt == "Answer the question"
    assert len(gen.completions) == 3 and gen.model == "openai:tiny"
    for c in gen.completions:
        assert c.logprob is not None and c.logprob <= 0 and 0 < c.n_tokens <= 8
        assert math.isfinite(math.exp(-c.logprob / c.n_tokens))
    sent = handle.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["messages"] == [{"role": "user", "content": "Answer the question"}]
    assert (sent.body["n"], sent.body["temperature"], sent.body["logprobs"]) == (3, 0.5, True)
    assert gen.options["temperature"] == 0.5 and gen.prompt_tokens > 0


def test_completions_mode_greedy_matches_the_served_model(server, hf):
    url, handle = server
    req = GenRequest("Search(query=", max_new_tokens=6, stop=("zzz",))
    gen = _backend(url, mode="completions").generate(req)
    local = hf.generate(req).completions[0]
    got = gen.completions[0]
    assert got.text == local.text and got.n_tokens == local.n_tokens
    assert got.logprob == pytest.approx(local.logprob, abs=1e-4)
    sent = handle.requests[-1]
    assert sent.path == "/v1/completions" and sent.body["prompt"] == "Search(query="
    assert sent.body["stop"] == ["zzz"] and sent.body["temperature"] == 0.0


def test_model_discovered_from_the_server(server):
    url, _ = server
    b = OpenAICompatBackend(base_url=url, backoff_s=0.01)
    assert b.generate(GenRequest("hi", max_new_tokens=2)).model == "openai:tiny"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_transient_failures_then_succeeds(server, status):
    url, handle = server
    handle.fail_next(2, status)
    gen = _backend(url, max_retries=4).generate(GenRequest("hi", max_new_tokens=3))
    assert gen.completions[0].n_tokens > 0
    assert len(handle.requests) == 3


def test_gives_up_after_max_retries(hf):
    url, handle = start_server(hf_responder(hf), fail_first=10, fail_status=500)
    try:
        with pytest.raises(LLMError) as info:
            _backend(url, max_retries=2).generate(GenRequest("hi"))
        assert "gave up after 3 attempts" in str(info.value) and "500" in str(info.value)
        assert len(handle.requests) == 3
    finally:
        handle()


def test_client_error_is_final_with_server_message(server):
    url, handle = server
    handle.fail_next(1, 400)
    with pytest.raises(LLMError, match=r"refused the request \(400\): injected failure 400"):
        _backend(url).generate(GenRequest("hi"))
    assert len(handle.requests) == 1


def test_unreachable_server_is_retried_then_reported():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LLMError, match="cannot reach"):
        _backend(f"http://127.0.0.1:{port}/v1", max_retries=1).generate(GenRequest("hi"))


def test_api_key_only_in_authorization_header(server):
    url, handle = server
    handle.fail_next(2, 500)
    b = _backend(url, max_retries=1)
    with pytest.raises(LLMError) as info:
        b.generate(GenRequest("hi"))
    assert SECRET not in str(info.value) and SECRET not in repr(b)
    assert all(r.headers.get("authorization") == f"Bearer {SECRET}" for r in handle.requests)
    assert all(SECRET not in str(r.body) for r in handle.requests)
    gen = b.generate(GenRequest("hi", max_new_tokens=2))
    assert SECRET not in repr(gen)


def test_without_logprobs_and_with_a_server_that_ignores_n():
    calls = []

    def one_choice(prompt, n, temperature, max_tokens):
        calls.append(n)
        return [(f"answer {len(calls)}", None)]

    url, stop = start_server(one_choice)
    try:
        gen = _backend(url, logprobs=False).generate(GenRequest("q", n=3))
        assert [c.text for c in gen.completions] == ["answer 1", "answer 2", "answer 3"]
        assert calls == [3, 2, 1]
        assert all(c.logprob is None for c in gen.completions)
        assert gen.completions[0].n_tokens == 2  # from usage, when there is one choice
        assert "logprobs" not in stop.requests[0].body
    finally:
        stop()


def test_bad_mode_is_refused():
    with pytest.raises(LLMError, match="unknown mode"):
        OpenAICompatBackend(base_url="http://127.0.0.1:1/v1", mode="edits")


def test_factory_openai_spec_uses_env_base_url(server, monkeypatch):
    from agent.llm.factory import make_llm

    url, handle = server
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    for spec in ("openai:tiny", "openai:"):
        gen = make_llm(spec, mode="completions").generate(GenRequest("hi", max_new_tokens=2))
        assert gen.model == "openai:tiny" and gen.options["mode"] == "completions"
    assert handle.requests[-1].headers["authorization"] == f"Bearer {SECRET}"
    with pytest.raises(LLMError, match="dtype do not apply"):
        make_llm("openai:tiny", dtype="bf16")
    # --adapter is loaded into the server (tests/test_lora_serving.py); a path that holds no
    # adapter is refused before the server is asked
    with pytest.raises(LLMError, match="not a LoRA adapter directory"):
        make_llm("openai:tiny", adapter="/some/lora")
