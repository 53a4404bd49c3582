"""The store on both backends: every table round-trips, migrations, claims, crashes, concurrency."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from datetime import datetime

import pytest
from sqlalchemy import func, inspect, select, text, update

from store.api import Store
from store.models import (
    Base,
    LLMCall,
    SearchCallRow,
    StepRow,
    StepSample,
    Trajectory,
)
from tests.conftest import write_trajectory
from tests.harness import HANG_S

SPAWN = mp.get_context("spawn")  # a fresh interpreter: no inherited connections or locks


def count(store: Store, model) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(model))


# --- schema and migrations --------------------------------------------------------------


def test_empty_database_is_migrated_to_head(store):
    from alembic.script import ScriptDirectory
    from alembic.config import Config

    from store.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head]
    tables = set(inspect(store.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_migration_matches_the_models(store):
    """The migrated schema is what the ORM declares: no drift between models.py and 0001."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    # SQLite cannot add the model_versions.run_id key after both tables exist (see 0001).
    diff = [d for d in diff if not (store.engine.dialect.name == "sqlite" and d[0] == "add_fk"
                                    and d[1].parent.name == "model_versions")]
    assert diff == []


def test_reopening_keeps_data_and_version(db_url):
    first = Store(db_url)
    ids = write_trajectory(first)
    first.import_questions("bam", [{"question": "q1", "answer": "a1"}])
    first.close()

    again = Store(db_url)
    try:
        assert again.trajectory(ids["trajectory_id"]).final_answer == "Ada Quill [link_id=1]"
        assert again.question_sets() == [("bam", 1)]
        with again.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        again.close()


def _open_store(url: str, start, out) -> None:
    start.wait(30)
    try:
        Store(url).close()
        out.put("ok")
    except Exception as e:  # reported to the parent, which fails the test with the message
        out.put(f"{type(e).__name__}: {e}")


def test_concurrent_first_opens_migrate_once(db_url):
    """Collectors started together on a new database all open it; the schema is made once."""
    start, out = SPAWN.Event(), SPAWN.Queue()
    procs = [SPAWN.Process(target=_open_store, args=(db_url, start, out)) for _ in range(3)]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=HANG_S) for _ in procs]
    for p in procs:
        p.join(30)
    assert results == ["ok"] * 3
    s = Store(db_url)
    try:
        with s.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        s.close()


def test_bad_database_url_is_one_clear_error(tmp_path):
    from store.db import StoreError

    with pytest.raises(StoreError, match="database folder does not exist"):
        Store(str(tmp_path / "missing" / "x.db"))
    with pytest.raises(StoreError, match="cannot"):
        Store("nosuchdialect://x")


# --- question sets ----------------------------------------------------------------------


def test_questions_round_trip_and_reimport_adds_nothing(store):
    rows = [{"id": "b1", "question": "Who?", "answer": "Ada"},
            {"id": "b2", "question": "Where?", "split": "test", "meta": {"hops": 2}},
            {"question": "When?"}]
    assert store.import_questions("bam", rows, split="dev", source="bam.csv") == 3
    assert store.import_questions("bam", rows) == 0
    assert store.question_sets() == [("bam", 3)]
    assert store.has_question_set("bam") and not store.has_question_set("nope")

    got = {q.ext_id: q for q in store.questions("bam")}
    assert (got["b1"].text, got["b1"].answer, got["b1"].split) == ("Who?", "Ada", "dev")
    assert (got["b2"].split, got["b2"].meta, got["b2"].answer) == ("test", {"hops": 2}, None)
    assert [q.text for q in store.questions("bam", split="test")] == ["Where?"]
    assert len(store.questions("bam", limit=2)) == 2


def test_files_without_ids_add_up_and_reimport_idempotently(store):
    assert store.import_questions("mix", [{"question": "Who?"}, {"question": "Where?"}]) == 2
    assert store.import_questions("mix", [{"question": "When?"}, {"question": "Who?"}]) == 1
    assert sorted(q.text for q in store.questions("mix")) == ["When?", "Where?", "Who?"]


@pytest.mark.parametrize("bad", [{"answer": "no question"}, {"question": "  "}])
def test_question_import_is_all_or_nothing(store, bad):
    with pytest.raises((KeyError, ValueError)):
        store.import_questions("bam", [{"question": "fine"}, bad])
    assert store.question_sets() == []
    assert store.questions("bam") == []


# --- runs -------------------------------------------------------------------------------


def test_runs_round_trip(store):
    run = store.get_or_create_run("improve-1", "improve", {"iterations": 2})
    assert store.get_or_create_run("improve-1", "improve").id == run.id
    store.set_run_state(run.id, stage="rank", iteration=1)
    store.set_run_state(run.id, stage="train")
    store.finish_run(run.id)
    store.get_or_create_run("eval-1", "eval")

    again = store.get_run("improve-1")
    assert store.get_run(run.id).name == "improve-1"
    assert store.get_run("nope") is None
    assert again.config == {"iterations": 2}
    assert again.state == {"stage": "train", "iteration": 1}
    assert again.status == "finished" and again.finished_at is not None
    assert [r.name for r in store.runs(kind="eval")] == ["eval-1"]
    assert len(store.runs()) == 2


# --- trajectories, steps, samples, searches, llm calls ----------------------------------


def test_trajectory_round_trip(store):
    ids = write_trajectory(store)
    t = store.trajectory(ids["trajectory_id"])
    assert (t.status, t.question, t.model) == ("finished", "Who founded Acme?", "tiny")
    assert t.final_answer == "Ada Quill [link_id=1]" and t.finished_at is not None

    decide, answer = t.steps
    assert (decide.kind, decide.idx, decide.chosen_index, decide.status) == ("decide", 0, 0, "ok")
    assert decide.action == {"name": "Search", "query": "Acme founder", "thoughts": "look it up"}
    assert decide.prompt.startswith("ORIGINAL_QUESTION = 'Who founded Acme?'")
    assert (decide.prompt_tokens, decide.completion_tokens, decide.latency_s) == (31, 13, 0.25)
    good, bad = decide.samples
    assert good.perplexity == pytest.approx(2.718281828 ** (2 / 9))
    assert bad.action is None and bad.parse_error == "unknown action 'Serch'"
    assert answer.action["answer"] == "Ada Quill [link_id=1]"

    (search,) = t.searches
    assert (search.query, search.backend, search.step_id) == ("Acme founder", "bm25", decide.id)
    assert search.results[0] == {"link_id": 1, "title": "Acme Corp", "url": "https://pocket.example/acme",
                                 "snippet": "Acme was founded by Ada Quill."}
    assert store.search_cache("Acme founder")[1]["title"] == "Acme (band)"
    assert store.search_cache("never searched") is None

    calls = store.llm_calls(limit=0, trajectory_id=t.id)
    assert [c.purpose for c in calls] == ["answer", "decide"]  # newest first
    assert calls[1].responses[1] == "Serch(broken" and calls[1].options["n"] == 2
    assert (calls[1].prompt_tokens, calls[1].completion_tokens, calls[1].step_id) == (31, 13, decide.id)

    assert store.finished_keys(ids["run_id"]) == {(None, 0)}
    assert [s.id for s in store.steps_of_run(ids["run_id"], min_samples=2)] == [decide.id]
    assert store.trajectories(run_id=ids["run_id"], status="finished")[0].id == t.id


def test_llm_call_search(store):
    write_trajectory(store, "Who founded Acme?")
    write_trajectory(store, "Where is Lowtown?", run_name="collect-2")
    assert len(store.llm_calls()) == 3  # default: the newest three
    assert len(store.llm_calls(limit=0)) == 4
    hits = store.llm_calls(limit=0, query="lowtown")  # case-insensitive, in the prompt
    assert len(hits) == 2 and all("Lowtown" in c.prompt for c in hits)
    in_response = store.llm_calls(limit=0, query='QUERY="acme FOUNDER')  # only in the response
    assert [c.purpose for c in in_response] == ["decide", "decide"]
    assert store.llm_calls(query="no such text") == []


def test_rankings_round_trip(store):
    ids = write_trajectory(store)
    step = ids["step_ids"][0]
    assert store.add_ranking(step, "rule", "v1", "ok", best_index=0, order=[0, 1], bad=[1],
                             explanation="#2 does not parse", raw="Answer: #1")
    assert store.add_ranking(step, "rule", "v1", "ok", best_index=1) is False  # already ranked
    assert store.add_ranking(step, "llm:tiny", "v1", "unparseable", raw="???")
    assert store.ranked_step_ids("rule", "v1") == {step}
    assert store.ranked_step_ids("rule", "v2") == set()

    rankings = {r.judge: r for r in store.trajectory(ids["trajectory_id"]).steps[0].rankings}
    rule = rankings["rule"]
    assert (rule.best_index, rule.order, rule.bad, rule.explanation) == (0, [0, 1], [1], "#2 does not parse")
    assert (rankings["llm:tiny"].status, rankings["llm:tiny"].best_index) == ("unparseable", None)


def test_model_versions_with_lineage(store):
    run = store.get_or_create_run("improve-1", "improve")
    base = store.add_model_version("pocket-0", "pocket-base")
    child = store.add_model_version("pocket-1", "pocket-base", adapter_path="adapters/1",
                                    parent_id=base.id, iteration=1, run_id=run.id,
                                    step_ids=[3, 5, 8], config={"lora_r": 16}, metrics={"loss": 1.5})
    store.update_model_version(child.id, metrics={"dev_em": 0.4}, promoted=True)

    got = store.model_version("pocket-1")
    assert store.model_version(child.id).name == "pocket-1"
    assert store.model_version(store.model_version(got.parent_id).id).name == "pocket-0"
    assert (got.adapter_path, got.iteration, got.run_id, got.step_ids) == ("adapters/1", 1, run.id, [3, 5, 8])
    assert got.metrics == {"loss": 1.5, "dev_em": 0.4} and got.config == {"lora_r": 16}
    assert got.promoted and not store.model_version("pocket-0").promoted
    assert [m.name for m in store.model_versions()] == ["pocket-0", "pocket-1"]
    assert store.model_version("nope") is None


def test_evaluations_round_trip(store):
    store.import_questions("bam", [{"id": "1", "question": "Who?", "answer": "Ada"}])
    (q,) = store.questions("bam")
    run = store.get_or_create_run("eval-1", "eval")
    ids = write_trajectory(store)
    mv = store.add_model_version("m0", "base")
    store.add_evaluation(run.id, q.id, 0, "Ada", "Ada", 1.0, 1.0, judge_verdict=True,
                         trajectory_id=ids["trajectory_id"], model_version_id=mv.id)
    store.add_evaluation(run.id, q.id, 0, "other", "Ada", 0.0, 0.0)  # resumed: ignored
    store.add_evaluation(run.id, q.id, 1, "Ada Lovelace", "Ada", 0.0, 0.67, judge_verdict=False)

    first, second = store.evaluations(run.id)
    assert (first.prediction, first.exact, first.judge_verdict, first.model_version_id) == ("Ada", 1.0, True, mv.id)
    assert first.trajectory_id == ids["trajectory_id"]
    assert (second.run_index, second.f1, second.judge_verdict) == (1, 0.67, False)


# --- claims -----------------------------------------------------------------------------


def test_second_claim_by_a_live_worker_is_refused(db_url):
    a, b = Store(db_url), Store(db_url)  # two workers, both alive (this process)
    try:
        run = a.get_or_create_run("collect-1", "collect")
        first = a.claim(run.id, None, "q", sample_index=0)
        a.import_questions("s", [{"question": "q"}])
        (q,) = a.questions("s")
        held = a.claim(run.id, q.id, "q")
        assert held is not None and first is not None
        assert b.claim(run.id, q.id, "q") is None
        assert b.claim(run.id, q.id, "q", sample_index=1) is not None  # another sample is free
        a.finish_trajectory(held.trajectory_id, "finished", final_answer="x")
        assert a.claim(run.id, q.id, "q") is None  # finished: never redone
    finally:
        a.close(), b.close()


def test_stale_claim_is_taken_over_only_from_another_host(store, db_url):
    from store.records import Sample, Step, Terminate
    from store.api import ClaimLost

    store.import_questions("s", [{"question": "q"}])
    (q,) = store.questions("s")
    run = store.get_or_create_run("collect-1", "collect")
    held = store.claim(run.id, q.id, "q")
    other = Store(db_url)
    try:
        assert other.claim(run.id, q.id, "q") is None
        with store.session() as s:  # the holder stopped sending heartbeats long ago...
            s.execute(update(Trajectory).values(heartbeat_at=datetime(2000, 1, 1)))
        assert other.claim(run.id, q.id, "q") is None  # ...but it is alive on this host
        with store.session() as s:  # a holder on a host we cannot look at
            s.execute(update(Trajectory).values(worker="elsewhere:123:abc"))
        took = other.claim(run.id, q.id, "q")
        assert took is not None and took.trajectory_id == held.trajectory_id
        with pytest.raises(ClaimLost):  # the old holder can no longer write to it
            store.add_step(held.trajectory_id, Step("decide", "p", [Sample("Terminate(thoughts='x')", 3, -1.0, action=Terminate("x"))], 0))
        assert count(store, StepRow) == 0
    finally:
        other.close()


def _claim_write_and_die(url: str, run_id: int, question_id: int) -> None:
    s = Store(url)
    c = s.claim(run_id, question_id, "Who founded Acme?")
    from store.records import Sample, Step, Terminate

    s.add_step(c.trajectory_id, Step("decide", "p", [Sample("Terminate(thoughts='x')", 3, -1.0,
                                                             action=Terminate("x"))], 0))
    os._exit(0)  # gone without finishing: the claim and its step stay behind


def _dead_claim(store, db_url):
    store.import_questions("s", [{"question": "Who founded Acme?"}])
    (q,) = store.questions("s")
    run = store.get_or_create_run("collect-1", "collect")
    p = SPAWN.Process(target=_claim_write_and_die, args=(db_url, run.id, q.id))
    p.start()
    p.join(60)
    (left,) = store.trajectories(run_id=run.id)
    assert left.status == "running" and f":{p.pid}:" in left.worker
    assert count(store, StepRow) == 1
    return run, q, left


def test_claim_of_a_dead_process_is_resumed_with_its_steps(store, db_url):
    run, q, left = _dead_claim(store, db_url)
    took = store.claim(run.id, q.id, "Who founded Acme?")  # same model (None) as the dead one
    assert took is not None and took.trajectory_id == left.id and took.resumed
    assert count(store, StepRow) == 1 and count(store, StepSample) == 1
    assert store.claim(run.id, q.id, "Who founded Acme?") is None  # now held by a live worker


def test_claim_of_a_dead_process_with_another_model_starts_afresh(store, db_url):
    run, q, left = _dead_claim(store, db_url)
    took = store.claim(run.id, q.id, "Who founded Acme?", model="another-model")
    assert took is not None and took.trajectory_id == left.id and not took.resumed
    assert count(store, StepRow) == 0 and count(store, StepSample) == 0
    assert count(store, LLMCall) == 0


# --- crashes ----------------------------------------------------------------------------


def _write_step_then_wait(url: str, trajectory_id: int, written) -> None:
    s = Store(url)
    with s.session() as sess:
        sess.add(StepRow(trajectory_id=trajectory_id, idx=5, kind="decide", prompt="in flight"))
        sess.flush()  # the row is in the database's transaction, not committed
        written.set()
        signal.pause()  # SIGKILLed here, before the commit


def test_a_process_killed_mid_transaction_leaves_no_rows(store, db_url):
    ids = write_trajectory(store, finish=False)
    written = SPAWN.Event()
    p = SPAWN.Process(target=_write_step_then_wait, args=(db_url, ids["trajectory_id"], written))
    p.start()
    assert written.wait(60)
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)

    assert [st.idx for st in store.trajectory(ids["trajectory_id"]).steps] == [0, 1]
    # The killed writer's lock is gone: the next step is written at once.
    from store.records import Sample, Step

    store.add_step(ids["trajectory_id"], Step("decide", "next", [Sample("x", parse_error="bad")], None, index=2))
    assert [st.idx for st in store.trajectory(ids["trajectory_id"]).steps] == [0, 1, 2]


def test_an_error_inside_add_step_writes_nothing_of_that_step(store):
    from store.records import Completion, Generation, SearchCall, Sample, Search, Step

    ids = write_trajectory(store, finish=False)
    before = {m: count(store, m) for m in (StepRow, StepSample, LLMCall, SearchCallRow)}

    def searches():
        yield SearchCall("first", "bm25")
        raise RuntimeError("search backend crashed")

    step = Step("decide", "p", [Sample("Search(...)", 3, -1.0, action=Search("q", "t"))], 0, index=2)
    with pytest.raises(RuntimeError, match="crashed"):
        store.add_step(ids["trajectory_id"], step, Generation("p", [Completion("Search(...)", 3)]),
                       searches=searches())
    assert {m: count(store, m) for m in before} == before


# --- concurrency ------------------------------------------------------------------------


def _collect_all(url: str, run_id: int, start, out) -> None:
    """A collector: claim every question it can, write two steps each, finish it."""
    from store.records import (
        Completion,
        Generation,
        Answer,
        Sample,
        Search,
        SearchCall,
        SearchResult,
        Step,
    )

    s = Store(url)
    start.wait(60)
    done = []
    for q in s.questions("many"):
        c = s.claim(run_id, q.id, q.text)
        if c is None:
            continue
        for i, kind in enumerate(("decide", "answer")):
            action = Search(q.text, "t") if kind == "decide" else Answer("t", f"answer {q.ext_id}")
            step = Step(kind, f"{kind} prompt {q.ext_id}", [Sample("out", 2, -1.0, action=action),
                                                            Sample("bad", 2, -3.0, parse_error="x")], 0, index=i)
            calls = [SearchCall(q.text, "bm25", [SearchResult(1, "t", "u", "s")])] if kind == "decide" else []
            s.add_step(c.trajectory_id, step, Generation(step.prompt, [Completion("out", 2)], model="m"),
                       searches=calls)
        s.finish_trajectory(c.trajectory_id, "finished", final_answer=f"answer {q.ext_id}")
        done.append(q.id)
    out.put(done)
    s.close()


@pytest.mark.slow
def test_two_processes_collect_into_one_database_without_loss(store, db_url):
    n = 40
    store.import_questions("many", [{"id": str(i), "question": f"question {i}"} for i in range(n)])
    run = store.get_or_create_run("collect-many", "collect")
    start, out = SPAWN.Event(), SPAWN.Queue()
    procs = [SPAWN.Process(target=_collect_all, args=(db_url, run.id, start, out)) for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    done = [out.get(timeout=HANG_S) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0

    assert sorted(done[0] + done[1]) == sorted(q.id for q in store.questions("many"))  # each once
    assert count(store, Trajectory) == n
    assert len(store.trajectories(run_id=run.id, status="finished")) == n
    assert count(store, StepRow) == 2 * n and count(store, StepSample) == 4 * n
    assert count(store, LLMCall) == 2 * n and count(store, SearchCallRow) == n
