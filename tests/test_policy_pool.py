"""PolicyPool: the improve loop's agents share loaded models and never hold more than allowed."""

from __future__ import annotations

import pytest

from agent.llm.base import LLMError
from store.records import GenRequest
from agent.setup import AgentOptions, PolicyPool, build_agent
from agent.state import AgentConfig
from tests.tiny import build_tiny_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    a, b = root / "a", root / "b"
    build_tiny_model(a)
    build_tiny_model(b)
    corpus = root / "corpus.jsonl"
    corpus.write_text('{"id": "1", "title": "T", "url": "u", "text": "some text"}\n')
    return str(a), str(b), str(corpus)


def _opts(model, corpus, samples=1, greedy=True):
    return AgentOptions(model=model, search="corpus", corpus=corpus,
                        config=AgentConfig(samples=samples, greedy=greedy))


class CountingBuild:
    def __init__(self):
        self.loads = []

    def __call__(self, opts, store):
        self.loads.append(opts.model)
        return build_agent(opts, store)


def test_sampling_settings_share_one_loaded_model(models):
    a, _, corpus = models
    build = CountingBuild()
    pool = PolicyPool(None, build=build)
    greedy = pool.get(_opts(a, corpus))
    sampled = pool.get(_opts(a, corpus, samples=4, greedy=False))
    assert build.loads == [a]
    assert greedy is not sampled and greedy.llm is sampled.llm
    assert sampled.config.samples == 4 and greedy.config.samples == 1
    assert pool.get(_opts(a, corpus)) is greedy  # asked again: the same agent
    wider = _opts(a, corpus)
    wider.config.top_k = 5  # any other agent setting: its own agent, the same model
    assert pool.get(wider).config.top_k == 5 and pool.get(wider).llm is greedy.llm
    assert build.loads == [a]
    pool.release()


def test_a_new_model_closes_the_least_recent_one(models):
    a, b, corpus = models
    build = CountingBuild()
    pool = PolicyPool(None, build=build, max_models=1)
    first = pool.get(_opts(a, corpus))
    second = pool.get(_opts(b, corpus))
    assert build.loads == [a, b]
    with pytest.raises(LLMError):  # closed: it takes no more requests
        first.llm.generate(GenRequest(prompt="hi", max_new_tokens=2))
    assert second.llm.generate(GenRequest(prompt="hi", max_new_tokens=2)).completions
    pool.get(_opts(a, corpus))  # back to the first model: loaded again, the second closed
    assert build.loads == [a, b, a]
    with pytest.raises(LLMError):
        second.llm.generate(GenRequest(prompt="hi", max_new_tokens=2))
    pool.release()


def test_two_models_fit_when_allowed_and_release_frees_all(models):
    a, b, corpus = models
    build = CountingBuild()
    pool = PolicyPool(None, build=build, max_models=2)
    student, teacher = pool.get(_opts(a, corpus)), pool.get(_opts(b, corpus, samples=4))
    pool.get(_opts(a, corpus))
    assert build.loads == [a, b]  # both stayed loaded
    pool.release()
    for agent in (student, teacher):
        with pytest.raises(LLMError):
            agent.llm.generate(GenRequest(prompt="hi", max_new_tokens=2))
    pool.get(_opts(a, corpus))
    assert build.loads == [a, b, a]
    pool.release()
