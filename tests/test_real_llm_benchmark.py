"""The real-LLM benchmark's teacher score: the warm start's scripted teacher on the test world."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def test_teacher_only_scores_the_recorded_teacher_on_the_test_world(tmp_path):
    from benchmarks.real_llm_improve import main

    out = tmp_path / "teacher.json"
    result = main(["--teacher-only", "--seeds", "2001,2002", "--test", "6", "--eval-runs", "2",
                   "--db", str(tmp_path / "t.db"), "--workdir", str(tmp_path), "--name", "t",
                   "--out", str(out)])
    record = json.loads((ROOT / "data" / "pocket" / "smollm2" / "warmstart.json").read_text())
    teacher = result["teacher"]
    assert str(record["config"]["error_rate"]) in teacher["teacher"]  # the distillation's teacher
    assert len(teacher["runs"]) == 2 and 0 <= teacher["test_mean"] <= 1
    assert json.loads(out.read_text())["worlds"] == {"grow_and_dev_seed": 2001, "test_seed": 2002}
    con = sqlite3.connect(tmp_path / "t.db")
    rows = con.execute("select r.name, t.question_id, t.final_answer from trajectories t "
                       "join runs r on r.id = t.run_id where t.status = 'finished'").fetchall()
    assert len(rows) == 12  # 6 test questions, once per teacher seed
    by_seed = {}
    for name, qid, answer in rows:
        by_seed.setdefault(name, {})[qid] = answer
    first, second = by_seed.values()
    assert first.keys() == second.keys() and first != second  # the seeds are two samples
