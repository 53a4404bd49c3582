"""A full-size improve on one card: `improve --iterations 3` on the Llama-3-8B architecture.

What it measures: each stage's wall time and peak GPU memory (grow, rank, build, train,
evaluate, promote: trainer/stage_stats.py records them in the store) for every iteration of
a 3-iteration improve at the Llama-3-8B size, on the bf16 path or, with --4bit, the 4-bit
path (4-bit rollouts and QLoRA training), which must stay under 24 GB of GPU memory.

The policy has random bf16 weights (cost does not depend on the weight values) but a real
BPE tokenizer, the pocket model's (data/pocket/model), so the agent's prompts are measured in
real subword tokens, not words; the vocabulary stays Llama-3's 128,256 rows (ids past the
tokenizer's decode to nothing). Grow uses the pocket world's scripted reader as the teacher
(`scripted:WORLD_DIR`, a program, not on the card): its trajectories are real, so rank, build
and train see realistic steps, and only one model is on the card at a time (agent/setup.py
PolicyPool; training frees the rollout model first). The end-of-turn row of the output layer
is zeroed, so the random policy never stops early: every sample it decodes runs to the
agent's own max_new_tokens (192), an upper bound on an action (the results' example_tokens
give the real ones, ~20). It writes no parseable action either, so each evaluation
trajectory ends after its first step's attempts: evaluate measures loading the policy with
its adapter and decoding full-length samples, not a whole trajectory.

    python benchmarks/full_size_improve.py --tiny --iterations 1          # CPU smoke run, under a minute
    python benchmarks/full_size_improve.py                                # GPU: bf16 path
    python benchmarks/full_size_improve.py --4bit --db full_4bit.db --name full-4bit   # 4-bit path
    bash benchmarks/device/full_size_improve.sh                           # both, one device call

Resumable: re-running with the same --db and --name continues where it stopped; the
random model is written once to --model-dir and reused. The results file is rewritten after
every iteration, so a run cut short by a time limit still reports what it finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKENIZER_DIR = ROOT / "data" / "pocket" / "model"
FOURBIT_LIMIT_BYTES = 24 * 10**9  # "fits a 24 GB card", in allocated bytes; the CUDA context comes on top


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return int(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a two-layer model on CPU (smoke run)")
    p.add_argument("--4bit", dest="four_bit", action="store_true",
                   help="4-bit rollouts and QLoRA training (CUDA and bitsandbytes)")
    p.add_argument("--iterations", type=_count, default=3)
    p.add_argument("--grow-questions", type=_count, default=48)
    p.add_argument("--eval-questions", type=_count, default=16)
    p.add_argument("--samples", type=_count, default=4, help="alternatives per step in grow")
    p.add_argument("--concurrency", type=_count, default=16)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--max-batch-tokens", type=_count, default=8192,
                   help="padded tokens per training forward pass (trainer/batching.py)")
    p.add_argument("--world-seed", type=int, default=None, help="the pocket world (default: the demo world)")
    p.add_argument("--model-dir", default="", help="where the random model is written "
                   "(default runs/full_size_model, or runs/full_size_model_tiny)")
    p.add_argument("--name", default="", help="the improve run's name (default full-bf16 / full-4bit)")
    p.add_argument("--db", default="full_size_improve.db")
    p.add_argument("--workdir", default="runs")
    p.add_argument("--out", default="", help="the results file (default "
                   "benchmarks/results/full_size_improve_PATH.json; runs/… with --tiny)")
    return p.parse_args(argv)


# --- the model ------------------------------------------------------------------------------


def model_size(tiny: bool, vocab_floor: int):
    """gpu_perf's Llama-3-8B size, or its tiny one with room for the tokenizer's ids."""
    from benchmarks.gpu_perf import FULL, TINY

    if not tiny:
        return FULL
    return dataclasses.replace(TINY, vocab=-(-vocab_floor // 64) * 64)


def write_model(tiny: bool, model_dir: Path, seed: int = 0) -> dict:
    """A random-weight Llama (GPU when present) with the pocket tokenizer → model_dir, once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.gpu_perf import llama_config

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR, local_files_only=True)
    size = model_size(tiny, len(tok))
    cfg = llama_config(size)
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    about = {"hidden": size.hidden, "intermediate": size.intermediate, "layers": size.layers,
             "heads": size.heads, "kv_heads": size.kv_heads, "vocab": size.vocab,
             "tokenizer": f"{TOKENIZER_DIR.relative_to(ROOT)} (BPE, {len(tok)} tokens)",
             "weights": f"random bf16, torch seed {seed}, end-of-turn row of lm_head zeroed"}
    if (model_dir / "config.json").is_file():
        return {**about, "written_s": None}
    shutil.rmtree(model_dir, ignore_errors=True)  # a folder left without its config is incomplete
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    with torch.no_grad():  # random weights must not stop early: the end-of-turn logit is always 0
        model.lm_head.weight[cfg.eos_token_id].zero_()
    model.generation_config.eos_token_id = cfg.eos_token_id
    model.generation_config.pad_token_id = cfg.pad_token_id
    tmp = model_dir.with_name(model_dir.name + ".tmp")  # config.json appears only when complete
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    del model
    _free_gpu()
    tmp.replace(model_dir)
    return {**about, "written_s": round(time.perf_counter() - t0, 1)}


def _free_gpu() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def missing_for_4bit() -> str | None:
    """Why the 4-bit path cannot run here, or None."""
    import torch

    if not torch.cuda.is_available():
        return "the 4-bit path needs a CUDA GPU; none is visible"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "the 4-bit path needs bitsandbytes, which is not installed"
    return None


# --- the loop -------------------------------------------------------------------------------


def improve_options(args, model_dir: Path, world, question_set: str):
    from agent.worlds.pocket.assets import pocket_assets
    from trainer.improve import ImproveOptions

    train = {"lora_r": 16, "lora_alpha": 16, "per_device_batch": 16, "grad_accum": 1,
             "warmup_steps": 2, "max_length": 2048, "gradient_checkpointing": not args.tiny}
    return ImproveOptions(
        model=str(model_dir), search="corpus", corpus=str(world.corpus), questions=question_set,
        name=args.name, iterations=args.iterations, judge="rules",
        teacher=f"scripted:{pocket_assets(world.seed).world_dir}",
        grow_questions=args.grow_questions, eval_questions=args.eval_questions,
        samples=args.samples, concurrency=args.concurrency, workdir=args.workdir,
        epochs=args.epochs, learning_rate=args.lr, max_batch_tokens=args.max_batch_tokens,
        load_in_4bit=args.four_bit, train=train)


def _gib(b):
    return None if b is None else round(b / 2**30, 3)


def stage_row(r) -> dict:
    return {"wall_s": round(r.wall_s, 4), "peak_gpu_gib": _gib(r.peak_gpu_bytes),
            "peak_rss_gib": _gib(r.peak_rss_bytes), "device": r.device,
            **({"error": r.error} if r.error else {})}


def stage_rows(store, run_id: int, it: int) -> dict:
    """Each stage's last recorded attempt in iteration `it`: wall time, peak GPU and RSS memory."""
    return {r.stage: stage_row(r) for r in store.stage_stats(run_id) if r.iteration == it}


def example_tokens(path: Path, tok) -> dict | None:
    """How long the iteration's training examples are in the policy's own tokens."""
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return {"examples": 0}
    n = lambda text: len(tok(text, add_special_tokens=False).input_ids)  # noqa: E731
    prompt, completion = [n(r["prompt"]) for r in rows], [n(r["completion"]) for r in rows]
    return {"examples": len(rows), "mean_prompt_tokens": round(sum(prompt) / len(rows), 1),
            "max_prompt_tokens": max(prompt),
            "mean_completion_tokens": round(sum(completion) / len(rows), 1), "total_tokens": sum(prompt) + sum(completion)}


def peak_bytes(store, run_id: int) -> int | None:
    peaks = [r.peak_gpu_bytes for r in store.stage_stats(run_id) if r.peak_gpu_bytes is not None]
    return max(peaks) if peaks else None


def main(argv=None) -> int:
    args = parse_args(argv)
    path = "4bit" if args.four_bit else "bf16"
    args.name = args.name or f"full-{path}" + ("-tiny" if args.tiny else "")
    args.out = args.out or (f"runs/full_size_improve_tiny_{path}.json" if args.tiny else
                            str(ROOT / "benchmarks" / "results" / f"full_size_improve_{path}.json"))
    model_dir = Path(args.model_dir or f"runs/full_size_model{'_tiny' if args.tiny else ''}")
    from benchmarks.gpu_perf import card, versions
    from benchmarks.provenance import commit

    installed = {"bitsandbytes": None, "unsloth": None, **versions()}  # absent ones shown as None

    t0 = time.perf_counter()
    result = {"benchmark": "full_size_improve", "path": path, "size": "tiny" if args.tiny else "llama-3-8b",
              "provenance": {"commit": commit(), "card": card(), "versions": installed,
                             "command": " ".join(sys.argv)}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**result, "complete": False}, indent=1))  # even if cut short now
    if args.four_bit and (why := missing_for_4bit()):  # before anything is written
        Path(args.out).write_text(json.dumps({**result, "skipped": why}, indent=1))
        print(f"error: {why}", file=sys.stderr)
        return 2

    from agent.llm.base import LLMError
    from agent.setup import SetupError
    from agent.worlds.pocket import PocketWorld
    from agent.worlds.pocket.assets import DEMO_SEED
    from store.api import Store
    from trainer.improve import Improver
    from transformers import AutoTokenizer

    result["model"] = write_model(args.tiny, model_dir)
    store = Store(args.db)
    world = PocketWorld(DEMO_SEED if args.world_seed is None else args.world_seed)
    opts = improve_options(args, model_dir, world, world.ensure_questions(store))
    t_prepare = time.perf_counter()
    try:
        improver = Improver(store, opts, log=print).prepare()  # loads the policy: not a stage
    except (SetupError, LLMError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result.update({"prepare_s": round(time.perf_counter() - t_prepare, 1), "world_seed": world.seed,
                   "teacher": opts.teacher, "judge": opts.judge, "grow_questions": args.grow_questions,
                   "eval_questions": args.eval_questions, "samples": args.samples,
                   "train": improver.cfg.train, "iterations": []})
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    for it in range(0, args.iterations + 1):
        try:
            if not improver.state("done", it):
                improver.baseline() if it == 0 else improver.iteration(it)
        except BaseException as e:  # an OOM or a time limit: keep the stages it got through
            result["iterations"].append({"iteration": it, "failed": f"{type(e).__name__}: {e}"[:500],
                                         "stages": stage_rows(store, improver.improve_run.id, it)})
            write_result(result, store, improver, args, t0)
            raise
        result["iterations"].append(iteration_row(store, improver, it, tok))
        print(json.dumps(result["iterations"][-1]), flush=True)
        write_result(result, store, improver, args, t0)
    improver.release()
    store.finish_run(improver.improve_run.id)
    summary = write_result(result, store, improver, args, t0, complete=True)
    print(json.dumps({k: summary[k] for k in ("path", "peak_gpu_gib", "wall_s", "under_24gb")
                      if k in summary}))
    return 0


def iteration_row(store, improver, it: int, tok) -> dict:
    r = next(x for x in improver.results() if x.iteration == it)
    stages = stage_rows(store, improver.improve_run.id, it)
    return {"iteration": it, "examples": r.examples, "train_loss": r.train_loss,
            "eval_exact": r.eval_exact, "promoted": r.promoted, "stages": stages,
            "wall_s": round(sum(s["wall_s"] for s in stages.values()), 3),
            "example_tokens": example_tokens(improver.dir / f"it{it}" / "examples.jsonl", tok)}


def write_result(result: dict, store, improver, args, t0: float, complete: bool = False) -> dict:
    peak = peak_bytes(store, improver.improve_run.id)
    result.update({"peak_gpu_gib": _gib(peak), "wall_s": round(time.perf_counter() - t0, 1),
                   "complete": complete,
                   # every attempt, as `cli.py report` lists them (a resumed stage has several)
                   "stage_attempts": [{"iteration": r.iteration, "stage": r.stage, **stage_row(r)}
                                      for r in store.stage_stats(improver.improve_run.id)]})
    if args.four_bit:
        result["under_24gb"] = None if peak is None else peak < FOURBIT_LIMIT_BYTES
        result["under_24gb_means"] = "torch.cuda.max_memory_allocated over every stage < 24e9 bytes"
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    sys.exit(main())
