"""`improve --trajectories clean`: only trajectories whose every taken step the judge passes train.

A real run through the CLI: a real SQLite store, the rule judge, a tiny Llama trained with
LoRA. The grower is the scripted pocket policy with a 50 % mistake rate, so some of its
trajectories take a step the rule judge marks bad and some do not: the filter has both
kinds to tell apart.
"""

from __future__ import annotations

import json

from tests.harness import cli_env, query, run_cli


def _taken_steps_judged(db, run_name: str) -> dict[int, bool]:
    """Trajectory id -> whether every step's taken sample is ranked and not marked bad."""
    rows = query(db, """SELECT s.trajectory_id, s.chosen_index, r.status, r.bad
                        FROM steps s JOIN trajectories t ON t.id = s.trajectory_id
                        JOIN runs u ON u.id = t.run_id
                        LEFT JOIN rankings r ON r.step_id = s.id
                        WHERE u.name = :n AND t.status = 'finished'""", n=run_name)
    clean: dict[int, bool] = {}
    for tid, chosen, status, bad in rows:
        bad = json.loads(bad) if isinstance(bad, str) else (bad or [])
        ok = status == "ok" and chosen is not None and chosen not in bad
        clean[tid] = clean.get(tid, True) and ok
    return clean


def test_clean_run_trains_only_on_steps_of_trajectories_the_judge_passes(tmp_path):
    from tests.tiny import build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny", hidden=32, layers=1)
    db, workdir, name = tmp_path / "clean.db", tmp_path / "work", "clean-run"
    r = run_cli(["--db", str(db), "improve", "--world", "pocket", "--model", str(tiny),
                 "--teacher", "scripted:pocket:0.5", "--iterations", "1", "--trajectories", "clean",
                 "--grow-questions", "12", "--eval-questions", "2", "--samples", "2",
                 "--concurrency", "4", "--max-searches", "4", "--workdir", str(workdir),
                 "--name", name], cli_env(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "training examples from clean trajectories" in r.stdout

    judged = _taken_steps_judged(db, f"{name}:grow:1")
    assert len(judged) == 12
    clean = {tid for tid, ok in judged.items() if ok}
    assert clean and len(clean) < len(judged), judged  # both kinds were grown

    lines = (workdir / name / "it1" / "examples.jsonl").read_text().splitlines()
    step_ids = [json.loads(line)["step_id"] for line in lines]
    owners = dict(query(db, "SELECT id, trajectory_id FROM steps"))
    assert step_ids and {owners[s] for s in step_ids} <= clean
    # every clean trajectory contributes: the filter drops trajectories, not steps of them
    assert {owners[s] for s in step_ids} == clean
