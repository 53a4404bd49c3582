"""LangChainBackend: langchain_core's fake chat models (the adapter is under test), and
ChatOpenAI against the loopback server serving a real tiny model when installed."""

from __future__ import annotations

import os

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from agent.llm.base import LLMError
from store.records import GenRequest
from agent.llm.langchain_adapter import LangChainBackend


def _msg(text, lps=None, tokens=None):
    meta = {}
    if lps is not None:
        toks = tokens or [f"t{i}" for i in range(len(lps))]
        meta["logprobs"] = {"content": [{"token": t, "logprob": lp} for t, lp in zip(toks, lps)]}
    return AIMessage(content=text, response_metadata=meta,
                     usage_metadata={"input_tokens": 7, "output_tokens": len(lps or [1, 1]),
                                     "total_tokens": 9})


class TunableFake(GenericFakeChatModel):
    """A fake with the sampling fields real providers have; it reports what it ran with."""

    temperature: float | None = 0.9
    max_tokens: int | None = None

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        result = super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
        msg = result.generations[0].message
        msg.response_metadata["ran_with"] = (self.temperature, self.max_tokens, stop)
        return ChatResult(generations=[ChatGeneration(message=msg)])


def test_k_samples_with_logprobs_from_metadata():
    model = GenericFakeChatModel(messages=iter([_msg("a b", [-0.5, -1.0]), _msg("c", [-2.0]),
                                                _msg("d e f", [-0.1, -0.1, -0.1])]))
    b = LangChainBackend(model)
    gen = b.generate(GenRequest("question?", n=3))
    assert [c.text for c in gen.completions] == ["a b", "c", "d e f"]
    assert [c.n_tokens for c in gen.completions] == [2, 1, 3]
    assert [c.logprob for c in gen.completions] == pytest.approx([-1.5, -2.0, -0.3])
    assert gen.rendered_prompt == "question?" and gen.prompt_tokens == 7
    assert gen.model == b.name and gen.options["do_sample"] is True


def test_without_logprobs_counts_usage_tokens():
    gen = LangChainBackend(FakeListChatModel(responses=["one", "two"])).generate(
        GenRequest("q", n=2))
    assert [c.text for c in gen.completions] == ["one", "two"]
    assert all(c.logprob is None for c in gen.completions)
    assert gen.options["temperature"] is None  # the fake has no temperature field


def test_sampling_settings_are_applied_to_a_copy():
    model = TunableFake(messages=iter([_msg("x", [-1.0]), _msg("y", [-1.0]), _msg("z", [-1.0])]))
    b = LangChainBackend(model)
    greedy = b.generate(GenRequest("q", max_new_tokens=5, stop=("STOP",)))
    assert greedy.options["temperature"] == 0.0 and greedy.options["max_tokens_field"] == "max_tokens"
    sampled = b.generate(GenRequest("q", n=2, max_new_tokens=9))
    assert sampled.options["temperature"] == 0.5
    assert model.temperature == 0.9 and model.max_tokens is None  # the original is untouched


def test_stop_strings_are_enforced_with_their_tokens():
    model = GenericFakeChatModel(messages=iter([
        _msg("ab\nrest", [-1.0, -2.0, -3.0, -4.0], tokens=["a", "b", "\n", "rest"])]))
    c = LangChainBackend(model).generate(GenRequest("q", stop=("\n",))).completions[0]
    assert c.text == "ab" and c.n_tokens == 2 and c.logprob == pytest.approx(-3.0)


def test_model_errors_become_one_line_llm_errors(monkeypatch):
    monkeypatch.setenv("PROVIDER_API_KEY", "pk-live-0123456789")
    model = GenericFakeChatModel(messages=iter([]))  # exhausted: invoke raises
    with pytest.raises(LLMError) as info:
        LangChainBackend(model).generate(GenRequest("q"))
    assert "\n" not in str(info.value) and str(info.value).startswith("langchain:")


def test_chat_openai_against_the_loopback_server(tmp_path):
    """The real provider class, through the real OpenAI SDK, to a real tiny model."""
    lc_openai = pytest.importorskip("langchain_openai")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from agent.llm.hf import HFBackend
    from tests.openai_server import build_lively_model, hf_responder, start_server

    with HFBackend(str(build_lively_model(tmp_path / "m")), max_batch=4) as hf:
        url, stop = start_server(hf_responder(hf))
        try:
            chat = lc_openai.ChatOpenAI(model="tiny", base_url=url, api_key="sk-test-SECRET123",
                                        logprobs=True, max_retries=0)
            gen = LangChainBackend(chat).generate(GenRequest("hello", n=2, max_new_tokens=6))
            assert len(gen.completions) == 2
            assert all(c.logprob is not None and 0 < c.n_tokens <= 6 for c in gen.completions)
            sent = stop.requests[-1].body
            assert sent["temperature"] == 0.5 and sent["max_completion_tokens"] == 6
            assert stop.requests[-1].headers["authorization"] == "Bearer sk-test-SECRET123"
        finally:
            stop()
