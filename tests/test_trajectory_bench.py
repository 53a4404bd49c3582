"""benchmarks/trajectory_bench.py: the workload keeps the stored trajectories' proportions at web
sizes, and its tiny configuration runs the project's graph engine and a raw transformers anchor
end to end on a CPU, with the counters the GPU run reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import trajectory_bench as tb  # noqa: E402


def _shape():
    return json.loads(tb.WORKLOAD.read_text())["scaled"]


def test_the_shipped_workload_is_web_sized_and_comes_from_a_real_store():
    wl = json.loads(tb.WORKLOAD.read_text())
    assert wl["source"]["trajectories"] == len(wl["real"]) >= 5
    assert all(s["k"] == len(s["sample_tokens"]) for t in wl["real"] for s in t)
    assert wl["scaled"] == tb.scale(wl["real"])  # the file is what the code derives
    shape = wl["scaled"]
    assert shape["prompt_tokens"][0] == 600 and shape["prompt_tokens"][-1] == 3000
    assert len(shape["prompt_tokens"]) == len(shape["k"]) == len(shape["kind"]) == 6


def test_trajectories_share_headers_and_earlier_prompts_as_the_shape_says():
    shape = _shape()
    trajs = tb.trajectories(shape, 4, vocab=1000, seed=3)
    assert [len(s.ids) for s in trajs[0]] == shape["prompt_tokens"]
    assert tb.trajectories(shape, 4, vocab=1000, seed=3)[2][3].ids == trajs[2][3].ids  # deterministic
    from agent.llm.prefix_cache import common_prefix

    first = shape["kind"][0]
    head = round(shape["header_fraction"][first] * shape["prompt_tokens"][0])
    assert common_prefix(trajs[0][0].ids, trajs[1][0].ids) >= head  # the kind's instructions
    again = shape["kind"].index(first, 1)  # the next step of that kind keeps its seen share
    keep = round(shape["seen_fraction"][again] * shape["prompt_tokens"][again])
    assert common_prefix(trajs[0][again].ids, trajs[0][0].ids) >= min(keep, shape["prompt_tokens"][0] - 1)
    total = sum(len(s.ids) for t in trajs for s in t)
    assert 0 < tb.first_time_tokens(trajs) < total


def test_hbm_bound_counts_weights_and_each_rows_context():
    arch = tb.ARCHS["llama3-8b"]
    assert 15.5e9 < tb.weight_bytes(arch) < 16.5e9  # Llama-3-8B in bf16
    assert tb.kv_bytes_per_token(arch) == 32 * 2 * 8 * 128 * 2
    one = [[tb.Step([1] * 100, 1, 2)]]
    b = tb.hbm_bound(arch, one, max_rows=8)
    seconds = sum(tb.weight_bytes(arch) + (100 + t) * tb.kv_bytes_per_token(arch) for t in range(2)) / 3.35e12
    assert b["hbm_bound_tokens_per_s"] == round(2 / seconds, 1)


def test_the_workload_command_refuses_a_store_without_trajectories(tmp_path):
    from store.api import Store

    Store(str(tmp_path / "empty.db")).close()  # a real store, holding no trajectory
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def workload(db):
        return subprocess.run([sys.executable, "benchmarks/trajectory_bench.py", "workload", "--store",
                               str(db), "--out", str(tmp_path / "wl.json")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    done = workload(tmp_path / "empty.db")
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        f"error: no finished trajectories in {tmp_path / 'empty.db'}"]
    done = workload(tmp_path / "missing.db")
    assert done.returncode == 1 and "no store file" in done.stderr
    assert not (tmp_path / "wl.json").exists() and not (tmp_path / "missing.db").exists()


@pytest.mark.slow
def test_tiny_run_measures_the_graph_engine_and_an_anchor_on_a_cpu(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "benchmarks/trajectory_bench.py", "--tiny", "--out", str(out),
           "--only", "llama3-8b/graph,llama3-8b/anchor-generate-dynamic", "--part-timeout", "400"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = {(r["engine"], r["concurrency"]): r for r in result["rows"]}
    assert set(rows) == {("graph", 1), ("graph", 2), ("anchor-generate-dynamic", 2)}
    for r in rows.values():
        assert r["tokens_per_s"] > 0 and r["generated_tokens"] > 0
        assert r["step_latency_p95_s"] >= r["step_latency_p50_s"] > 0
        assert r["steps"] == 3 * r["concurrency"] and r["peak_gib"] is not None
    graph, anchor = rows[("graph", 2)], rows[("anchor-generate-dynamic", 2)]
    # What the graph engine prefilled beyond the first-time tokens is what its own counter calls
    # recomputed (two trajectories' common header, too short to prefill once, at their first
    # step); generate prefills every row's whole prompt.
    assert graph["recomputed_prompt_tokens"] == graph["engine_prefix_stats"]["recomputed_tokens"]
    assert graph["engine_prefix_stats"]["reused_tokens"] > 0
    # The timed pass's own engine time, split by phase (the warm-up pass is not in it).
    t = graph["engine_timings"]
    assert t["prefill_s"] > 0 and t["decode_s"] >= t["remember_s"] > 0 and t["decode_steps"] > 0
    assert t["capture_s"] + t["prefill_s"] + t["decode_s"] <= graph["wall_s"]
    assert "engine_timings" not in anchor
    assert graph["prefilled_prompt_tokens"] < graph["prompt_tokens"]
    assert anchor["prefilled_prompt_tokens"] == anchor["prompt_tokens_rows"]
    assert anchor["recomputed_prompt_tokens"] > graph["recomputed_prompt_tokens"]
    assert result["hbm_bound_formula"].startswith("bound tokens/s")
    assert result["not_run"] == [] and result["failed"] == []


def test_side_by_side_pairs_prefix_reuse_with_the_same_engine_without_it():
    def row(model, engine, conc, tps, prefilled):
        return dict(model=model, engine=engine, concurrency=conc, tokens_per_s=tps,
                    prefilled_prompt_tokens=prefilled, step_latency_p50_s=1.0)

    rows = [row("llama3-8b", "graph", 32, 900.0, 400), row("llama3-8b", "graph+no-prefix-cache", 32, 300.0, 1000),
            row("llama3-8b", "graph", 8, 500.0, 100),  # no partner at 8: left out
            row("smollm2-135m", "graph+no-prefix-cache", 128, 50.0, 10)]  # no reuse row: left out
    got = tb.side_by_side(rows)
    assert [(r["model"], r["concurrency"], r["speedup"]) for r in got] == [("llama3-8b", 32, 3.0)]
    assert (got[0]["prefilled_tokens"], got[0]["prefilled_tokens_without"]) == (400, 1000)


def test_the_device_plan_puts_prefix_reuse_and_its_baseline_first_at_the_target_sizes():
    first = tb.DEVICE_PLAN[:4]
    assert first == [("llama3-8b", "graph", (32,)), ("llama3-8b", "graph+no-prefix-cache", (32,)),
                     ("smollm2-135m", "graph", (128,)), ("smollm2-135m", "graph+no-prefix-cache", (128,))]
    assert {e for _, e, _ in tb.DEVICE_PLAN} - set(tb.ENGINES) == {"gpu_perf"}


def test_a_deadline_leaves_parts_not_run_and_still_writes_the_file(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "benchmarks/trajectory_bench.py", "--tiny", "--plan", "device",
           "--out", str(out), "--deadline-s", "10"]  # under the 20 s a part needs: none starts
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["rows"] == [] and len(result["not_run"]) == len(tb.DEVICE_PLAN)
    assert result["not_run"][0] == "llama3-8b graph [2]"  # the tiny plan's level for 32
    assert result["provenance"]["commit"] and "--plan device" in result["provenance"]["command"]
