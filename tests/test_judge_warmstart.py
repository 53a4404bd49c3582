"""The judge's warm start: the policy's samples on a training world, graded by its oracle,
become Yes/No examples in the judge's own prompt, and a real LoRA run makes a judge that loads
and scores."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from agent.worlds.pocket.assets import MODEL_DIR

pytestmark = pytest.mark.slow  # a real sampling and LoRA run: scheduled first


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    from trainer.judge_warmstart import JudgeDistillConfig, distill_judge

    out = tmp_path_factory.mktemp("judge") / "adapter"
    cfg = JudgeDistillConfig(policy=str(MODEL_DIR), model=str(MODEL_DIR), worlds=1,
                             questions_per_world=2, samples=2, concurrency=2, batch=8)
    return cfg, out, distill_judge(cfg, out, log=lambda *_: None)


def test_the_judge_learns_from_training_worlds_only(judged):
    from trainer.judge_warmstart import world_seeds

    cfg, out, record = judged
    from agent.worlds.pocket.assets import PRETRAIN_SEED_BASE

    seeds = world_seeds(cfg)
    assert record["world_seeds"] == seeds
    # Apart from the shipped policy warm start's worlds (numbered as trainer/pocket.py does) and
    # from the benchmark's grow, dev and test worlds, drawn below 100 000 (benchmarks/device/real_llm.sh).
    shipped = json.loads((Path(__file__).resolve().parents[1] / "data" / "pocket" / "smollm2" / "warmstart.json").read_text())
    policy_first = PRETRAIN_SEED_BASE + shipped["config"]["seed"] * 1_000_000
    assert all(s >= 100_000 and not policy_first <= s < policy_first + 1_000_000 for s in seeds)
    con = sqlite3.connect(out.with_name(out.name + ".samples.db"))
    names = [r[0] for r in con.execute("select name from runs")]
    assert names == [f"judge-train-{seeds[0]}"]


def test_every_example_is_the_judges_prompt_with_the_oracles_verdict(judged):
    from agent.worlds.pocket.assets import pocket_assets
    from agent.worlds.pocket.oracle import labelled_sets
    from reward.llm_judge import render_yesno_prompt
    from store.api import Store
    from trainer.judge_warmstart import judge_examples

    cfg, out, record = judged
    store = Store(str(out.with_name(out.name + ".samples.db")))
    seed = record["world_seeds"][0]
    sets = labelled_sets(store, f"judge-train-{seed}", pocket_assets(seed).world_dir)
    assert sets
    verdict = {}
    for s in sets:
        for sample, ok in zip(s["step"].samples, s["correct"]):
            verdict[render_yesno_prompt(s["step"].prompt, sample.text)] = "Yes" if ok else "No"
    rows = [{"kind": s["kind"], "prompt": s["step"].prompt, "output": sample.text, "correct": ok}
            for s in sets for sample, ok in zip(s["step"].samples, s["correct"])]
    examples = judge_examples(rows, cfg)
    assert len(examples) == len(verdict) == record["examples"]  # repeats within a step once
    assert all(verdict[e["prompt"]] == e["completion"] for e in examples)
    assert sum(record["labels"].values()) == record["examples"]


def test_the_trained_judge_loads_and_scores(judged, tmp_path):
    from agent.setup import make_judge
    from reward.llm_judge import yesno_scores
    from trainer.warmstart import merge

    cfg, out, record = judged
    assert record["steps"] >= 1 and (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "judge_warmstart.json").read_text())["examples"] == record["examples"]
    merged = merge(str(MODEL_DIR), out, tmp_path / "judge")
    llm = make_judge(f"yesno:{merged}")
    try:
        scores = yesno_scores(llm, "Q: who founded Acme?", ["Answer(answer=\"Ada\")", "?"])
    finally:
        llm.close()
    assert len(scores) == 2 and all(isinstance(x, float) for x in scores) and scores[0] != scores[1]
