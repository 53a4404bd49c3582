"""Kill anywhere, resume: `collect` and `improve` SIGKILLed at random moments, then re-run.

Each test runs the real CLI in a child process over a real SQLite file and kills it with
SIGKILL — no cleanup handlers, no atexit, exactly what a power cut or the OOM killer does.
The kill moments are random but seeded, so a failure reproduces:

- collect: the parent polls the database and kills the child once a seeded number of new
  trajectories has been claimed (plus a seeded few milliseconds), so kills land while
  trajectories are half-written, steps in flight and claims held.
- improve: the child is the CLI with one stage of the loop wrapped (tests/kill_improve.py)
  so that it kills itself a seeded delay after entering that stage, for every stage of
  every iteration: grow, rank, build, train, evaluate, promote (and the baseline
  evaluation).

After every kill the store is audited (no orphans, duplicates, half-written finished
trajectories or broken lineage; nothing finished before the kill is lost), and the same
command is run again; the last run goes to completion and the full result is checked.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import pytest

from tests.harness import (
    audit,
    cli_env,
    duplicates,
    finished_keys,
    query,
    run_until,
    snapshot,
    sqlite_count,
)

SEED = 2312
KILLING_CLI = [sys.executable, str(Path(__file__).with_name("kill_improve.py"))]


def _trial(db: Path, args, env, logs, tag, **kill) -> tuple:
    """One run (maybe killed), then an audit: (outcome, problems, rows lost)."""
    before = snapshot(db)
    out = run_until(args, env, logs, tag, **kill)
    if not out.killed:
        assert out.returncode == 0, f"{tag} failed:\n{out.stderr[-2000:]}"
    problems = audit(db, complete=not out.killed)
    lost = before.lost_in(snapshot(db))
    return out, problems, lost


def test_collect_killed_repeatedly_finishes_every_trajectory_once(tmp_path):
    rng = random.Random(SEED)
    db = tmp_path / "collect.db"
    run = "kill-collect"
    questions, per_question = 20, 2
    args = ["--db", str(db), "collect", "--world", "pocket", "--model", "scripted:pocket:0.3",
            "--split", "train", "--limit", str(questions), "--per-question", str(per_question),
            "--samples", "2", "--concurrency", "3", "--run", run]
    env = cli_env(tmp_path)
    count_sql = "SELECT COUNT(*) FROM trajectories"
    trials = killed = lost_rows = dups = in_flight = 0
    t0 = time.perf_counter()
    for trial in range(9):
        target = sqlite_count(db, count_sql) + rng.randint(1, 5)
        out, problems, lost = _trial(
            db, args, env, tmp_path / "logs", f"collect-{trial}",
            kill_when=lambda: sqlite_count(db, count_sql) >= target,
            extra_delay=rng.uniform(0, 0.03))
        assert not problems, f"trial {trial}: {problems}"
        assert not lost, f"trial {trial} lost {lost}"
        trials += 1
        if not out.killed:
            break  # the whole set finished before the kill: nothing left to interrupt
        killed += 1
        in_flight += sqlite_count(db, "SELECT COUNT(*) FROM trajectories WHERE status = 'running'")
    assert killed >= 6, f"only {killed} of {trials} runs were killed mid-collection"

    final, problems, lost = _trial(db, args, env, tmp_path / "logs", "collect-final")
    assert final.returncode == 0 and not final.killed
    assert not problems and not lost
    keys = finished_keys(db, run)
    qids = {r[0] for r in query(db, "SELECT t.question_id FROM trajectories t")}
    assert len(qids) == questions
    assert sorted(keys) == sorted((q, i) for q in qids for i in range(per_question))
    assert query(db, "SELECT COUNT(*) FROM trajectories WHERE status = 'running'") == [(0,)]
    dups += len(keys) - len(set(keys)) + duplicates(problems)
    print(f"\n[kill/collect] trials {killed} killed of {trials + 1} runs, resumed {killed}, "
          f"in-flight trajectories taken over {in_flight}, rows lost {lost_rows}, duplicates {dups}, "
          f"{time.perf_counter() - t0:.1f} s")


# --- improve ----------------------------------------------------------------------------

# Seconds after entering a stage within which the kill falls (a stage shorter than its
# delay is killed in a later one, which is fine: the audit says which stage was hit).
# Sized to the small run below: training (~1.5 s) and evaluation (~3 s) outlast their
# seeded delays (0.94 s and 0.54 s), so iteration 2's kills land inside those stages too.
STAGE_DELAY = {"grow": 0.1, "rank": 0.04, "build": 0.01, "train": 2.0, "evaluate": 1.0,
               "promote": 0.0}


def _kill_plan(rng: random.Random) -> list[tuple[str, int, float]]:
    """Iteration 1: a kill on entering each stage (so every stage is surely hit);
    iteration 2: a kill at a seeded random moment within (or after) each stage."""
    # The baseline evaluation, on entering it: with a delay it may finish first and the kill
    # would land in iteration 1, ahead of the per-stage kills below.
    plan = [("evaluate", 0, 0.0)]
    plan += [(stage, 1, 0.0) for stage in STAGE_DELAY]
    plan += [(stage, 2, round(rng.uniform(0, top), 3)) for stage, top in STAGE_DELAY.items()]
    return plan


def _stage_reached(db: Path, name: str) -> str:
    """Where an improve run stands: the first stage not yet marked done, as STAGE:IT."""
    rows = query(db, "SELECT state FROM runs WHERE name = :n", n=name)
    state = json.loads(rows[0][0]) if rows and isinstance(rows[0][0], str) else (rows[0][0] if rows else {})
    if "done" not in (state or {}).get("it0", {}):
        return "evaluate:0"
    for it in (1, 2):
        marks = state.get(f"it{it}", {})
        if "done" in marks:
            continue
        for stage in ("grow", "rank", "build", "train", "evaluate", "promote"):
            if stage not in marks:
                return f"{stage}:{it}"
    return "done"


GROW_QUESTIONS, EVAL_QUESTIONS = 2, 2


@pytest.mark.slow
def test_improve_killed_in_every_stage_resumes_to_the_same_end(tmp_path):
    from tests.tiny import build_tiny_model

    rng = random.Random(SEED)
    # The smallest Llama that still trains and generates: the test is about the loop's
    # bookkeeping under SIGKILL, and each of its 14 runs pays the CLI's start-up anyway.
    tiny = build_tiny_model(tmp_path / "tiny", hidden=32, layers=1)
    db, workdir, name = tmp_path / "improve.db", tmp_path / "work", "kill-improve"
    args = ["--db", str(db), "improve", "--world", "pocket", "--model", str(tiny),
            "--teacher", "scripted:pocket:0.3", "--iterations", "2",
            "--grow-questions", str(GROW_QUESTIONS), "--eval-questions", str(EVAL_QUESTIONS),
            "--samples", "2", "--concurrency", "2",
            "--max-searches", "4", "--workdir", str(workdir), "--name", name]
    t0 = time.perf_counter()
    hit, trials = [], 0
    for stage, it, delay in _kill_plan(rng):
        out, problems, lost = _trial(db, args, cli_env(tmp_path), tmp_path / "logs",
                                     f"improve-{stage}-{it}",
                                     command=KILLING_CLI + [f"{stage}:{it}:{delay}"])
        assert out.killed, f"{stage}:{it}:{delay} was never reached:\n{out.stdout[-1500:]}"
        assert not problems, f"after a kill in {stage}:{it}: {problems}"
        assert not lost, f"a kill in {stage}:{it} lost {lost}"
        trials += 1
        hit.append(_stage_reached(db, name))
    # Every stage of the loop was interrupted at least once (iteration 1 on entering each).
    assert hit[1:7] == [f"{stage}:1" for stage in STAGE_DELAY], hit

    final, problems, lost = _trial(db, args, cli_env(tmp_path), tmp_path / "logs", "improve-final")
    assert final.returncode == 0 and not problems and not lost, (problems, lost, final.stderr[-2000:])
    _check_improve_result(db, workdir, name, final.stdout)
    print(f"\n[kill/improve] trials {trials}, resumed {trials}, stages hit {hit}, rows lost 0, "
          f"duplicates 0, {time.perf_counter() - t0:.1f} s")


def _check_improve_result(db: Path, workdir: Path, name: str, stdout: str) -> None:
    # Every iteration is in the final table: baseline 0, then 1 and 2.
    table = [line for line in stdout.splitlines() if line.startswith("│")]
    assert [line.split("│")[1].strip() for line in table] == ["0", "1", "2"], stdout[-1500:]
    # Grow: exactly one finished trajectory per question (per_question 1) in each grow run.
    for it in (1, 2):
        keys = finished_keys(db, f"{name}:grow:{it}")
        assert len(keys) == len(set(keys)) == GROW_QUESTIONS
    for it in (0, 1, 2):  # evaluation: each held-out question scored once
        evals = query(db, """SELECT e.question_id FROM evaluations e JOIN runs r ON r.id = e.run_id
                             WHERE r.name = :n""", n=f"{name}:eval:{it}")
        assert len(evals) == len(set(evals)) == EVAL_QUESTIONS
    # Model versions: one per iteration, each parent existing, lineage = that build's examples.
    mvs = {n: (i, p, json.loads(s) if isinstance(s, str) else s) for i, n, p, s in query(
        db, "SELECT id, name, parent_id, step_ids FROM model_versions")}
    assert sorted(mvs) == [f"{name}:it{i}" for i in (0, 1, 2)]
    ids = {v[0] for v in mvs.values()}
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    for it in (1, 2):
        mv_id, parent, step_ids = mvs[f"{name}:it{it}"]
        assert parent in ids
        lines = (workdir / slug / f"it{it}" / "examples.jsonl").read_text().splitlines()
        ex_ids = [json.loads(x)["step_id"] for x in lines]
        assert len(ex_ids) == len(set(ex_ids)) > 0, f"duplicated training examples in it{it}"
        # the teacher's bare prompts are trained as the student is fed them (chat template)
        assert all(json.loads(line)["prompt"].startswith("<|begin_of_text|><|start_header_id|>user")
                   for line in lines)
        assert sorted(step_ids) == sorted(ex_ids)
        assert (workdir / slug / f"it{it}" / "adapter" / "adapter_config.json").is_file()
        assert not (workdir / slug / f"it{it}" / "adapter.partial").exists()
