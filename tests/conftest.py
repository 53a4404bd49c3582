"""Shared fixtures: every test runs in its own tmp_path, and store tests run on both backends.

PostgreSQL is used when RESTREACT_TEST_PG names a server
(e.g. postgresql://postgres@127.0.0.1:5432/postgres, as `.ci/run` starts one); each test
gets a freshly created database with a unique name, dropped afterwards. Without the
variable the postgres cases are skipped, saying so.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

PG_ENV = "RESTREACT_TEST_PG"
REPO = Path(__file__).resolve().parent.parent

# pytest-xdist (`-n 2` in pyproject's addopts) runs two test processes side by side. Each
# takes its share of the cores for torch's intra-op threads, and so do the CLI children it
# starts (they inherit the variable): without this two OpenMP pools of all the cores each
# fight over a small machine. Set before any test module imports torch.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _workers))


def pytest_collection_modifyitems(config, items):
    """Files that hold a `slow` test run first, each file's tests still together and in their
    own order. xdist hands out whole files in this order (pyproject's addopts), so the long
    kill/resume and multi-process runs start at once instead of one of them running last on
    one worker while the other sits idle. Without xdist only the order changes."""
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)


@pytest.fixture(scope="session")
def _pocket_cache(tmp_path_factory):
    """One pocket-world cache per test process (the world builds in a fraction of a second),
    outside the user's ~/.cache."""
    return tmp_path_factory.mktemp("restreact-cache")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, _pocket_cache):
    """No test reads or writes the user's files: cwd, the data folder (default DB, improve's
    adapters), the pocket cache and the hub are sandboxed. CLI children inherit all of it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RESTREACT_DB", str(tmp_path / "restreact.db"))
    monkeypatch.setenv("RESTREACT_HOME", str(tmp_path / "restreact-home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("RESTREACT_CACHE", str(_pocket_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _pg_admin_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL tests need {PG_ENV}=postgresql://USER@HOST:PORT/DB (.ci/run sets it)")
    return url


def _pg_connect(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True)


def _with_database(url: str, name: str) -> str:
    """The same server URL with another database name (query string kept)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database for one test; dropped (connections forced) after."""
    admin = _pg_admin_url()
    name = f"restreact_test_{uuid.uuid4().hex[:12]}"
    with _pg_connect(admin) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(admin, name)
    finally:
        with _pg_connect(admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A database URL for an empty database: a real SQLite file, or a fresh PostgreSQL DB."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(db_url):
    """A migrated Store on each backend."""
    from store.api import Store

    s = Store(db_url)
    yield s
    s.close()


# --- a realistic trajectory, written through the Store API ------------------------------


def write_trajectory(store, question: str = "Who founded Acme?", run_name: str = "collect-1",
                     finish: bool = True) -> dict:
    """Claim and write a two-step trajectory (decide with a search, then answer); return its ids."""
    from store.records import (
        Completion,
        GenRequest,
        Generation,
        Answer,
        Sample,
        Search,
        SearchCall,
        SearchResult,
        Step,
    )

    run = store.get_or_create_run(run_name, "collect", {"k": 2})
    claim = store.claim(run.id, None, question, model="tiny")
    decide = Step(
        kind="decide", prompt=f"ORIGINAL_QUESTION = {question!r}\nPAST_ACTIONS = []", index=0,
        samples=[
            Sample('Search(query="Acme founder", thoughts="look it up")', n_tokens=9, logprob=-2.0,
                   action=Search(query="Acme founder", thoughts="look it up")),
            Sample("Serch(broken", n_tokens=4, logprob=-9.0, parse_error="unknown action 'Serch'"),
        ],
        chosen=0, latency_s=0.25, prompt_tokens=31)
    search = SearchCall(query="Acme founder", backend="bm25", latency_s=0.01, results=[
        SearchResult(1, "Acme Corp", "https://pocket.example/acme", "Acme was founded by Ada Quill."),
        SearchResult(2, "Acme (band)", "https://pocket.example/acme-band", "A band from Lowtown."),
    ])
    gen = Generation(rendered_prompt=decide.prompt + "\n<assistant>", model="tiny", prompt_tokens=31,
                     duration_s=0.25, completions=[Completion(s.text, s.n_tokens, s.logprob)
                                                   for s in decide.samples])
    step0 = store.add_step(claim.trajectory_id, decide, gen, GenRequest(decide.prompt, n=2, purpose="decide"),
                           searches=[search])
    answer = Step(kind="answer", prompt="ANSWER PROMPT for " + question, index=1, chosen=0,
                  samples=[Sample('Answer(thoughts="found", answer="Ada Quill [link_id=1]")', n_tokens=12,
                                  logprob=-1.2, action=Answer("found", "Ada Quill [link_id=1]"))])
    gen2 = Generation(rendered_prompt=answer.prompt, model="tiny", prompt_tokens=20, duration_s=0.5,
                      completions=[Completion(answer.samples[0].text, 12, -1.2)])
    step1 = store.add_step(claim.trajectory_id, answer, gen2, GenRequest(answer.prompt, purpose="answer"))
    if finish:
        store.finish_trajectory(claim.trajectory_id, "finished", answer="Ada Quill [link_id=1]",
                                final_answer="Ada Quill [link_id=1]")
    return {"run_id": run.id, "trajectory_id": claim.trajectory_id, "step_ids": [step0, step1]}
