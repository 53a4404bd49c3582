"""benchmarks/gpu_perf.py on its tiny CPU size: the trainer parts run, and the project's
train() and the raw baseline loop really train on the same token-budget batches (the
comparison in docs/BENCHMARKS.md section 3 rests on that)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.harness import HANG_S

ROOT = Path(__file__).resolve().parents[1]


def _tiny_run(tmp_path, parts: str) -> list[dict]:
    """benchmarks/gpu_perf.py --tiny on these parts; the rows it wrote."""
    out = tmp_path / "perf.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "benchmarks/gpu_perf.py", "--tiny", "--parts", parts,
           "--model-dir", str(tmp_path / "model"), "--out", str(out), "--part-timeout", str(HANG_S)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_S + 60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


def test_tiny_trainer_parts_train_on_the_same_planned_batches(tmp_path):
    rows = {r["part"]: r for r in _tiny_run(tmp_path, "save,train-project-hf,train-raw-hf")}
    project, raw = rows["train-project-hf"], rows["train-raw-hf"]
    assert project["tokens_per_s"] > 0 and raw["tokens_per_s"] > 0
    assert project["batches_match_plan"] is True
    assert project["batch_rows"] == raw["batch_rows"] and len(set(raw["batch_rows"])) > 1  # varied rows
    assert all(t <= raw["batch_tokens"] for t in raw["batch_padded_tokens"])
    assert project["baseline"] == raw["name"] and project["baseline_tokens_per_s"] == raw["tokens_per_s"]


def test_tiny_graph_engine_parts_run_with_and_without_the_fused_prefill(tmp_path):
    rows = [r for r in _tiny_run(tmp_path, "save,backend-graph,backend-graph-hfprefill")
            if r["part"].startswith("backend")]
    engines = {r["engine"] for r in rows}
    assert engines == {"graph", "graph+hf-prefill"}
    for r in rows:  # every workload ran, on the CPU's eager fused step
        assert r["tokens_per_s"] > 0 and r["tokens"] == r["rows"] * r["new"]
        assert r["fused_step"] == "eager" and r["prefill_fallback"] is None
    assert len(rows) == 8  # 1, 2 and 4 concurrent, and 2 x K=2, per engine
