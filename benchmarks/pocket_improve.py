"""The learning benchmark: does `improve` make the pocket model better, with no reference answers?

Runs `improve --iterations N` on the pocket world with the rule judge (Grow uses the
pocket model itself: no teacher, no scripted policy, no reference answers — only the
judge's rankings pick the training steps), then scores every iteration's model on the
held-out dev and test splits, several sampled runs each (mean ± std over runs).

    python benchmarks/pocket_improve.py --iterations 3 --eval-runs 3          # GPU: minutes
    python benchmarks/pocket_improve.py --iterations 1 --grow-questions 40 --dev 20 --test 20   # CPU smoke

Writes benchmarks/results/pocket_improve.json and docs/pocket_improve.png. Resumable:
re-running with the same --db continues where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NAME = "pocket-benchmark"  # the improve run's name: its iterations are NAME:it0, NAME:it1, ...


def parse_args(argv=None):
    from agent.state import CHOOSERS
    from trainer.improve import TRAJECTORY_FILTERS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default="pocket_improve.db")
    p.add_argument("--model", default="", help="pocket model to start from (a folder that "
                   "`cli.py pocket pretrain` wrote); default: the shipped one, data/pocket/model")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--grow-questions", type=int, default=600)
    p.add_argument("--dev", type=int, default=150, help="dev questions per evaluation")
    p.add_argument("--test", type=int, default=200, help="test questions per evaluation")
    p.add_argument("--eval-runs", type=int, default=3)
    p.add_argument("--samples", type=int, default=4, help="alternatives per step in Grow")
    p.add_argument("--samples-for", action="append", default=[], metavar="KIND=K",
                   help="K for one step kind in Grow, e.g. summarize=8 (repeatable)")
    p.add_argument("--trajectories", choices=TRAJECTORY_FILTERS, default="all",
                   help="which grow trajectories train: all (the paper) or clean (every taken "
                        "step passed by the judge)")
    p.add_argument("--grow-choose", choices=CHOOSERS, default="perplexity",
                   help="which of the K samples a grow trajectory continues with")
    p.add_argument("--per-question", type=int, default=1, help="grow trajectories per question")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lora-r", type=int, default=32)
    p.add_argument("--workdir", default="runs")
    p.add_argument("--stage", choices=("all", "improve", "test"), default="all",
                   help="improve: only the loop; test: only score finished iterations on test "
                        "(a second process can do this while the loop runs)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pocket_improve.json"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "pocket_improve.png"))
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from agent.state import parse_samples_by_kind
    from agent.worlds import get_world
    from store.api import Store
    from trainer.improve import ImproveOptions, Improver

    try:  # checked before the store is opened: a bad option writes nothing
        by_kind = parse_samples_by_kind(args.samples_for)
        opts = ImproveOptions(
            world="pocket", model=args.model or None, name=NAME, iterations=args.iterations,
            grow_questions=args.grow_questions, eval_questions=args.dev, samples=args.samples,
            samples_by_kind=by_kind, eval_runs=args.eval_runs, per_question=args.per_question,
            trajectories=args.trajectories, grow_choose=args.grow_choose,
            concurrency=args.concurrency, judge="rules", workdir=args.workdir,
            epochs=args.epochs, learning_rate=args.lr,
            train={"lora_r": args.lora_r, "lora_alpha": args.lora_r, "per_device_batch": 32,
                   "grad_accum": 1, "gradient_checkpointing": False, "max_length": 1024,
                   "warmup_steps": 10})
        opts.check()
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    start = Path(args.model) if args.model else get_world("pocket").model_dir
    if args.model and not (start / "model.safetensors").is_file():
        raise SystemExit(f"error: --model {args.model}: no model.safetensors there")
    opts.model = str(start)
    t0 = time.perf_counter()
    store = Store(args.db)
    # Resuming a store that began from another warm start would mix two models' iterations.
    begun = store.model_version(f"{NAME}:it0")
    if begun is not None and begun.base != opts.model:
        raise SystemExit(f"error: {args.db} holds a benchmark that began from {begun.base}, "
                         f"not {start}: give another --db")
    improver = Improver(store, opts, log=print).prepare()
    cfg, qset = improver.cfg, improver.cfg.question_set
    if args.stage == "test":  # the iterations the loop has finished so far
        results = [r for r in improver.results() if improver.state("done", r.iteration)]
    else:
        results = improver.run()
    if args.stage == "improve":
        return {"iterations": [vars(r) for r in results]}

    rows = []
    test_qs = store.questions(qset, "test", args.test)
    for r in results:
        mv = store.model_version(r.model_version)
        run = store.get_or_create_run(f"{cfg.name}:test:{r.iteration}", "eval", {"iteration": r.iteration})
        agent = improver.policy(cfg.base_model, mv.adapter_path, 1, greedy=args.eval_runs == 1)
        test = evaluate(agent, run.id, test_qs, runs=args.eval_runs, concurrency=args.concurrency,
                        model_version_id=mv.id)
        rows.append({"iteration": r.iteration, "examples": r.examples, "train_loss": r.train_loss,
                     "promoted": r.promoted,
                     "dev_mean": r.eval_exact, "dev_std": r.eval_std,
                     "test_mean": test.exact_mean, "test_std": test.exact_std})
        print(json.dumps(rows[-1]))
    from benchmarks.provenance import commit, weights_sha256

    card, versions = _card(), _versions()
    result = {"benchmark": "pocket_improve", "judge": "rules", "card": card,
              "versions": versions, "command": " ".join(sys.argv),
              "provenance": {"commit": commit(), "card": card, "versions": versions,
                             "model": {"path": str(start), "sha256": weights_sha256(start)}},
              "start_model": _model_id(start),
              "dev_questions": args.dev, "test_questions": len(test_qs),
              "eval_runs": args.eval_runs, "grow_questions": args.grow_questions,
              "samples": args.samples, "samples_by_kind": by_kind,
              "trajectories": args.trajectories, "per_question": args.per_question,
              "grow_choose": args.grow_choose, "wall_s": round(time.perf_counter() - t0, 1),
              "iterations": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    plot(rows, args.plot)
    return result


def plot(rows: list[dict], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    its = [r["iteration"] for r in rows]
    for split in ("dev", "test"):
        ax.errorbar(its, [100 * r[f"{split}_mean"] for r in rows],
                    yerr=[100 * r[f"{split}_std"] for r in rows], marker="o", capsize=3, label=split)
    ax.set_xlabel("iteration")
    ax.set_ylabel("exact match (%)")
    ax.set_xticks(its)
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title("pocket world: improve with the rule judge", fontsize=9)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def _model_id(model_dir: Path) -> dict:
    """Which warm start iteration 0 is: its folder and the first bytes of its weights' hash."""
    weights = Path(model_dir) / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.is_file() else None
    return {"path": str(model_dir), "sha256_16": digest}


def _card() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:
        pass
    return f"CPU ({platform.processor() or platform.machine()})"


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "peft", "langgraph", "sqlalchemy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


if __name__ == "__main__":
    main()
