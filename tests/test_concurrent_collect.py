"""Concurrent writers: three `collect` processes started at once on one question set and one
run name split the work — every (question, sample index) finished exactly once, none lost.

Run against a fresh SQLite file (WAL) and against PostgreSQL (RESTREACT_TEST_PG; skipped
without it). The three children race from the very start: creating the schema, importing
the question set, creating the run, then claiming trajectories.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from tests.harness import CLI, HANG_S, audit, cli_env, finished_keys, query

WORKERS = 3
QUESTIONS, PER_QUESTION = 20, 2


def _collect_at_once(db: str, tmp_path, question_file=None) -> list[subprocess.CompletedProcess]:
    src = ["--questions", str(question_file)] if question_file else ["--world", "pocket", "--split", "train"]
    args = ["--db", db, "collect", *src, "--model", "scripted:pocket:0.3",
            "--limit", str(QUESTIONS), "--per-question", str(PER_QUESTION), "--samples", "2",
            "--concurrency", "3", "--run", "shared-run"]
    env = cli_env(tmp_path)
    procs = [subprocess.Popen(CLI + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(WORKERS)]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=HANG_S)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def _check(db: str, results: list[subprocess.CompletedProcess], tmp_path) -> dict:
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
    problems = audit(db, complete=True)
    assert not problems, problems
    keys = finished_keys(db, "shared-run")
    qids = {q for q, _ in keys}
    assert len(qids) == QUESTIONS
    # exactly once each: no duplicate, nothing lost
    assert sorted(keys) == sorted((q, i) for q in qids for i in range(PER_QUESTION))
    # The processes' own reports add up: no trajectory was run (and counted) twice.
    counts = []
    for r in results:
        m = re.search(r"(\d+) finished, (\d+) failed", r.stdout.replace("\n", " "))
        assert m, r.stdout[-800:]
        counts.append(int(m[1]) + int(m[2]))
    assert sum(counts) == QUESTIONS * PER_QUESTION, counts
    assert sum(1 for c in counts if c) >= 2, f"the work was not shared: {counts}"
    assert query(db, "SELECT COUNT(*) FROM runs WHERE name = 'shared-run'") == [(1,)]
    assert query(db, "SELECT COUNT(*) FROM question_sets") == [(1,)]
    # The pocket world they all built at once: one copy kept, no half-built leftovers.
    worlds = [d.name for d in (tmp_path / "cache" / "pocket").iterdir()]
    assert len(worlds) == 1 and ".tmp" not in worlds[0], worlds
    return {"per_process": counts}


def test_three_collectors_share_one_sqlite_run(tmp_path):
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    t0 = time.perf_counter()
    results = _collect_at_once(db, tmp_path)
    info = _check(db, results, tmp_path)
    assert query(db, "PRAGMA journal_mode") == [("wal",)]
    print(f"\n[concurrent/sqlite] trajectories per process {info['per_process']}, "
          f"{time.perf_counter() - t0:.1f} s")


@pytest.mark.postgres
def test_three_collectors_share_one_postgres_run(tmp_path, pg_url):
    t0 = time.perf_counter()
    results = _collect_at_once(pg_url, tmp_path)
    info = _check(pg_url, results, tmp_path)
    print(f"\n[concurrent/postgres] trajectories per process {info['per_process']}, "
          f"{time.perf_counter() - t0:.1f} s")
