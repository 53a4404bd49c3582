"""Cassettes: record real LLM (loopback server + tiny model) and search (BM25 corpus)
traffic, replay it exactly, fail loudly on a miss, never write a secret."""

from __future__ import annotations

import json
import os
import threading

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agent.cassette import (  # noqa: E402
    Cassette, LLMReplayMiss, RecordingLLM, RecordingSearch, ReplayLLM, ReplaySearch,
    SearchReplayMiss, search_key)
from agent.llm.base import LLMError
from store.records import GenRequest
from agent.llm.openai_compat import OpenAICompatBackend  # noqa: E402
from agent.search.base import SearchError  # noqa: E402
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


@pytest.fixture()
def corpus(tmp_path):
    docs = [{"id": "1", "title": "Acme", "url": "https://acme.example/about",
             "text": "Acme was founded by Ada Brenn in Talvor."},
            {"id": "2", "title": "Talvor", "url": "https://talvor.example",
             "text": "Talvor is a city in Ostria."}]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    from agent.search.corpus import CorpusSearch

    return CorpusSearch(path)


def test_replay_returns_identical_generations(server, tmp_path):
    url, _ = server
    cas = Cassette(tmp_path / "run.jsonl")
    rec = RecordingLLM(OpenAICompatBackend(base_url=url, model="tiny", api_key=SECRET), cas)
    reqs = [GenRequest("decide next step", max_new_tokens=6, purpose="decide"),
            GenRequest("summarize", n=3, temperature=0.7, max_new_tokens=5, stop=("\n",))]
    live = [rec.generate(r) for r in reqs]
    replay = ReplayLLM(Cassette(tmp_path / "run.jsonl"))
    assert replay.name == "replay"
    assert [replay.generate(r) for r in reqs] == live
    assert live[1].completions[0].logprob is not None


def test_identical_requests_replay_in_order_then_repeat_last(hf, tmp_path):
    cas = Cassette(tmp_path / "run.jsonl")
    rec = RecordingLLM(hf, cas)
    req = GenRequest("Answer", n=2, temperature=1.0, max_new_tokens=6)
    first, second = rec.generate(req), rec.generate(req)
    assert rec.render("x") == hf.render("x")  # the wrapper still exposes the backend
    replay = ReplayLLM(cas)
    assert replay.generate(req) == first
    assert replay.generate(req) == second
    assert replay.generate(req) == second


def test_unknown_request_fails_loudly(hf, tmp_path):
    cas = Cassette(tmp_path / "run.jsonl")
    RecordingLLM(hf, cas).generate(GenRequest("known", max_new_tokens=2))
    replay = ReplayLLM(cas)
    req = GenRequest("never asked\nbefore", max_new_tokens=2)
    with pytest.raises(LLMReplayMiss) as info:
        replay.generate(req)
    assert isinstance(info.value, LLMError)
    assert str(info.value) == f"no recorded response for request {req.key()}: never asked before"
    with pytest.raises(LLMError, match="does not exist"):
        ReplayLLM(Cassette(tmp_path / "missing.jsonl"))


def test_no_secret_reaches_the_cassette(server, tmp_path, monkeypatch):
    url, handle = server
    other = "zz-other-VALUE-42"
    monkeypatch.setenv("MYSERVICE_API_KEY", other)
    path = tmp_path / "run.jsonl"
    rec = RecordingLLM(OpenAICompatBackend(base_url=url, model="tiny", api_key=SECRET,
                                           backoff_s=0.01), Cassette(path))
    leaky = GenRequest(f"my keys are {SECRET} and {other}", max_new_tokens=3)
    gen = rec.generate(leaky)
    handle.fail_next(1, 401, "invalid credentials: Bearer abc.def-ghi")
    with pytest.raises(LLMError, match="401"):
        rec.generate(GenRequest("again", max_new_tokens=3))
    assert handle.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    data = path.read_bytes()
    for secret in (SECRET, "SECRET123", other, "abc.def-ghi"):
        assert secret.encode() not in data
    assert b"***" in data and b"401" in data
    # the request key is the real request's hash, so the scrubbed record still replays
    again = ReplayLLM(Cassette(path)).generate(leaky)
    assert again.completions == gen.completions
    assert again.rendered_prompt == "my keys are *** and ***"
    with pytest.raises(LLMError, match="401"):
        ReplayLLM(Cassette(path)).generate(GenRequest("again", max_new_tokens=3))


def test_search_record_and_replay_with_recorded_error(corpus, tmp_path):
    cas = Cassette(tmp_path / "run.jsonl")
    rec = RecordingSearch(corpus, cas)
    live = rec.search("founder of Acme", k=2)
    assert rec.name == "corpus" and live[0].title == "Acme"
    with pytest.raises(SearchError):
        rec.search("anything", k=0)  # the corpus backend refuses k < 1
    replay = ReplaySearch(cas)
    assert replay.search("founder of Acme", k=2) == live
    with pytest.raises(SearchError, match="k must be at least 1"):
        replay.search("anything", k=0)
    with pytest.raises(SearchReplayMiss, match=search_key("founder of Acme", 3)):
        replay.search("founder of Acme", k=3)  # k is part of the key


def test_concurrent_writes_stay_whole_lines_and_survive_a_torn_tail(tmp_path):
    cas = Cassette(tmp_path / "run.jsonl")
    payload = "x" * 20_000  # bigger than any write buffer

    def write(t):
        for i in range(20):
            cas.append({"type": "note", "key": f"{t}-{i}", "payload": payload})

    threads = [threading.Thread(target=write, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open(cas.path, "a") as f:
        f.write('{"type": "llm", "key": "torn')  # a run killed mid-line
    recs = cas.records()
    assert len(recs) == 120 and {r["key"] for r in recs} == {f"{t}-{i}" for t in range(6)
                                                           for i in range(20)}
    rec = '{"type": "llm", "key": "k", "error": "down"}'
    (tmp_path / "bad.jsonl").write_text(f'{rec}\nnot json\n{rec}\n')
    with pytest.raises(LLMError, match=r"bad\.jsonl:2: invalid JSON \(expecting value at column 1\)"):
        ReplayLLM(Cassette(tmp_path / "bad.jsonl"))


def test_factory_record_then_replay(hf, tmp_path):
    from agent.llm.factory import make_llm, wrap_record

    path = tmp_path / "run.jsonl"
    rec = wrap_record(hf, path)
    req = GenRequest("record me", max_new_tokens=4)
    live = rec.generate(req)
    assert rec.name == hf.name
    assert make_llm(f"replay:{path}").generate(req) == live
    assert make_llm(f"replay:{path}", name="frozen").name == "frozen"
    with pytest.raises(LLMError, match="does not exist"):
        make_llm(f"replay:{tmp_path / 'nope.jsonl'}")
