"""Crash and concurrency test helpers: run the real CLI as a subprocess, kill it, audit the store.

The reliability tests (tests/test_kill_resume.py, test_concurrent_collect.py,
test_bad_input.py) drive `cli.py` exactly as a user would, in a child process, and then
read the database the child left behind with plain SQL. Nothing here knows how the
agent works inside: the checks are about the rows — every (run, question, sample index)
finished exactly once, no half-written trajectory, no orphan, no duplicate, no lineage
pointing at nothing, and nothing that was finished before a crash gone after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, str(REPO / "cli.py")]
# How long a child process may run before a test calls it hung. Only a guard: what a test
# waits for is a point in the work (rows in the store, a process's exit), never a duration,
# so a machine loaded by other jobs makes the suite slower, not red.
HANG_S = float(os.environ.get("RESTREACT_TEST_HANG_S", 1800))
TABLES = ("question_sets", "questions", "runs", "trajectories", "steps", "step_samples",
          "search_calls", "llm_calls", "rankings", "model_versions", "evaluations")


def cli_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment a CLI child gets: offline, quiet, its own pocket-world cache."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", TQDM_DISABLE="1",
               PYTHONUNBUFFERED="1", RESTREACT_CACHE=str(tmp / "cache"), COLUMNS="120")
    env.pop("RESTREACT_DB", None)  # every command here names its --db
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict, timeout: float = HANG_S, cwd: Path | None = None
            ) -> subprocess.CompletedProcess:
    """Run `cli.py ARGS` to the end; returns the completed process (text output)."""
    return subprocess.run(CLI + args, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@dataclass
class Outcome:
    returncode: int
    killed: bool  # True when it was SIGKILLed (by us or by itself)
    stdout: str
    stderr: str
    seconds: float


def run_until(args: list[str], env: dict, log_dir: Path, tag: str,
              kill_when: Callable[[], bool] | None = None, extra_delay: float = 0.0,
              poll_s: float = 0.01, timeout: float = HANG_S, command: list[str] = CLI) -> Outcome:
    """Run `cli.py ARGS` (or `command` ARGS); if `kill_when()` turns true first, SIGKILL it
    (after `extra_delay`).

    Output goes to files (a pipe nobody reads could block the child). The child is
    always reaped before returning: a zombie still answers kill(pid, 0), and the store's
    take-over of a dead collector's claims looks exactly at that.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{tag}.out", log_dir / f"{tag}.err"
    t0 = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(command + args, env=env, stdout=out, stderr=err)
        killed = False
        try:
            while proc.poll() is None:
                if time.perf_counter() - t0 > timeout:
                    raise TimeoutError(f"{tag}: still running after {timeout} s")
                if kill_when is not None and kill_when():
                    if extra_delay:
                        time.sleep(extra_delay)
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGKILL)
                        killed = True
                    break
                time.sleep(poll_s)
        finally:
            if proc.poll() is None and not killed:
                proc.kill()
            proc.wait()
    rc = proc.returncode
    return Outcome(rc, killed or rc == -signal.SIGKILL, out_path.read_text(),
                   err_path.read_text(), time.perf_counter() - t0)


def signal_when(args: list[str], env: dict, log_dir: Path, tag: str, when: Callable[[], bool],
                sig: int = signal.SIGINT, timeout: float = HANG_S) -> Outcome:
    """Run `cli.py ARGS`, send `sig` once `when()` turns true, and wait for the child to end.

    `when` should watch the store (steps written, trajectories claimed), so the signal lands
    at a point in the work, not at a wall-clock moment a loaded machine may not have reached.
    The timeout only guards against a hung child: generous, it never decides the outcome.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{tag}.out", log_dir / f"{tag}.err"
    t0 = time.perf_counter()
    sent = False
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(CLI + args, env=env, stdout=out, stderr=err)
        try:
            while proc.poll() is None and not sent:
                if time.perf_counter() - t0 > timeout:
                    raise TimeoutError(f"{tag}: the signal's moment never came in {timeout} s")
                if when():
                    proc.send_signal(sig)
                    sent = True
                time.sleep(0.02)
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return Outcome(proc.returncode, sent, out_path.read_text(), err_path.read_text(),
                   time.perf_counter() - t0)


# --- reading the store -----------------------------------------------------------------


def db_url(db: str | Path) -> str:
    db = str(db)
    return db if "://" in db else f"sqlite:///{Path(db).resolve()}"


def _engine(db):
    from sqlalchemy import create_engine

    url = db_url(db)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return create_engine(url)


def query(db, sql: str, **params) -> list[tuple]:
    from sqlalchemy import text

    engine = _engine(db)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def table_counts(db) -> dict[str, int]:
    """Rows per table ({} when the database has no schema yet)."""
    from sqlalchemy import inspect, text

    engine = _engine(db)
    try:
        with engine.connect() as conn:
            have = set(inspect(conn).get_table_names())
            return {t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar()
                    for t in TABLES if t in have}
    finally:
        engine.dispose()


def sqlite_count(path: Path, sql: str) -> int:
    """A cheap poll of a SQLite file another process is writing (0 until the schema exists)."""
    import sqlite3

    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.2)
        try:
            return int(conn.execute(sql).fetchone()[0] or 0)
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


# Each audit query returns the offending rows; an empty result means the invariant holds.
ALWAYS = {
    # one trajectory per (run, question, sample index), whatever its status
    "duplicate_trajectories": """SELECT run_id, question_id, sample_index, COUNT(*) FROM trajectories
        GROUP BY run_id, question_id, sample_index HAVING COUNT(*) > 1""",
    "steps_without_samples": """SELECT s.id FROM steps s
        WHERE NOT EXISTS (SELECT 1 FROM step_samples x WHERE x.step_id = s.id)""",
    "orphan_steps": """SELECT s.id FROM steps s
        WHERE NOT EXISTS (SELECT 1 FROM trajectories t WHERE t.id = s.trajectory_id)""",
    "orphan_samples": """SELECT x.id FROM step_samples x
        WHERE NOT EXISTS (SELECT 1 FROM steps s WHERE s.id = x.step_id)""",
    "orphan_llm_calls": """SELECT c.id FROM llm_calls c
        WHERE (c.trajectory_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM trajectories t WHERE t.id = c.trajectory_id))
           OR (c.step_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.id = c.step_id))""",
    "orphan_searches": """SELECT c.id FROM search_calls c
        WHERE (c.trajectory_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM trajectories t WHERE t.id = c.trajectory_id))
           OR (c.step_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.id = c.step_id))""",
    "orphan_rankings": """SELECT r.id FROM rankings r
        WHERE NOT EXISTS (SELECT 1 FROM steps s WHERE s.id = r.step_id)""",
    "duplicate_rankings": """SELECT step_id, judge, prompt_version, COUNT(*) FROM rankings
        GROUP BY step_id, judge, prompt_version HAVING COUNT(*) > 1""",
    "duplicate_evaluations": """SELECT run_id, question_id, run_index, COUNT(*) FROM evaluations
        GROUP BY run_id, question_id, run_index HAVING COUNT(*) > 1""",
    # a step's LLM call is written with it: one each, never two
    "duplicate_step_calls": """SELECT step_id, COUNT(*) FROM llm_calls WHERE step_id IS NOT NULL
        AND purpose <> 'rank' GROUP BY step_id HAVING COUNT(*) > 1""",
    # a finished trajectory is whole: steps 0..n-1 without a gap, ending in the grounding check
    "gappy_trajectories": """SELECT t.id FROM trajectories t JOIN steps s ON s.trajectory_id = t.id
        WHERE t.status = 'finished' GROUP BY t.id HAVING MAX(s.idx) + 1 <> COUNT(*)""",
    "finished_without_grounding": """SELECT t.id FROM trajectories t WHERE t.status = 'finished'
        AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.trajectory_id = t.id AND s.kind = 'grounding'
                        AND s.chosen_index IS NOT NULL)""",
    "finished_without_answer": """SELECT t.id FROM trajectories t WHERE t.status = 'finished'
        AND t.final_answer IS NULL""",
    "orphan_evaluations": """SELECT e.id FROM evaluations e
        WHERE e.trajectory_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM trajectories t WHERE t.id = e.trajectory_id)""",
    "duplicate_model_versions": """SELECT run_id, iteration, COUNT(*) FROM model_versions
        WHERE run_id IS NOT NULL GROUP BY run_id, iteration HAVING COUNT(*) > 1""",
    "orphan_parents": """SELECT m.id FROM model_versions m WHERE m.parent_id IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM model_versions p WHERE p.id = m.parent_id)""",
}
AT_REST = {  # only once the command has run to completion
    "running_trajectories": "SELECT id FROM trajectories WHERE status = 'running'",
}


def audit(db, complete: bool) -> dict[str, list]:
    """Every broken invariant with its offending rows ({} when the store is sound).

    `complete`: the last command ran to its end, so nothing may still be 'running'.
    Also checks model-version lineage: each version's step_ids name existing steps.
    """
    problems: dict[str, list] = {}
    if not table_counts(db):
        return problems  # killed before the schema existed: nothing written, nothing broken
    for name, sql in {**ALWAYS, **(AT_REST if complete else {})}.items():
        rows = query(db, sql)
        if rows:
            problems[name] = rows
    steps = {r[0] for r in query(db, "SELECT id FROM steps")}
    for mv_id, step_ids in query(db, "SELECT id, step_ids FROM model_versions"):
        ids = json.loads(step_ids) if isinstance(step_ids, str) else (step_ids or [])
        missing = [i for i in ids if i not in steps]
        if missing:
            problems.setdefault("lineage_missing_steps", []).append((mv_id, missing[:5]))
        if len(ids) != len(set(ids)):
            problems.setdefault("lineage_duplicate_steps", []).append(mv_id)
    return problems


def duplicates(problems: dict[str, list]) -> int:
    return sum(len(v) for k, v in problems.items() if k.startswith("duplicate") or "_duplicate" in k)


@dataclass
class Snapshot:
    """What must survive any later crash: finished work, by identity and content."""

    trajectories: dict[int, tuple] = field(default_factory=dict)  # id -> (key, status, step ids)
    rankings: set[int] = field(default_factory=set)
    evaluations: set[int] = field(default_factory=set)
    model_versions: set[int] = field(default_factory=set)

    def lost_in(self, later: "Snapshot") -> list[str]:
        """Rows present here and gone or changed in `later` (must be empty)."""
        lost = [f"trajectory {i}" for i, v in self.trajectories.items()
                if later.trajectories.get(i) != v]
        lost += [f"ranking {i}" for i in self.rankings - later.rankings]
        lost += [f"evaluation {i}" for i in self.evaluations - later.evaluations]
        lost += [f"model version {i}" for i in self.model_versions - later.model_versions]
        return lost


def snapshot(db) -> Snapshot:
    snap = Snapshot()
    if not table_counts(db):
        return snap
    steps: dict[int, list[int]] = {}
    for sid, tid in query(db, "SELECT id, trajectory_id FROM steps ORDER BY idx"):
        steps.setdefault(tid, []).append(sid)
    for tid, run, qid, idx, status in query(
            db, "SELECT id, run_id, question_id, sample_index, status FROM trajectories "
                "WHERE status IN ('finished', 'failed')"):
        snap.trajectories[tid] = ((run, qid, idx), status, tuple(steps.get(tid, ())))
    snap.rankings = {r[0] for r in query(db, "SELECT id FROM rankings")}
    snap.evaluations = {r[0] for r in query(db, "SELECT id FROM evaluations")}
    snap.model_versions = {r[0] for r in query(db, "SELECT id FROM model_versions")}
    return snap


def finished_keys(db, run_name: str) -> list[tuple]:
    """(question_id, sample_index) of the run's finished-or-failed trajectories, with repeats."""
    return query(db, """SELECT t.question_id, t.sample_index FROM trajectories t
        JOIN runs r ON r.id = t.run_id
        WHERE r.name = :name AND t.status IN ('finished', 'failed')""", name=run_name)


def all_at_once(call: Callable, items: list) -> list:
    """`call(item)` for every item, each from its own thread, all released at the same instant
    (so a batching backend sees them together); results in item order, errors re-raised."""
    import threading

    results, errors = [None] * len(items), []
    barrier = threading.Barrier(len(items))

    def run(i):
        barrier.wait()
        try:
            results[i] = call(items[i])
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results
