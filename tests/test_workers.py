"""Data-parallel Grow: `collect --workers 2` and `improve --workers 2` through the real CLI.

The workers are real processes (`python -m agent.workers`) claiming items of one run from
one real database — a SQLite file (WAL), and PostgreSQL when RESTREACT_TEST_PG is set. The
model is the pocket world's scripted reader (a program, which is all this plumbing needs);
the improve test trains and evaluates a real tiny Llama. Checked: every (question, sample)
finished exactly once, both workers did part of it, a failing worker fails the command
with one line, and a re-run without workers resumes the same run.

One GPU per worker (CUDA_VISIBLE_DEVICES) is only checked as the environment each worker
gets: no machine with several GPUs was available (docs/SCALING.md).
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from tests.harness import audit, cli_env, finished_keys, query, run_cli

QUESTIONS, PER_QUESTION = 20, 2


def collect_args(db: str, *extra: str) -> list[str]:
    return ["--db", db, "collect", "--world", "pocket", "--split", "train",
            "--model", "scripted:pocket:0.3", "--limit", str(QUESTIONS),
            "--per-question", str(PER_QUESTION), "--samples", "2", "--concurrency", "3", *extra]


def check_shared_run(db: str, stdout: str) -> dict:
    """Every (question, sample) once, nothing broken, and both workers took a share."""
    problems = audit(db, complete=True)
    assert not problems, problems
    (run,) = query(db, "SELECT name FROM runs WHERE kind = 'collect'")
    keys = finished_keys(db, run[0])
    qids = {q for q, _ in keys}
    assert len(qids) == QUESTIONS
    assert sorted(keys) == sorted((q, i) for q in qids for i in range(PER_QUESTION))
    per_worker = Counter(w for (w,) in query(db, "SELECT worker FROM trajectories"))
    assert len(per_worker) == 2 and all(per_worker.values()), per_worker
    # Two processes, not one process under two names: the workers' pids differ.
    assert len({w.split(":")[1] for w in per_worker}) == 2
    m = re.search(r"(\d+) finished, (\d+) failed, (\d+) skipped .* over 2 workers \(w0: (\d+), w1: (\d+)\)",
                  stdout.replace("\n", ""))
    assert m, stdout[-800:]
    finished, failed, skipped, w0, w1 = map(int, m.groups())
    assert finished + failed == w0 + w1 == QUESTIONS * PER_QUESTION and skipped == 0
    assert sorted([w0, w1]) == sorted(per_worker.values())
    return {"run": run[0], "per_worker": [w0, w1]}


def _two_workers(db: str, tmp_path) -> None:
    env = cli_env(tmp_path)
    r = run_cli(collect_args(db, "--workers", "2"), env)
    assert r.returncode == 0, r.stderr[-2000:]
    info = check_shared_run(db, r.stdout)
    # The same command without --workers names the same run and finds nothing left to do.
    again = run_cli(collect_args(db), env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{QUESTIONS * PER_QUESTION} skipped (already done)" in again.stdout.replace("\n", "")
    assert query(db, "SELECT COUNT(*) FROM trajectories") == [(QUESTIONS * PER_QUESTION,)]
    print(f"\n[workers] trajectories per worker {info['per_worker']}")


def test_two_workers_share_one_sqlite_run(tmp_path):
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    _two_workers(db, tmp_path)
    assert query(db, "PRAGMA journal_mode") == [("wal",)]


@pytest.mark.postgres
def test_two_workers_share_one_postgres_run(tmp_path, pg_url):
    _two_workers(pg_url, tmp_path)


def test_a_failing_worker_fails_the_command(tmp_path):
    """Workers that cannot load their model: non-zero exit, one line naming the cause."""
    db = f"sqlite:///{tmp_path / 's.db'}"
    args = collect_args(db, "--workers", "2")
    args[args.index("scripted:pocket:0.3")] = f"scripted:{tmp_path / 'no-world'}:0.3"
    r = run_cli(args, cli_env(tmp_path))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 2 of 2 workers failed; worker 0"), r.stderr
    assert "no-world" in lines[0] and "re-run" in lines[0]
    assert query(db, "SELECT COUNT(*) FROM trajectories") == [(0,)]


def test_record_cannot_be_shared_and_writes_nothing(tmp_path):
    db = tmp_path / "s.db"
    r = run_cli(collect_args(str(db), "--workers", "2", "--record", str(tmp_path / "c.jsonl")),
                cli_env(tmp_path))
    assert r.returncode == 1 and r.stderr.startswith("error: --record"), r.stderr
    assert not (tmp_path / "c.jsonl").exists()
    if db.exists():  # opening the store may create the schema; nothing more
        assert query(db, "SELECT COUNT(*) FROM runs") == query(db, "SELECT COUNT(*) FROM questions") == [(0,)]
    bad = run_cli(collect_args(str(db), "--workers", "0"), cli_env(tmp_path))
    assert bad.returncode == 1 and "--workers must be at least 1" in bad.stderr


# --- pieces -----------------------------------------------------------------------------


def test_each_worker_gets_its_own_gpu(monkeypatch):
    from agent.workers import gpu_slots, worker_env

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpu_slots(2) == ["2", "3"]
    assert gpu_slots(3) == ["2", "3", "2"]  # more workers than GPUs: they share, round-robin
    env = worker_env(1, "3", 2, "sqlite:///x.db")
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["RESTREACT_WORKER_INDEX"] == "1"
    assert env["RESTREACT_DB"] == "sqlite:///x.db"
    monkeypatch.setenv("RESTREACT_OPENAI_BASE_URLS", "http://127.0.0.1:8000/v1, http://127.0.0.1:8001/v1")
    assert [worker_env(i, None, 3, "x")["OPENAI_BASE_URL"] for i in range(3)] == [
        "http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1", "http://127.0.0.1:8000/v1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_slots(2) == [None, None]
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpu = worker_env(0, None, 2, "sqlite:///x.db")
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and int(cpu["OMP_NUM_THREADS"]) >= 1


def test_work_order_round_trip_and_shares(tmp_path):
    from agent.collect import Item
    from agent.setup import AgentOptions
    from agent.state import AgentConfig
    from agent.workers import WorkOrder

    items = [Item(q, f"question {q}?", i) for q in range(1, 6) for i in range(2)]
    opts = AgentOptions(model="scripted:pocket", adapter="a", search="corpus", corpus="c.jsonl",
                        config=AgentConfig(samples=3, greedy=False))
    order = WorkOrder.make(7, items, opts, workers=3, concurrency=2, model="m", model_version_id=4)
    back = WorkOrder.load(order.save(tmp_path / "o.json"))
    assert back == order and back.agent_options() == opts
    shares = [back.share(i) for i in range(3)]
    assert all(sorted(s, key=lambda it: (it.question_id, it.index)) == items for s in shares)
    assert [s[0] for s in shares] == [items[0], items[3], items[6]]  # start far apart
    assert "sqlite" not in (tmp_path / "o.json").read_text()  # the DB URL travels in the env


# --- improve --------------------------------------------------------------------------------


@pytest.mark.slow
def test_improve_grows_and_evaluates_in_workers_and_trains_on_two_processes(tmp_path):
    """One iteration: baseline eval, grow (teacher) and eval each over 2 workers; training on
    2 gloo processes; every stage's items once, the adapter saved once."""
    from tests.tiny import build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny")
    db, name = tmp_path / "improve.db", "wi"
    args = ["--db", str(db), "improve", "--world", "pocket", "--model", str(tiny),
            "--teacher", "scripted:pocket:0.3", "--iterations", "1", "--grow-questions", "4",
            "--eval-questions", "1", "--samples", "2", "--concurrency", "2", "--max-searches", "4",
            "--workdir", str(tmp_path / "work"), "--name", name, "--workers", "2",
            "--train-processes", "2"]
    r = run_cli(args, cli_env(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    assert not audit(db, complete=True)
    grow = finished_keys(db, f"{name}:grow:1")
    assert len(grow) == len(set(grow)) == 4
    # Baseline eval, grow, eval: three fan-outs over 2 workers each. With this few items one
    # worker may take them all before the other has loaded its model (the collect tests
    # above show the sharing); here each stage ran in worker processes, never the parent.
    fan_outs = re.findall(r"workers: (\d+) finished, (\d+) failed, \d+ skipped .*? over 2 workers",
                          r.stdout.replace("\n", ""))
    assert [int(a) + int(b) for a, b in fan_outs] == [1, 4, 1], r.stdout[-1500:]
    for run in (f"{name}:grow:1", f"{name}:eval:0", f"{name}:eval:1"):
        workers = query(db, """SELECT DISTINCT t.worker FROM trajectories t
                               JOIN runs r ON r.id = t.run_id WHERE r.name = :n""", n=run)
        assert 1 <= len(workers) <= 2, (run, workers)
    for it in (0, 1):  # each held-out question scored once, by the parent
        evals = query(db, """SELECT e.question_id FROM evaluations e JOIN runs r ON r.id = e.run_id
                             WHERE r.name = :n""", n=f"{name}:eval:{it}")
        assert len(evals) == len(set(evals)) == 1
    import json

    (metrics,) = query(db, "SELECT metrics FROM model_versions WHERE name = :n", n=f"{name}:it1")
    train = (json.loads(metrics[0]) if isinstance(metrics[0], str) else metrics[0])["train"]
    assert train["processes"] == 2 and train["steps"] >= 1
    adapter = tmp_path / "work" / name / "it1" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter.parent / "adapter.partial").exists()
