"""LangChainBackend: langchain_core's fake chat models (the adapter is under test), and
ChatOpenAI against the loopback server serving a real tiny model when installed; the
`--model langchain:MODULE:ATTR` spec through make_llm and through the CLI."""

from __future__ import annotations

import os

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from agent.llm.base import LLMError
from agent.llm.factory import make_llm
from agent.llm.langchain_adapter import LangChainBackend
from store.records import GenRequest


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


# --- `--model langchain:MODULE:ATTR` ---------------------------------------------------------

CHAT_MODULE = """
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from agent.prompts import render_action
from store.records import Answer, CheckAnswer, Search, SelectLink, Terminate

chat = FakeListChatModel(responses=["one", "two"])


def make():
    return FakeListChatModel(responses=["made"])


class Holder:
    inner = FakeListChatModel(responses=["nested"])


not_a_model = 42


def broken():
    raise RuntimeError("provider refused key sk-abcdefghijklmnop0123")


# one whole trajectory: search, summarize, stop, answer, pass both checks
agent = FakeListChatModel(responses=[render_action(a) for a in (
    Search("founder of Acme", "find who founded Acme"),
    SelectLink("According to [link_id=1] Acme was founded by Ada Vell.", "it says who", (1,)),
    Terminate("the summary names the founder"),
    Answer("the summary says so", "Ada Vell [link_id=1]"),
    CheckAnswer(True),
    CheckAnswer(True))])
"""


@pytest.fixture
def chat_module(tmp_path, monkeypatch):
    """An importable module of chat models, named for this test's directory (fresh import)."""
    name = f"lc_models_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(CHAT_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_make_llm_takes_a_chat_model_or_a_callable_returning_one(chat_module):
    b = make_llm(f"langchain:{chat_module}:chat")
    assert isinstance(b, LangChainBackend) and b.name.startswith("langchain:")
    assert [c.text for c in b.generate(GenRequest("q", n=2)).completions] == ["one", "two"]
    made = make_llm(f"langchain:{chat_module}:make").generate(GenRequest("q")).completions[0]
    nested = make_llm(f"langchain:{chat_module}:Holder.inner").generate(GenRequest("q")).completions[0]
    assert (made.text, nested.text) == ("made", "nested")


@pytest.mark.parametrize("tail,opts,message", [
    ("", {}, "write langchain:MODULE:ATTR"),
    ("{m}", {}, "write langchain:MODULE:ATTR"),
    ("no_such_module_here:chat", {}, "ModuleNotFoundError"),
    ("{m}:missing", {}, "AttributeError"),
    ("{m}:not_a_model", {}, "is a int, not a LangChain chat model"),
    ("{m}:broken", {}, "calling broken failed: RuntimeError: provider refused key ***"),
    ("{m}:chat", {"adapter": "x"}, "option(s) adapter do not apply"),
])
def test_bad_langchain_specs_are_one_line_llm_errors(chat_module, tail, opts, message):
    with pytest.raises(LLMError) as info:
        make_llm("langchain:" + tail.format(m=chat_module), **opts)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert "sk-abcdefghijklmnop0123" not in str(info.value)


def test_ask_runs_a_langchain_model_through_the_cli(tmp_path, chat_module):
    """`ask --model langchain:MODULE:ATTR` like a user: the whole graph on the chat model,
    every call stored under the backend's name."""
    from store.api import Store
    from tests.harness import cli_env, run_cli

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "acme", "title": "Acme", "url": "https://example.org/acme", '
                      '"text": "Acme was founded by Ada Vell in 1901."}\n')
    db = tmp_path / "s.db"
    env = cli_env(tmp_path, PYTHONPATH=str(tmp_path))
    r = run_cli(["--db", str(db), "ask", "--model", f"langchain:{chat_module}:agent",
                 "--search", "corpus", "--corpus", str(corpus), "Who founded Acme?"], env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Ada Vell" in r.stdout
    store = Store(str(db))
    (row,) = store.trajectories()
    traj = store.trajectory(row.id)
    assert traj.status == "finished" and traj.final_answer == "Ada Vell [link_id=1]"
    assert [s.kind for s in sorted(traj.steps, key=lambda s: s.idx)] == [
        "decide", "summarize", "decide", "answer", "relevance", "grounding"]
    calls = store.llm_calls(limit=0, trajectory_id=row.id)
    assert len(calls) == 6 and {c.model for c in calls} == {"langchain:fake-list-chat-model"}
    bad = run_cli(["--db", str(db), "ask", "--model", f"langchain:{chat_module}:nothing",
                   "--search", "corpus", "--corpus", str(corpus), "q?"], env)
    assert bad.returncode != 0 and "AttributeError" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
