"""LoRA adapters served by an OpenAI-compatible server, as vLLM does with runtime LoRA updating.

Everything talks real HTTP to tests/openai_server.py on loopback, whose LoRAModels loads
each adapter with PEFT from the `lora_path` it is sent and generates with it: the client's
`--adapter` really changes what the served model says. The CLI paths (`collect --adapter`,
`improve --model openai:NAME --base DIR`) are driven like a user drives them.
"""

from __future__ import annotations

import json
import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agent.llm.base import LLMError  # noqa: E402
from agent.llm.factory import make_llm  # noqa: E402
from agent.llm.lora_server import LoRAServer, adapter_name  # noqa: E402
from agent.llm.openai_compat import ServerHTTP  # noqa: E402
from store.records import GenRequest  # noqa: E402
from tests.harness import cli_env, query, run_cli  # noqa: E402
from tests.openai_server import (LoRAModels, build_lively_adapter,  # noqa: E402
                                 build_lively_model, start_server)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_lively_model(tmp_path_factory.mktemp("lively"))


@pytest.fixture(scope="module")
def adapter(base, tmp_path_factory):
    return build_lively_adapter(base, tmp_path_factory.mktemp("lora") / "it1" / "adapter")


@pytest.fixture()
def served(base):
    models = LoRAModels(base)
    url, handle = start_server(None, model="tiny", lora=models)
    yield url, handle, models
    handle()
    models.close()


def _llm(url, adapter=None, **kw):
    kw.setdefault("backoff_s", 0.01)
    return make_llm("openai:tiny", adapter=str(adapter) if adapter else None, base_url=url,
                    mode="completions", **kw)


def test_adapter_is_loaded_from_its_path_and_generates(served, base, adapter):
    from agent.llm.hf import HFBackend

    url, handle, models = served
    req = GenRequest("Search(query=", max_new_tokens=8)
    through_server = _llm(url, adapter).generate(req)
    name = adapter_name(adapter)
    assert models.loads == [(name, str(adapter.resolve()))]
    assert through_server.model == f"openai:{name}" and handle.requests[-1].body["model"] == name
    with HFBackend(str(base), adapter=str(adapter), dtype="fp32") as local:
        assert through_server.completions[0].text == local.generate(req).completions[0].text
    base_text = _llm(url).generate(req).completions[0].text
    assert base_text != through_server.completions[0].text  # the adapter changed the answer
    assert name in LoRAServer(ServerHTTP(url)).models()


def test_loading_the_same_adapter_again_is_a_no_op(served, adapter):
    url, _, models = served
    first, second = _llm(url, adapter), _llm(url, adapter)  # a second worker, a resumed run
    assert first.name == second.name and len(models.adapters) == 1
    assert second.generate(GenRequest("hi", max_new_tokens=2)).completions


def test_k_samples_are_one_request_with_log_probabilities(served, adapter):
    url, handle, _ = served
    gen = make_llm("openai:tiny", adapter=str(adapter), base_url=url).generate(
        GenRequest("Answer the question", n=4, max_new_tokens=6))
    posts = [r for r in handle.requests if r.path.endswith("/chat/completions")]
    assert len(posts) == 1 and posts[0].body["n"] == 4 and posts[0].body["logprobs"] is True
    assert len(gen.completions) == 4
    assert all(c.logprob is not None and c.n_tokens > 0 for c in gen.completions)


def test_unload_frees_the_name(served, adapter):
    url, _, models = served
    llm = _llm(url, adapter)
    server = LoRAServer(ServerHTTP(url))
    assert server.unload(adapter_name(adapter)) is True and not models.adapters
    assert server.unload(adapter_name(adapter)) is False  # already gone
    with pytest.raises(LLMError, match=r"refused the request \(404\): The model .* does not exist"):
        llm.generate(GenRequest("hi", max_new_tokens=2))


def test_a_refused_load_is_one_clear_line(base, adapter):
    models = LoRAModels(base, refuse="Maximum number of LoRA adapters reached")
    url, handle = start_server(None, lora=models)
    try:
        with pytest.raises(LLMError) as info:
            _llm(url, adapter)
        message = str(info.value)
        assert "refused to load the LoRA adapter" in message and "Maximum number" in message
        assert "\n" not in message and len(handle.requests) == 1  # a refusal is not retried
    finally:
        handle()
        models.close()


def test_a_server_without_runtime_lora_says_how_to_start_one(base, adapter):
    from tests.openai_server import hf_responder

    models = LoRAModels(base)
    url, handle = start_server(hf_responder(models.base))  # no LoRA endpoints: 404
    try:
        with pytest.raises(LLMError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
            _llm(url, adapter)
    finally:
        handle()
        models.close()


def test_a_dropped_connection_is_retried_then_reported(served, adapter):
    url, handle, _ = served
    llm = _llm(url, adapter, max_retries=3)
    handle.drop_next(2)
    gen = llm.generate(GenRequest("hi", max_new_tokens=3))
    assert gen.completions[0].text is not None
    assert sum(r.path.endswith("/completions") for r in handle.requests) == 3
    handle.drop_next(10)
    with pytest.raises(LLMError) as info:
        _llm(url, adapter, max_retries=1).generate(GenRequest("hi", max_new_tokens=3))
    message = str(info.value)
    assert message.startswith("gave up after 2 attempts: lost the connection to") and "\n" not in message


def test_a_retrained_adapter_gets_a_new_name(base, tmp_path):
    path = build_lively_adapter(base, tmp_path / "it1" / "adapter")
    first = adapter_name(path)
    assert adapter_name(path) == first and f"{tmp_path.name}-it1-" in first
    weights = path / "adapter_model.safetensors"
    stamp = weights.stat().st_mtime_ns + 1_000_000
    os.utime(weights, ns=(stamp, stamp))
    assert adapter_name(path) != first


def test_a_path_without_an_adapter_is_refused_before_the_server_is_asked(served, tmp_path):
    url, handle, _ = served
    with pytest.raises(LLMError, match="not a LoRA adapter directory"):
        _llm(url, tmp_path)
    assert not handle.requests


# --- the CLI -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_served(tmp_path_factory):
    """A small random Llama behind the server; completions capped at 8 tokens (see LoRAModels)."""
    from tests.tiny import build_tiny_model

    base = build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden=32, layers=1)
    models = LoRAModels(base, max_tokens=8)
    url, handle = start_server(None, model="tiny", lora=models)
    yield url, handle, models, base
    handle()
    models.close()


def _posts(handle, since: int = 0):
    return [r for r in handle.requests[since:] if r.path.endswith("/chat/completions")]


def test_collect_grows_through_a_served_adapter(tiny_served, tmp_path):
    url, handle, models, base = tiny_served
    lora = build_lively_adapter(base, tmp_path / "lora", seed=3)
    since, db = len(handle.requests), tmp_path / "c.db"
    r = run_cli(["--db", str(db), "collect", "--world", "pocket", "--model", "openai:tiny",
                 "--adapter", str(lora), "--samples", "3", "--limit", "1", "--max-searches", "2"],
                cli_env(tmp_path, OPENAI_BASE_URL=url), timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    name = adapter_name(lora)
    assert (name, str(lora.resolve())) in models.loads
    posts = _posts(handle, since)
    assert posts and all(p.body["model"] == name and p.body["n"] == 3 for p in posts)
    # one request per model call: the K samples come back together, with their log-probabilities
    calls = [json.loads(o) if isinstance(o, str) else o
             for (o,) in query(db, "SELECT options FROM llm_calls")]
    assert len(calls) == len(posts) and {c["n"] for c in calls} == {3}
    assert all(p.body["logprobs"] is True for p in posts)


def test_improve_base_must_be_a_model_and_served(tiny_served, tmp_path):
    url, _, _, base = tiny_served
    env = cli_env(tmp_path, OPENAI_BASE_URL=url)
    db = tmp_path / "none.db"
    for extra, expect in ((["--model", "openai:other", "--base", str(base)], "does not serve 'other'"),
                          (["--model", "openai:tiny", "--base", str(tmp_path)], "not a local model directory"),
                          (["--model", str(base), "--base", str(base)], "--base applies to --model openai:")):
        r = run_cli(["--db", str(db), "improve", "--world", "pocket", *extra], env, timeout=120)
        assert r.returncode != 0 and expect in r.stderr, r.stderr[-1000:]
        assert len(r.stderr.strip().splitlines()) == 1
    # with worker processes every server they are sent to is checked
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    r = run_cli(["--db", str(db), "improve", "--world", "pocket", "--model", "openai:tiny",
                 "--base", str(base), "--workers", "2"],
                {**env, "RESTREACT_OPENAI_BASE_URLS": f"{url},{dead}"}, timeout=120)
    assert r.returncode != 0 and f"cannot reach {dead}/models" in r.stderr, r.stderr[-1000:]
    assert not db.exists() or not query(db, "SELECT COUNT(*) FROM runs")[0][0]


def test_ask_on_a_server_that_keeps_hanging_up_is_one_line(tiny_served, tmp_path):
    url, handle, _, base = tiny_served
    lora = build_lively_adapter(base, tmp_path / "lora", seed=4)
    handle.drop_next(5)  # every attempt of the default 4 retries
    try:
        r = run_cli(["--db", str(tmp_path / "a.db"), "ask", "--world", "pocket", "--model",
                     "openai:tiny", "--adapter", str(lora), "Who founded Acme?"],
                    cli_env(tmp_path, OPENAI_BASE_URL=url), timeout=120)
    finally:
        handle._failures.clear()
    error = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(error) == 1, r.stderr[-1000:]
    assert "gave up after 5 attempts: lost the connection to" in error[0]


@pytest.mark.slow
def test_improve_with_a_refusing_server_loses_nothing_then_resumes(tiny_served, tmp_path):
    """Grow (the scripted teacher), rank, build and train run; loading the adapter for the
    evaluation is refused: one line, everything kept. Re-run on a server that loads it:
    the run resumes at the evaluation, which runs through the adapter."""
    url, handle, models, base = tiny_served
    db, workdir, name = tmp_path / "i.db", tmp_path / "work", "served"
    args = ["--db", str(db), "improve", "--world", "pocket", "--model", "openai:tiny",
            "--base", str(base), "--teacher", "scripted:pocket:0.3", "--iterations", "1",
            "--grow-questions", "3", "--eval-questions", "1", "--samples", "2",
            "--concurrency", "2", "--max-searches", "2", "--workdir", str(workdir), "--name", name]
    env = cli_env(tmp_path, OPENAI_BASE_URL=url)
    models.refuse = "Maximum number of LoRA adapters reached"
    since = len(handle.requests)
    try:
        r = run_cli(args, env, timeout=400)
    finally:
        models.refuse = None
    assert r.returncode != 0
    error = r.stderr.strip().splitlines()
    assert len(error) == 1 and "refused to load the LoRA adapter" in error[0], r.stderr[-2000:]
    adapter = workdir / name / "it1" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert query(db, "SELECT adapter_path FROM model_versions WHERE name = :n",
                 n=f"{name}:it1") == [(str(adapter),)]
    grown = query(db, """SELECT COUNT(*) FROM trajectories t JOIN runs r ON r.id = t.run_id
                         WHERE r.name = :n AND t.status = 'finished'""", n=f"{name}:grow:1")
    assert grown[0][0] == 3
    baseline = _posts(handle, since)  # the baseline evaluation ran on the served base model
    assert baseline and {p.body["model"] for p in baseline} == {"tiny"}

    since = len(handle.requests)
    r = run_cli(args, env, timeout=400)  # the server loads adapters again: the run resumes
    assert r.returncode == 0, r.stderr[-2000:]
    served_name = adapter_name(adapter)
    assert (served_name, str(adapter.resolve())) in models.loads
    evaluated = _posts(handle, since)
    assert evaluated and {p.body["model"] for p in evaluated} == {served_name}
    assert query(db, """SELECT COUNT(*) FROM evaluations e JOIN runs r ON r.id = e.run_id
                        WHERE r.name = :n""", n=f"{name}:eval:1")[0][0] == 1


def test_served_rollouts_train_on_the_prompt_the_server_renders(tmp_path):
    """A server stores the bare prompt (it applies the chat template itself), so with served
    rollouts the build stage renders the examples with the base's template, as the student is
    fed them; local rollouts already store the rendered prompt and are left as they are.
    The grower is the scripted pocket policy, which also stores the bare prompt."""
    from types import SimpleNamespace

    from agent.setup import AgentOptions, build_agent
    from agent.state import AgentConfig
    from agent.worlds import get_world
    from store.api import Store
    from tests.tiny import build_tiny_model
    from trainer.improve import ImproveOptions, Improver

    tiny = build_tiny_model(tmp_path / "tiny", hidden=32, layers=1)
    store = Store(str(tmp_path / "s.db"))
    question_set = get_world("pocket").ensure_questions(store)

    def scripted(model, adapter, k, greedy=True):
        return build_agent(AgentOptions(model="scripted:pocket:0.0", world="pocket",
                                        config=AgentConfig(samples=k, greedy=greedy,
                                                           max_searches=2)), store)

    for rollout in (None, "openai:tiny"):
        opts = ImproveOptions(model=str(tiny), world="pocket", name=f"served-{rollout}",
                              grow_questions=2, samples=2, workdir=str(tmp_path / "work"))
        improver = Improver(store, opts, log=lambda line: None).open(question_set)
        improver.cfg.rollout_model = rollout
        improver.policy = scripted
        improver.rank(1, improver.grow(1, SimpleNamespace(name="base", adapter_path=None, id=None)))
        examples, _ = improver.build(1)
        assert examples
        rendered = {ex.prompt.startswith("<|begin_of_text|>") for ex in examples}
        assert rendered == {rollout is not None}, rollout
