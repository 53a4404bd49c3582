"""Scaling benchmark: Grow tokens/s and training tokens/s on 1 vs 2 (vs 4) GPUs.

The model is the Llama-3-8B architecture with random bf16 weights (throughput does not
depend on the weight values; built from a LlamaConfig as ../shared/bench/gpu_anchor_bench.py
does, saved once with a word-level tokenizer). Both measurements go through the project's
own paths, not a copy of them:

- Grow: `cli.py collect --workers N` on the pocket world's questions, one worker per GPU,
  each loading the model into the local HF backend. Random weights never write a parseable
  action, so every step is sampled `--samples` times and re-asked up to 3 times
  (AgentConfig.max_attempts) with 192 new tokens each: a steady decode workload.
  Tokens/s = completion tokens the workers logged in the store (llm_calls) / wall time of
  the collect command (model loading included, as a user waits for it).
- Train: `trainer.distributed.launch_train` — `accelerate launch` DDP over N GPUs of the
  same LoRA recipe, per-GPU batch fixed (weak scaling: the global batch grows with N).
  Tokens/s = the trainer's non-padding tokens (all ranks) / training time.

Scaling efficiency(N) = tokens/s(N) / (N × tokens/s(1)). Each N gets questions_per_gpu × N
questions (and the same number of optimizer steps on N× the data), so a perfect scaler
takes the same time at every N.

    python benchmarks/scaling.py                 # every GPU count in 1,2,4 that is visible
    python benchmarks/scaling.py --gpus 1,2      # just these
    python benchmarks/scaling.py --tiny          # CPU smoke test: tiny Llama, 1 vs 2 processes

Writes benchmarks/results/scaling.json (--tiny: scaling-tiny.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0,
                 max_position_embeddings=8192, rms_norm_eps=1e-5, bos_token_id=128000,
                 eos_token_id=128001, tie_word_embeddings=False)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="Tiny Llama on CPU, 1 vs 2 processes (checks the code path).")
    p.add_argument("--gpus", default=None, help="GPU counts to measure, e.g. 1,2,4 (default: those visible).")
    p.add_argument("--model-dir", default=None, help="Where the random model is saved (default: a temp dir, reused).")
    p.add_argument("--questions-per-gpu", type=int, default=None, help="Grow questions per worker (default 16; tiny 4).")
    p.add_argument("--samples", type=int, default=4, help="Samples per step in Grow.")
    p.add_argument("--concurrency", type=int, default=16, help="Trajectories at once in each worker.")
    p.add_argument("--train-steps", type=int, default=None, help="Optimizer steps (default 10; tiny 4).")
    p.add_argument("--seq", type=int, default=None, help="Training example length in tokens (default 1024; tiny 64).")
    p.add_argument("--batch", type=int, default=None, help="Per-GPU batch (default 4; tiny 2).")
    p.add_argument("--skip-grow", action="store_true")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


# --- the model ---------------------------------------------------------------------------


def build_model(args) -> Path:
    if args.tiny:
        from tests.tiny import build_tiny_model

        out = Path(args.model_dir or tempfile.mkdtemp(prefix="scaling-tiny-")) / "tiny"
        return out if (out / "config.json").exists() else build_tiny_model(out)
    out = Path(args.model_dir or Path(tempfile.gettempdir()) / "llama3-8b-random")
    if (out / "config.json").exists():
        return out
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    t0 = time.time()
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**LLAMA3_8B), dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    vocab = {f"t{i}": i for i in range(LLAMA3_8B["vocab_size"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="t128000", eos_token="t128001",
                            pad_token="t128002").save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    print(f"saved the random Llama-3-8B in {time.time() - t0:.0f} s to {out}", flush=True)
    return out


# --- Grow: collect --workers N --------------------------------------------------------------


def grow(model: Path, n: int, args, work: Path) -> dict:
    """`collect --workers n` on n × questions_per_gpu pocket questions; tokens from the store."""
    db = work / f"grow-{n}.db"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
           "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    env.pop("RESTREACT_DB", None)
    if args.tiny:
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU workers, even on a GPU machine
    else:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(n))
    questions = args.questions_per_gpu * n
    cmd = [sys.executable, str(ROOT / "cli.py"), "--db", str(db), "collect", "--world", "pocket",
           "--split", "train", "--model", str(model), "--limit", str(questions),
           "--samples", str(args.samples), "--concurrency", str(args.concurrency),
           "--max-searches", "2", "--workers", str(n), "--run", f"scaling-{n}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"grow with {n} workers failed: {proc.stderr.strip()[-1500:]}")
    from tests.harness import query

    tokens, calls = query(db, "SELECT COALESCE(SUM(completion_tokens), 0), COUNT(*) FROM llm_calls")[0]
    workers = query(db, "SELECT COUNT(DISTINCT worker) FROM trajectories")[0][0]
    return {"workers": n, "questions": questions, "completion_tokens": int(tokens),
            "llm_calls": int(calls), "workers_that_worked": int(workers), "wall_s": round(wall, 2),
            "tokens_per_s": round(tokens / wall, 1)}


# --- training: launch_train on n processes ----------------------------------------------------


def synthetic_examples(model: Path, count: int, seq: int, seed: int = 0):
    """Examples of exactly `seq` tokens (prompt 7/8, completion 1/8), random token text."""
    from transformers import AutoTokenizer

    from trainer.examples import Example

    tok = AutoTokenizer.from_pretrained(model)
    rng = random.Random(seed)
    words = [w for w in tok.get_vocab() if w.isalnum()][:5000] or ["a"]
    n_completion = max(1, seq // 8)

    def text(n):
        return " ".join(rng.choice(words) for _ in range(n))

    return [Example(i, text(seq - n_completion - 1), text(n_completion)) for i in range(count)]


def train(model: Path, n: int, args, work: Path) -> dict:
    from trainer.config import TrainConfig
    from trainer.distributed import launch_train

    examples = synthetic_examples(model, args.batch * n * args.train_steps, args.seq)
    cfg = TrainConfig(base_model=str(model), output_dir=str(work / f"adapter-{n}"),
                      max_steps=args.train_steps, per_device_batch=args.batch, grad_accum=1,
                      max_length=args.seq + 8, warmup_steps=1, use_unsloth=False,
                      group_by_length=False, cpu=args.tiny, logging_steps=1)
    t0 = time.perf_counter()
    result = launch_train(examples, cfg, processes=n, cpu=args.tiny)
    m = result.metrics
    return {"processes": m["processes"], "global_batch": args.batch * n, "steps": m["steps"],
            "tokens": m["tokens"], "train_runtime_s": round(m["runtime_s"], 2),
            "wall_s": round(time.perf_counter() - t0, 2), "tokens_per_s": round(m["tokens_per_s"], 1),
            "peak_gib": m.get("peak_gib"), "final_loss": m["loss_curve"][-1] if m["loss_curve"] else None}


def efficiency(rows: list[dict], key: str, n_key: str) -> None:
    base = next((r for r in rows if r[n_key] == 1), None)
    for r in rows:
        r["speedup"] = round(r[key] / base[key], 3) if base and base[key] else None
        r["efficiency"] = round(r["speedup"] / r[n_key], 3) if r["speedup"] else None


def device_info(tiny: bool) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "host": platform.node(),
            "cpus": os.cpu_count()}
    if torch.cuda.is_available() and not tiny:
        info.update(gpu=torch.cuda.get_device_name(0), gpus_visible=torch.cuda.device_count())
    else:
        info.update(gpu=None, gpus_visible=0, note="CPU processes stand in for GPUs (--tiny)")
    return info


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.questions_per_gpu = args.questions_per_gpu or (4 if args.tiny else 16)
    args.train_steps = args.train_steps or (4 if args.tiny else 10)
    args.seq = args.seq or (64 if args.tiny else 1024)
    args.batch = args.batch or (2 if args.tiny else 4)
    if args.tiny:
        args.concurrency = min(args.concurrency, 4)
        args.samples = min(args.samples, 2)
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.gpus:
        counts = [int(x) for x in args.gpus.split(",")]
    elif args.tiny:
        counts = [1, 2]
    else:
        counts = [c for c in (1, 2, 4) if c <= visible]
    if not args.tiny and (not counts or max(counts) > visible):
        raise SystemExit(f"need {max(counts or [1])} GPUs, {visible} visible (use --tiny on a CPU)")
    model = build_model(args)
    out = Path(args.out or ROOT / "benchmarks" / "results" / ("scaling-tiny.json" if args.tiny else "scaling.json"))
    from benchmarks.provenance import commit

    report = {"model": "tiny Llama (tests/tiny.py)" if args.tiny else "Llama-3-8B architecture, random bf16 weights",
              "provenance": {"commit": commit()}, "device": device_info(args.tiny), "counts": counts,
              "settings": {k: getattr(args, k) for k in ("questions_per_gpu", "samples", "concurrency",
                                                        "train_steps", "seq", "batch")},
              "grow": [], "train": []}
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        env_cache = os.environ.setdefault("RESTREACT_CACHE", str(Path(tmp) / "cache"))
        report["settings"]["cache"] = env_cache
        from agent.worlds import get_world

        get_world("pocket").corpus  # build the pocket world once, outside every timed run
        for n in counts:
            if not args.skip_grow:
                row = grow(model, n, args, Path(tmp))
                report["grow"].append(row)
                print("grow", json.dumps(row), flush=True)
            if not args.skip_train:
                row = train(model, n, args, Path(tmp))
                report["train"].append(row)
                print("train", json.dumps(row), flush=True)
    efficiency(report["grow"], "tokens_per_s", "workers")
    efficiency(report["train"], "tokens_per_s", "processes")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
