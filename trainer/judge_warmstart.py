"""Warm-starting the yes/no judge: the policy's own samples, graded by training worlds' oracle.

The paper's ranker is a model far larger than the policy it ranks. A 135 M judge prompted
as-is picks a correct step no more often than a random pick does (docs/BENCHMARKS.md section
6), so training on its picks is training on the policy's own samples. This module gives the
small judge what the larger one would bring: it lets the policy sample K outputs per step on
freshly generated *training* worlds (never a world anything is grown or evaluated on),
grades every sample with that world's oracle (agent/worlds/pocket/oracle.py), and LoRA-tunes
the judge's model to say Yes to the correct ones and No to the rest, in exactly the prompt
the judge asks at ranking time (reward/llm_judge.py). It is the same distillation as the
policy's warm start (trainer/warmstart.py), with a grader as the teacher. The improve loop
that later uses the judge sees no oracle and no reference answer.

    python cli.py pocket judge-distill --policy runs/smol-warm --out runs/judge-adapter
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

RECORD = "judge_warmstart.json"
JUDGE_SEED_BASE = 2  # training worlds PRETRAIN_SEED_BASE + seed * 1e6 + i; the policy's use 1


@dataclass
class JudgeDistillConfig:
    policy: str  # the model whose samples the judge learns to grade (the policy's warm start)
    model: str = "smollm2"  # the judge's own base model
    worlds: int = 4
    questions_per_world: int = 150
    samples: int = 4  # K sampled outputs a step, as the grow stage draws them
    concurrency: int = 64
    max_examples: int = 20_000  # a random subset when the worlds give more
    lora_r: int = 8
    learning_rate: float = 3e-4
    epochs: float = 1.0
    batch: int = 32
    max_length: int = 2048  # step prompt + candidate + question; cut from the left if longer
    seed: int = JUDGE_SEED_BASE
    time_limit_s: float = 0.0


def sample_steps(store, world_seed: int, model: str, run_name: str, questions: int,
                 samples: int = 4, concurrency: int = 64) -> None:
    """Sampled trajectories (K = `samples` a step) of `model` on the world's training questions,
    stored as run `run_name`; resumable like any collect run."""
    from agent.collect import collect, items_for
    from agent.setup import AgentOptions, PolicyPool
    from agent.state import AgentConfig
    from agent.worlds.pocket import PocketWorld

    world = PocketWorld(world_seed)
    qset = world.ensure_questions(store)
    run = store.get_or_create_run(run_name, "collect", {"model": model, "world_seed": world_seed})
    pool = PolicyPool(store)
    agent = pool.get(AgentOptions(model=model, search="corpus", corpus=str(world.corpus),
                                  config=AgentConfig(samples=samples, greedy=False)))
    collect(agent, run.id, items_for(store.questions(qset, "train", questions)),
            concurrency=concurrency, model=model)
    store.finish_run(run.id)
    pool.release()


def world_seeds(cfg: JudgeDistillConfig) -> list[int]:
    from agent.worlds.pocket.assets import PRETRAIN_SEED_BASE

    return [PRETRAIN_SEED_BASE + cfg.seed * 1_000_000 + i for i in range(cfg.worlds)]


def graded_samples(cfg: JudgeDistillConfig, db: Path, log=print) -> list[dict]:
    """{kind, prompt, output, correct} for every sample of every step set on the training
    worlds. The samples are stored in `db` as they come, so an interrupted run resumes."""
    from agent.worlds.pocket.assets import pocket_assets
    from agent.worlds.pocket.oracle import labelled_sets
    from store.api import Store

    store = Store(str(db))
    rows = []
    for seed in world_seeds(cfg):
        t0 = time.perf_counter()
        run = f"judge-train-{seed}"
        sample_steps(store, seed, cfg.policy, run, cfg.questions_per_world,
                     samples=cfg.samples, concurrency=cfg.concurrency)
        sets = labelled_sets(store, run, pocket_assets(seed).world_dir)
        for s in sets:
            rows += [{"kind": s["kind"], "prompt": s["step"].prompt, "output": sample.text,
                      "correct": ok} for sample, ok in zip(s["step"].samples, s["correct"])]
        log(f"world {seed}: {len(sets)} step sets in {time.perf_counter() - t0:.0f}s")
    return rows


def judge_examples(rows: list[dict], cfg: JudgeDistillConfig) -> list[dict]:
    """The judge's prompt for each graded sample, Yes or No as the completion. A sample that
    repeats another for the same step prompt is kept once: a set of four identical outputs
    would otherwise count one verdict four times."""
    from reward.llm_judge import render_yesno_prompt

    seen, out = set(), []
    for r in rows:
        key = (r["prompt"], r["output"])
        if key in seen:
            continue
        seen.add(key)
        out.append({"kind": r["kind"], "prompt": render_yesno_prompt(r["prompt"], r["output"]),
                    "completion": "Yes" if r["correct"] else "No"})
    random.Random(cfg.seed).shuffle(out)
    return out[:cfg.max_examples]


def samples_db(out: Path) -> Path:
    return out.with_name(out.name + ".samples.db")


def distill_judge(cfg: JudgeDistillConfig, out: Path, log=print) -> dict:
    """Grade the policy's samples on training worlds and LoRA-tune the judge; returns metrics."""
    from trainer.warmstart import DistillConfig, distill

    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    # Beside the adapter's folder, which training wants to itself; a re-run resumes from it.
    rows = graded_samples(cfg, samples_db(out), log=log)
    examples = judge_examples(rows, cfg)
    if not examples:
        raise ValueError("the policy produced no step with two or more samples to grade")
    labels = Counter(e["completion"] for e in examples)
    log(f"judge examples: {len(examples)} ({labels['Yes']} Yes, {labels['No']} No)")
    dcfg = DistillConfig(model=cfg.model, lora_r=cfg.lora_r, learning_rate=cfg.learning_rate,
                         epochs=cfg.epochs, batch=cfg.batch, max_length=cfg.max_length,
                         seed=cfg.seed, time_limit_s=cfg.time_limit_s)
    metrics = distill(dcfg, out, log=log, steps=examples, record=None)
    for key in ("config", "teacher_steps"):  # the student's view; the judge's own follows
        metrics.pop(key)
    record = {**metrics, "judge": asdict(cfg), "world_seeds": world_seeds(cfg),
              "graded_samples": len(rows), "examples": len(examples), "labels": dict(labels),
              "by_kind": dict(Counter(e["kind"] for e in examples)),
              "wall_s": round(time.perf_counter() - t0, 1)}
    (out / RECORD).write_text(json.dumps(record, indent=1, default=str))
    return record
