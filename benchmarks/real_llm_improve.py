"""The learning benchmark on a real pretrained LLM: SmolLM2-135M-Instruct, 3 label-free iterations.

Iteration 0 is the distilled warm start (`cli.py pocket distill`, merged into the base so
each iteration trains a fresh LoRA on it). Grow runs the policy itself on the training
questions of a freshly generated world; the judge (`rules`, or a prompted LLM such as
`yesno:MODEL`) alone picks the training steps; no reference answer is read except to score.
Held-out scoring uses a *second* fresh world whose seed is drawn when the benchmark starts
(and recorded), so no design decision has seen it. Every iteration is scored there with
several sampled runs (mean ± std), beside the warm start's own teacher (the scripted reader
with the mistake rates its `warmstart.json` records) walking the same test questions.

    python benchmarks/real_llm_improve.py --base runs/smol-warm --judge rules --name rules    # GPU: minutes
    python benchmarks/real_llm_improve.py --base DIR --iterations 1 --grow-questions 4 --dev 2 --test 2 --eval-runs 1   # CPU smoke
    python benchmarks/real_llm_improve.py --teacher-only --seeds G,T --test 100 --out F   # the teacher alone, CPU: seconds

Resumable: re-running with the same --db and --name continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="", help="the warm start: a merged model folder (required "
                   "unless --teacher-only)")
    p.add_argument("--teacher-only", action="store_true",
                   help="score only the warm start's teacher on the test world (no model, no GPU)")
    p.add_argument("--judge", default="rules", help="rules, cite:MODEL (reward/evidence_judge.py) or yesno:MODEL (reward/llm_judge.py)")
    p.add_argument("--name", default="smol")
    p.add_argument("--db", default="real_llm_improve.db")
    p.add_argument("--seeds", default="", help="GROW_SEED,TEST_SEED; default: drawn now")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--grow-questions", type=int, default=300)
    p.add_argument("--dev", type=int, default=100)
    p.add_argument("--test", type=int, default=200)
    p.add_argument("--eval-runs", type=int, default=2)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--samples-for", action="append", default=[], metavar="KIND=K",
                   help="K for one step kind in grow, e.g. summarize=8 (repeatable)")
    p.add_argument("--concurrency", type=int, default=128)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--batch", type=int, default=32, help="training batch (32 fills a card; "
                   "a 24 GiB CPU machine needs 4)")
    p.add_argument("--warmstart-record", default=str(ROOT / "data" / "pocket" / "smollm2" / "warmstart.json"),
                   help="the distillation record naming the teacher to score beside the loop")
    p.add_argument("--workdir", default="runs")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "real_llm_improve.json"))
    return p.parse_args(argv)


def draw_seeds(spec: str) -> tuple[int, int]:
    """Two world seeds nobody chose: below the training worlds' range, not the demo world."""
    from agent.worlds.pocket.assets import DEMO_SEED, PRETRAIN_SEED_BASE

    if spec:
        grow, test = (int(x) for x in spec.split(","))
        return grow, test
    pick = lambda: 1000 + secrets.randbelow(PRETRAIN_SEED_BASE - 1000)  # noqa: E731
    grow, test = pick(), pick()
    while test == grow or DEMO_SEED in (grow, test):
        test = pick()
    return grow, test


def main(argv=None) -> dict:
    args = parse_args(argv)
    from agent.setup import AgentOptions, PolicyPool
    from agent.state import AgentConfig
    from agent.worlds.pocket import PocketWorld
    from benchmarks.pocket_improve import _card, _versions
    from benchmarks.provenance import commit, weights_sha256
    from reward.evaluate import evaluate
    from store.api import Store
    from trainer.improve import ImproveOptions, Improver

    t0 = time.perf_counter()
    store = Store(args.db)
    grow_seed, test_seed = _seeds(args)
    grow_world, test_world = PocketWorld(grow_seed), PocketWorld(test_seed)
    if args.teacher_only:
        return _teacher_only(store, args, grow_seed, test_world)
    if not args.base:
        sys.exit("real_llm_improve: --base DIR is required (the merged warm start)")
    qset, test_set = grow_world.ensure_questions(store), test_world.ensure_questions(store)
    opts = ImproveOptions(
        model=args.base, search="corpus", corpus=str(grow_world.corpus), questions=qset,
        name=args.name, iterations=args.iterations, judge=args.judge,
        grow_questions=args.grow_questions, eval_questions=args.dev, samples=args.samples,
        samples_by_kind={k: int(v) for k, v in (x.split("=") for x in args.samples_for)},
        eval_runs=args.eval_runs, concurrency=args.concurrency, workdir=args.workdir,
        epochs=args.epochs, learning_rate=args.lr,
        train={"lora_r": args.lora_r, "lora_alpha": args.lora_r, "per_device_batch": args.batch,
               "grad_accum": 1, "gradient_checkpointing": False, "max_length": 1024,
               "warmup_steps": 10})
    improver = Improver(store, opts, log=print).prepare()
    pool = PolicyPool(store)
    test_qs = store.questions(test_set, "test", args.test)
    result = {"benchmark": "real_llm_improve", "judge": args.judge, "arm": args.name,
              "provenance": {"commit": commit(), "card": _card(), "versions": _versions(),
                             "command": " ".join(sys.argv)},
              "start_model": {"path": args.base, "sha256": weights_sha256(args.base)},
              "worlds": {"grow_and_dev_seed": grow_seed, "test_seed": test_seed,
                         "drawn": (f"given with --seeds {args.seeds}" if args.seeds else
                                   "at benchmark start (secrets.randbelow), not chosen")},
              "dev_questions": args.dev, "test_questions": len(test_qs),
              "eval_runs": args.eval_runs, "grow_questions": args.grow_questions,
              "samples": args.samples, "samples_for": args.samples_for,
              "teacher": teacher_score(store, args, test_world, test_qs), "iterations": []}
    # Iteration by iteration, each scored on the test world as soon as it is trained and the
    # file rewritten, so a run cut short by a time limit still reports what it finished.
    for it in range(0, args.iterations + 1):
        if not improver.state("done", it):
            improver.baseline() if it == 0 else improver.iteration(it)
        improver.release()  # the rollout model leaves the card before the test policy loads
        r = next(x for x in improver.results() if x.iteration == it)
        mv = store.model_version(r.model_version)
        erun = store.get_or_create_run(f"{improver.cfg.name}:test:{it}", "eval", {"iteration": it})
        agent = pool.get(AgentOptions(model=args.base, adapter=mv.adapter_path, search="corpus",
                                      corpus=str(test_world.corpus),
                                      config=AgentConfig(samples=1, greedy=args.eval_runs == 1)))
        test = evaluate(agent, erun.id, test_qs, runs=args.eval_runs, concurrency=args.concurrency,
                        model_version_id=mv.id)
        pool.release()
        store.finish_run(erun.id)
        result["iterations"].append({
            "iteration": it, "examples": r.examples, "train_loss": r.train_loss,
            "promoted": r.promoted, "dev_mean": r.eval_exact, "dev_std": r.eval_std,
            "test_mean": test.exact_mean, "test_std": test.exact_std,
            "stages": stage_times(store, improver.improve_run.id, it)})
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(result["iterations"][-1]), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    store.finish_run(improver.improve_run.id)
    return result


def teacher_score(store, args, world, questions) -> dict | None:
    """The distillation teacher on the test questions: one run per teacher seed (the scripted
    reader is deterministic given its seed), mean ± std, so "beats its own teacher" is measured
    on the same world and questions as the student."""
    import statistics

    from agent.graph import Agent
    from agent.search.corpus import CorpusSearch
    from agent.state import AgentConfig
    from agent.worlds.pocket.assets import pocket_assets
    from agent.worlds.pocket.policy import ScriptedPolicy
    from reward.evaluate import evaluate

    record = Path(args.warmstart_record)
    if not record.is_file():
        return None
    cfg = json.loads(record.read_text()).get("config", {})
    if cfg.get("teacher"):  # a model teacher: scoring it is a run of its own
        return {"teacher": cfg["teacher"], "test_mean": None}
    world_dir = pocket_assets(world.seed).world_dir
    scores = []
    for seed in range(args.eval_runs):
        policy = ScriptedPolicy(world_dir, error_rate=cfg.get("error_rate", 0.3), seed=seed,
                                kind_weights=cfg.get("mistake_weights") or {})
        agent = Agent(llm=policy, search=CorpusSearch(world.corpus), store=store,
                      config=AgentConfig(samples=1))
        run = store.get_or_create_run(f"{args.name}:teacher:{seed}", "eval", {"teacher": policy.name})
        scores.append(evaluate(agent, run.id, questions, runs=1, concurrency=8).exact_mean)
        store.finish_run(run.id)
    return {"teacher": f"scripted reader, error rate {cfg.get('error_rate')}, "
                       f"mistake weights {cfg.get('mistake_weights')}",
            "runs": scores, "test_mean": statistics.mean(scores),
            "test_std": statistics.pstdev(scores) if len(scores) > 1 else 0.0}


def _teacher_only(store, args, grow_seed: int, test_world) -> dict:
    from benchmarks.pocket_improve import _card, _versions
    from benchmarks.provenance import commit

    questions = store.questions(test_world.ensure_questions(store), "test", args.test)
    result = {"benchmark": "real_llm_improve", "arm": "teacher",
              "provenance": {"commit": commit(), "card": _card(), "versions": _versions(),
                             "command": " ".join(sys.argv)},
              "worlds": {"grow_and_dev_seed": grow_seed, "test_seed": test_world.seed},
              "test_questions": len(questions),
              "teacher": teacher_score(store, args, test_world, questions)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result["teacher"]))
    return result


def stage_times(store, run_id: int, it: int) -> dict:
    """Each stage's last recorded wall time and peak GPU memory for iteration `it`."""
    rows = [r for r in store.stage_stats(run_id) if r.iteration == it]
    return {r.stage: {"wall_s": round(r.wall_s, 1),
                      "peak_gpu_gib": None if r.peak_gpu_bytes is None
                      else round(r.peak_gpu_bytes / 2**30, 2)} for r in rows}


def _seeds(args) -> tuple[int, int]:
    """The arm's recorded seeds, or (first time) freshly drawn ones, recorded now, so a
    resumed run keeps its worlds."""
    path = Path(args.workdir) / f"{args.name}.seeds.json"
    if path.is_file():
        return tuple(json.loads(path.read_text()))
    seeds = draw_seeds(args.seeds)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(seeds)))
    return seeds


if __name__ == "__main__":
    main()
