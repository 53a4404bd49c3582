"""`cli.py browse` (store/browse.py): the canned queries run against a real store, and the
command hands Datasette the right database and metadata."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import subprocess
import sys

import pytest

from store.records import SearchCall, SearchResult
from store.browse import CANNED
from tests.conftest import write_trajectory
from tests.harness import cli_env, run_cli


@pytest.fixture
def db(tmp_path):
    """A real SQLite store: two trajectories, one rejected step, two empty searches, two
    evaluated questions (one right, one wrong)."""
    from store.api import Store

    path = tmp_path / "store.db"
    store = Store(str(path))
    store.import_questions("s", [{"id": "q1", "question": "Who founded Acme?", "answer": "Ada Quill"},
                                 {"id": "q2", "question": "Where is Lowtown?", "answer": "Pomeria"}])
    q1, q2 = store.questions("s")
    a = write_trajectory(store, question=q1.text)
    b = write_trajectory(store, question=q2.text, run_name="collect-2")
    # a's decide step: the judge's pick (sample 1) is marked bad -> rejected; b's is kept
    store.add_ranking(a["step_ids"][0], "rules", "rules-v3", "ok", best_index=1, order=[1, 0],
                      bad=[1], explanation="the search repeats")
    store.add_ranking(b["step_ids"][0], "rules", "rules-v3", "ok", best_index=0, order=[0, 1], bad=[1])
    store.add_search(SearchCall(query="nothing at all", backend="bm25", results=[]), a["trajectory_id"])
    store.add_search(SearchCall(query="offline", backend="web", error="DDGSException: no network"),
                     b["trajectory_id"])
    store.add_search(SearchCall(query="found", backend="bm25",
                                results=[SearchResult(1, "t", "u", "s")]), b["trajectory_id"])
    ev = store.get_or_create_run("eval-1", "eval")
    for q, exact in [(q1, 1.0), (q2, 0.0)]:
        store.add_evaluation(ev.id, q.id, 0, "x", q.answer, exact, exact)
    store.add_evaluation(ev.id, q1.id, 1, "x", q1.answer, 0.0, 0.5)  # q1: right once of twice
    store.close()
    return path, a, b, (q1.id, q2.id)


def rows(path, name: str) -> list[dict]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(CANNED[name]["sql"])]
    finally:
        conn.close()


def test_worst_questions_lowest_mean_first(db):
    path, _, _, (q1, q2) = db
    got = rows(path, "worst_questions")
    assert [(r["question_id"], r["evaluations"], r["exact_mean"]) for r in got] == [(q2, 1, 0.0), (q1, 2, 0.5)]


def test_rejected_steps_are_those_whose_pick_the_judge_marked_bad(db):
    path, a, _, _ = db
    got = rows(path, "rejected_steps")
    assert [(r["step_id"], r["run"], r["best_index"]) for r in got] == [(a["step_ids"][0], "collect-1", 1)]
    assert got[0]["explanation"] == "the search repeats"
    assert got[0]["chosen_sample"].startswith('Search(query="Acme founder"')


def test_empty_searches_are_those_with_no_results_or_an_error(db):
    got = rows(db[0], "empty_searches")
    assert sorted(r["query"] for r in got) == ["nothing at all", "offline"]


def test_slowest_llm_calls_first(db):
    got = rows(db[0], "slowest_llm_calls")
    assert [r["duration_s"] for r in got] == [0.5, 0.5, 0.25, 0.25]
    assert got[0]["tokens_per_s"] == 24.0  # 12 tokens in 0.5 s


def test_browse_builds_the_datasette_invocation(db, tmp_path):
    path = db[0]
    res = run_cli(["--db", str(path), "browse", "--dry-run", "--port", "8123", "--no-open"], cli_env(tmp_path))
    if importlib.util.find_spec("datasette") is None:
        assert res.returncode != 0 and "pip install 'restreact[browse]'" in res.stderr
        pytest.skip("datasette is not installed: only its absence is checked")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["command"][1:] == ["-m", "datasette", "serve", str(path), "--metadata", "METADATA.json",
                                  "--port", "8123"]
    queries = out["metadata"]["databases"]["store"]["queries"]
    assert set(queries) == set(CANNED)
    assert queries["worst_questions"]["sql"] == CANNED["worst_questions"]["sql"].strip()


@pytest.mark.skipif(importlib.util.find_spec("datasette") is None, reason="datasette is not installed")
def test_datasette_serves_the_canned_queries(db, tmp_path):
    from store.browse import metadata

    path, _, _, (q1, q2) = db
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps(metadata(path)))
    # `--get` answers one request through the real app and exits: no port, no server left behind
    res = subprocess.run([sys.executable, "-m", "datasette", "serve", str(path), "--metadata", str(meta),
                          "--get", "/store/worst_questions.json?_shape=array"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [r["question_id"] for r in json.loads(res.stdout)] == [q2, q1]


def test_browse_refuses_a_missing_database_in_one_line(tmp_path):
    res = run_cli(["--db", str(tmp_path / "none.db"), "browse", "--dry-run"], cli_env(tmp_path))
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [
        f"error: no database at {tmp_path / 'none.db'} (run `collect` or `ask` first, or pass --db)"]
