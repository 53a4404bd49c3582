"""GPU performance of the project beside the anchors, on the Llama-3-8B architecture, one card, one run.

What it measures (docs/BENCHMARKS.md section 3 has the figures and the targets):
  rollout   aggregate decode tokens/s with 1, 8 and 32 concurrent trajectories (and 8 x K=4
            samples) through the project's HFBackend, once per engine option, beside plain
            `generate` (dynamic cache) and static-cache compiled `generate` run in this run;
  training  trainer tokens/s and peak memory on step-shaped examples (prompt ~500 tokens,
            completion ~40, lengths varying) through trainer/sft.py `train()`, beside a raw
            HF + PEFT loop and a raw unsloth loop on the same examples and batches: at most
            16 rows and 8,192 padded tokens a batch (max_batch_tokens; the anchor's 4 x 2,048);
  4-bit     HFBackend rollouts with bitsandbytes 4-bit weights, and QLoRA training.

The model is the Llama-3-8B architecture with random bf16 weights (throughput does not
depend on the weight values) and a synthetic word-level tokenizer ("t0 t1 ..."), written
once to --model-dir. The end-of-sequence row of the output layer is zeroed so random
weights practically never stop early: decode lengths match the anchors'.

Every part runs in its own child process (unsloth must be imported before transformers,
and peak memory must not carry over), under --part-timeout. Results merge into --out
(a list of {name, card, tokens_per_s, peak_gib, baseline, baseline_tokens_per_s, ...}),
so parts can be run in separate calls; a markdown table of everything in --out is printed.

    python benchmarks/gpu_perf.py --tiny                      # CPU smoke run of every code path
    python benchmarks/gpu_perf.py --parts save,anchor-gen     # GPU; docs/BENCHMARKS.md section 3
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
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TRAIN_SEED = 3407  # the project's TrainConfig seed; the raw loops plan their batches with it too
TRAIN_MAX_LENGTH = 1024


@dataclass(frozen=True)
class Size:
    """Model and workload dimensions: `full` is the targets' (Llama-3-8B), `tiny` a CPU smoke run."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    prompt: int  # decode prompt tokens
    new: int  # decode new tokens
    concurrency: tuple[int, ...]
    k: int  # samples per request in the K-samples workload
    k_requests: int
    train_examples: int
    train_prompt: tuple[int, int]  # prompt length range (tokens)
    train_completion: tuple[int, int]
    train_batch: int  # most rows per forward pass
    train_batch_tokens: int  # most padded tokens (rows x longest) per forward pass
    train_steps: int  # measured optimizer steps
    train_warmup: int  # steps run before timing starts


FULL = Size(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, vocab=128256,
            prompt=512, new=128, concurrency=(1, 8, 32), k=4, k_requests=8,
            train_examples=512, train_prompt=(350, 650), train_completion=(20, 60),
            train_batch=16, train_batch_tokens=8192, train_steps=10, train_warmup=2)
TINY = Size(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=512,
            prompt=24, new=8, concurrency=(1, 2, 4), k=2, k_requests=2,
            train_examples=24, train_prompt=(12, 30), train_completion=(3, 8),
            train_batch=4, train_batch_tokens=96, train_steps=3, train_warmup=1)

# part name -> (function name, short description)
PARTS = {
    "save": "write the random model and tokenizer",
    "anchor-gen": "plain HF generate, dynamic cache and static-cache compiled",
    "anchor-unsloth-gen": "unsloth FastLanguageModel.for_inference generate",
    "backend-plain": "HFBackend, default engine",
    "backend-static-compile": "HFBackend, static cache + torch.compile",
    "backend-share-prefix": "HFBackend, one prefill per distinct prompt",
    "backend-continuous": "HFBackend, transformers continuous batching",
    "backend-graph": "HFBackend, the project's CUDA-graph decode loop (fused Llama step)",
    "backend-graph-unfused": "HFBackend, CUDA-graph decode loop over transformers' own step",
    "backend-graph-unpacked": "HFBackend, graph engine, fused step with one matmul per projection",
    "backend-graph-hfprefill": "HFBackend, graph engine, prompts through transformers' own forward",
    "train-project-hf": "trainer/sft.py train(), transformers + PEFT path",
    "train-raw-hf": "raw HF + PEFT LoRA loop",
    "train-project-unsloth": "trainer/sft.py train(), unsloth path",
    "train-raw-unsloth": "raw unsloth LoRA loop",
    "backend-4bit": "HFBackend on bitsandbytes 4-bit weights",
    "backend-4bit-graph": "HFBackend on 4-bit weights, CUDA-graph decode loop",
    "train-project-qlora": "trainer/sft.py train() with load_in_4bit",
    "train-raw-qlora": "raw QLoRA loop (unsloth when it imports, else HF + PEFT)",
}
ENGINES = {"backend-plain": "plain", "backend-static-compile": "static+compile",
           "backend-share-prefix": "share-prefix", "backend-continuous": "continuous",
           "backend-graph": "graph", "backend-graph-unfused": "graph+unfused",
           "backend-graph-unpacked": "graph+unpacked", "backend-graph-hfprefill": "graph+hf-prefill",
           "backend-4bit": "plain", "backend-4bit-graph": "graph"}


# --- shared helpers -------------------------------------------------------------------------


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def card() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.machine()})"


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "unsloth"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


class Skip(Exception):
    """A part that cannot run here (no CUDA, no bitsandbytes, no unsloth): reported, not failed."""


def words(rng: random.Random, n: int, vocab: int) -> str:
    """n synthetic tokens, one word each (ids 1 .. vocab-4: clear of unk and the special ids)."""
    return " ".join(f"t{rng.randrange(1, vocab - 3)}" for _ in range(n))


# --- the model --------------------------------------------------------------------------------


def llama_config(size):
    """A random-weight Llama of `size` (any object with vocab, hidden, intermediate, layers,
    heads, kv_heads and, optionally, tied)."""
    from transformers import LlamaConfig

    v = size.vocab
    return LlamaConfig(vocab_size=v, hidden_size=size.hidden, intermediate_size=size.intermediate,
                       num_hidden_layers=size.layers, num_attention_heads=size.heads,
                       num_key_value_heads=size.kv_heads, rope_theta=500000.0,
                       max_position_embeddings=8192, rms_norm_eps=1e-5, bos_token_id=v - 3,
                       eos_token_id=v - 2, pad_token_id=v - 1,
                       tie_word_embeddings=getattr(size, "tied", False))


def save_model(size: Size, model_dir: Path) -> dict:
    """Random bf16 model (GPU when present) + word-level tokenizer → model_dir."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    if (model_dir / "config.json").is_file() and (model_dir / "tokenizer.json").is_file():
        return {"note": "already saved"}
    t0 = time.perf_counter()
    cfg = llama_config(size)
    device = "cuda" if _cuda() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    with torch.no_grad():  # random weights must not stop early: the EOS logit is always 0
        model.lm_head.weight[cfg.eos_token_id].zero_()
    model.generation_config.eos_token_id = cfg.eos_token_id
    model.generation_config.pad_token_id = cfg.pad_token_id
    model.save_pretrained(model_dir, safe_serialization=True)
    v = size.vocab
    vocab = {f"t{i}": i for i in range(v - 3)}
    vocab.update({"<bos>": v - 3, "<eos>": v - 2, "<pad>": v - 1})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                            pad_token="<pad>").save_pretrained(model_dir)
    del model
    return {"save_s": round(time.perf_counter() - t0, 1)}


def load_model(model_dir: Path, four_bit: bool = False):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if _cuda() else "cpu"
    kw = {"dtype": torch.bfloat16 if device == "cuda" else torch.float32, "attn_implementation": "sdpa"}
    if four_bit:
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                       bnb_4bit_compute_dtype=torch.bfloat16)
        kw["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, **kw)
    if not four_bit:
        model.to(device)
    return model.eval(), AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


# --- rollout ----------------------------------------------------------------------------------


def part_anchor_gen(size: Size, model_dir: Path, args) -> list[dict]:
    """The anchors in this process: plain generate (dynamic cache) and static cache compiled."""
    import torch

    model, _ = load_model(model_dir)
    cuda = _cuda()
    out = []
    static_label = "static cache compiled" if cuda else "static cache"
    for label, static in (("dynamic cache", False), (static_label, True)):
        for bs in size.concurrency:
            ids = torch.randint(1, size.vocab - 3, (bs, size.prompt), device=model.device)
            kw = dict(max_new_tokens=size.new, min_new_tokens=size.new, do_sample=False,
                      pad_token_id=size.vocab - 1, eos_token_id=size.vocab - 2)
            if static:
                kw["cache_implementation"] = "static"
            # As the anchor script: two full runs compile and record the static cache's graphs.
            dt = _time_generate(model, ids, kw, full_warmups=2 if static else 0)
            out.append(_anchor_row(f"anchor: hf generate {label}, batch {bs}", bs, size, dt))
    return out


def _time_generate(model, ids, kw: dict, full_warmups: int = 0) -> float:
    """Seconds of one timed generate, after `full_warmups` full runs (or one short run)."""
    import torch

    reset_peak()
    with torch.inference_mode():
        for _ in range(full_warmups):
            model.generate(ids, **kw)
        if not full_warmups:
            model.generate(ids, **{**kw, "max_new_tokens": 8, "min_new_tokens": 8})
        sync()
        t = time.perf_counter()
        model.generate(ids, **kw)
        sync()
        return time.perf_counter() - t


def _anchor_row(name: str, rows: int, size: Size, dt: float) -> dict:
    return dict(name=name, tokens_per_s=rows * size.new / dt, peak_gib=peak_gib(), wall_s=dt, rows=rows,
                prompt=size.prompt, new=size.new)


def part_anchor_unsloth_gen(size: Size, model_dir: Path) -> list[dict]:
    """The third rollout anchor: unsloth's inference
    mode and its generate, greedy, at each batch size, as the anchor script runs it."""
    if not (_cuda() and has_module("unsloth") and has_module("bitsandbytes")):
        raise Skip("the unsloth anchor needs CUDA, unsloth and bitsandbytes")
    import unsloth  # noqa: F401  (before transformers)
    import torch
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(str(model_dir), max_seq_length=size.prompt + size.new + 64,
                                                 dtype=torch.bfloat16, load_in_4bit=False,
                                                 local_files_only=True)
    FastLanguageModel.for_inference(model)
    out = []
    for bs in size.concurrency:
        ids = torch.randint(1, size.vocab - 3, (bs, size.prompt), device="cuda")
        kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=size.new, min_new_tokens=size.new,
                  do_sample=False, pad_token_id=size.vocab - 1, eos_token_id=size.vocab - 2)
        dt = _time_generate(model, ids, kw)
        out.append(_anchor_row(f"anchor: unsloth for_inference generate, batch {bs}", bs, size, dt))
    return out


def _workloads(size: Size) -> list[tuple[str, int, int]]:
    """(label, concurrent requests, samples per request)."""
    return [(f"{c} concurrent", c, 1) for c in size.concurrency] + [
        (f"{size.k_requests} concurrent x K={size.k}", size.k_requests, size.k)]


def _run_concurrently(backend, requests) -> tuple[float, int]:
    """Submit every request from its own thread at one instant; (wall seconds, generated tokens)."""
    results, errors = [None] * len(requests), []
    barrier = threading.Barrier(len(requests) + 1)

    def run(i):
        barrier.wait()
        try:
            results[i] = backend.generate(requests[i])
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    sync()
    dt = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return dt, sum(c.n_tokens for g in results for c in g.completions)


def part_backend(size: Size, model_dir: Path, args, part: str) -> list[dict]:
    """HFBackend under one engine option, at each workload; warm-up at the same shape first."""
    from store.records import GenRequest
    from agent.llm.engine import EngineOptions
    from agent.llm.hf import HFBackend

    cuda = _cuda()
    four_bit = part.startswith("backend-4bit")
    if four_bit and not (cuda and has_module("bitsandbytes")):
        raise Skip("4-bit needs CUDA and bitsandbytes")
    spec = ENGINES[part]
    opts = EngineOptions.parse(spec)
    if opts.compile and not cuda:  # CPU smoke: the static cache alone (CPU compile is for tests)
        opts = EngineOptions(cache="static")
    if opts.kind == "continuous" and not cuda:  # no GPU memory to size the paged cache from
        opts = EngineOptions(kind="continuous", cb_block_size=16, cb_num_blocks=256,
                             cb_max_batch_tokens=1024, seed=0)
    rows_max = max(max(size.concurrency), size.k * size.k_requests)
    reset_peak()
    backend = HFBackend(str(model_dir), dtype="bf16" if cuda else "fp32", load_in_4bit=four_bit,
                        max_batch=rows_max, batch_wait_s=0.05, chat=False, engine=opts)
    rng = random.Random(0)
    out = []
    try:
        for label, conc, k in _workloads(size):
            def batch(new):
                return [GenRequest(words(rng, size.prompt, size.vocab), n=k, max_new_tokens=new)
                        for _ in range(conc)]

            # Warm-up at this batch shape; a few new tokens suffice: the static cache length is
            # rounded up (engine.py) so it is the same shape that the timed run compiles for.
            _run_concurrently(backend, batch(min(size.new, 8)))
            calls0 = backend.generate_calls
            reset_peak()
            # Best of two timed runs: on the H100 the first full-length run at a new shape
            # once took 3.4x longer than the same 32 rows as 8 x K=4 right after it.
            runs = 2
            before = _timings(backend)
            timed = [_run_concurrently(backend, batch(size.new)) for _ in range(runs)]
            dt, ntok = min(timed)
            split = _split(before, _timings(backend), runs, sum(n for _, n in timed))
            name = f"rollout: HFBackend{' 4-bit' if four_bit else ''} [{opts.label()}], {label}"
            rows = conc * k
            base_rows = min(size.concurrency, key=lambda c: abs(c - rows))
            out.append(dict(name=name, tokens_per_s=ntok / dt, peak_gib=peak_gib(), wall_s=dt,
                            tokens=ntok, rows=rows, generate_calls=(backend.generate_calls - calls0) // runs,
                            engine=opts.label(), prompt=size.prompt, new=size.new, **_engine_stats(backend),
                            **split,
                            baseline=f"anchor: hf generate dynamic cache, batch {base_rows}"))
    finally:
        backend.close()
    return out


def _timings(backend) -> dict | None:
    g = getattr(backend, "_graph", None)
    return None if g is None else dict(g.timings)


def _split(before: dict | None, after: dict | None, runs: int, tokens: int) -> dict:
    """Graph engine: the timed runs' prefill and decode seconds, and decode-phase tokens/s
    (new tokens over decode time alone: the figure the bandwidth bound is stated for)."""
    if before is None or after is None:
        return {}
    decode, prefill = after["decode_s"] - before["decode_s"], after["prefill_s"] - before["prefill_s"]
    return {"prefill_s_per_run": round(prefill / runs, 4), "decode_s_per_run": round(decode / runs, 4),
            "decode_phase_tokens_per_s": round(tokens / decode, 1) if decode > 0 else None}


def _engine_stats(backend) -> dict:
    """For the graph engine: how many decode steps were captured, and why any capture failed."""
    g = getattr(backend, "_graph", None)
    if g is None:
        return {}
    return {"graph_captures": g.captures, "capture_failures": g.capture_failures[:3],
            "fused_step": None if g.fused is None else ("compiled" if g.fused.compiled else "eager"),
            "prefill_fallback": None if g.fused is None else g.fused.prompt_fallback,
            "engine_timings": {k: round(v, 4) for k, v in g.timings.items()}}


# --- training ---------------------------------------------------------------------------------


def step_examples(size: Size):
    """Step-shaped examples: varying prompt and completion lengths, synthetic words."""
    from trainer.examples import Example

    rng = random.Random(1)
    return [Example(step_id=None, prompt=words(rng, rng.randint(*size.train_prompt), size.vocab),
                    completion=words(rng, rng.randint(*size.train_completion), size.vocab))
            for _ in range(size.train_examples)]


def part_train_project(size: Size, model_dir: Path, args, part: str) -> list[dict]:
    """trainer/sft.py train(): the project's trainer, timed from its own log callbacks."""
    cuda = _cuda()
    unsloth = part == "train-project-unsloth"
    qlora = part == "train-project-qlora"
    if unsloth and not (cuda and has_module("unsloth") and has_module("bitsandbytes")):
        raise Skip("unsloth path needs CUDA, unsloth and bitsandbytes")
    if qlora and not (cuda and has_module("bitsandbytes")):
        raise Skip("QLoRA needs CUDA and bitsandbytes")
    from trainer.config import TrainConfig
    from trainer.sft import train

    stamps: list[tuple[float, int, int]] = []  # (time, step, tokens seen)

    def on_log(d):
        if "loss" in d:
            stamps.append((time.perf_counter(), int(d["step"]), int(d.get("num_input_tokens_seen", 0))))

    steps = size.train_steps + size.train_warmup
    with tempfile.TemporaryDirectory(prefix="gpu-perf-train-") as tmp:
        cfg = TrainConfig(base_model=str(model_dir), output_dir=str(Path(tmp) / "out"),
                          per_device_batch=size.train_batch, max_batch_tokens=size.train_batch_tokens,
                          seed=TRAIN_SEED, grad_accum=1, max_steps=steps,
                          warmup_steps=0, optim="adamw_torch", max_length=TRAIN_MAX_LENGTH, logging_steps=1,
                          use_unsloth=unsloth or ("auto" if qlora else False), load_in_4bit=qlora,
                          cpu=not cuda)
        result = train(step_examples(size), cfg, on_log=on_log)
    m = result.metrics
    timed = [s for s in stamps if s[1] > size.train_warmup]
    first = [s for s in stamps if s[1] == size.train_warmup]
    if first and timed and timed[-1][2] > first[0][2]:
        tps = (timed[-1][2] - first[0][2]) / (timed[-1][0] - first[0][0])
        how = f"steps {size.train_warmup + 1}-{timed[-1][1]} from log timestamps"
    else:
        tps, how = m["tokens_per_s"], "whole run (no per-step token counts logged)"
    label = "QLoRA " if qlora else ""
    base = ("train: raw QLoRA loop" if qlora else
            "train: raw unsloth loop" if unsloth else "train: raw HF + PEFT loop")
    # Evidence that the trainer ran the raw loops' batches: its token count and widest batch.
    from transformers import AutoTokenizer

    plan = _plan(_rows(AutoTokenizer.from_pretrained(model_dir, local_files_only=True), size), size, steps)
    same = (m["tokens"] == sum(len(r["input_ids"]) for b in plan for r in b)
            and m.get("max_padded_tokens") == max(_padded(b) for b in plan))
    return [dict(name=f"train: project train() {label}[{m.get('backend')}]", tokens_per_s=tps,
                 peak_gib=m.get("peak_gib"), timing=how, steps=m["steps"], tokens=m["tokens"],
                 runtime_s=m["runtime_s"], batch=size.train_batch, **_batch_fields(size, plan),
                 max_padded_tokens=m.get("max_padded_tokens"), batches_match_plan=same, baseline=base)]


def _rows(tok, size: Size) -> list[dict]:
    """The examples tokenized as the project's build_dataset does (input_ids, completion_mask)."""
    from trainer.examples import tokenize_example

    return [tokenize_example(tok, e, TRAIN_MAX_LENGTH) for e in step_examples(size)]


def _plan(rows: list[dict], size: Size, steps: int) -> list[list[dict]]:
    """The first `steps` batches (grad_accum 1) that train() takes with max_batch_tokens:
    the same planning function, seed and per-epoch reshuffle as its sampler."""
    from trainer.batching import token_budget_batches

    lengths = [len(r["input_ids"]) for r in rows]
    out: list[list[dict]] = []
    epoch = 0
    while len(out) < steps:
        out += [[rows[i] for i in b] for b in token_budget_batches(
            lengths, size.train_batch_tokens, size.train_batch, seed=TRAIN_SEED, epoch=epoch)]
        epoch += 1
    return out[:steps]


def _padded(batch: list[dict]) -> int:
    return len(batch) * max(len(r["input_ids"]) for r in batch)


def _batch_fields(size: Size, plan: list[list[dict]]) -> dict:
    return dict(batch_tokens=size.train_batch_tokens, batch_rows=[len(b) for b in plan],
                batch_padded_tokens=[_padded(b) for b in plan])


def _batches(tok, size: Size, steps: int):
    """The project's batches (`_plan`), right-padded, labels on the completion only."""
    import torch

    pad = tok.pad_token_id
    plan = _plan(_rows(tok, size), size, steps)
    out = []
    for chunk in plan:
        width = max(len(r["input_ids"]) for r in chunk)
        ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in chunk])
        att = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in chunk])
        lab = torch.tensor([[t if m else -100 for t, m in zip(r["input_ids"], r["completion_mask"])]
                            + [-100] * (width - len(r["input_ids"])) for r in chunk])
        out.append((ids, att, lab, int(att.sum())))
    return out, plan


def _raw_loop(model, tok, size: Size) -> tuple[float, float | None, str, list]:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4)
    device = next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cpu")
    batches, plan = _batches(tok, size, size.train_steps + size.train_warmup)
    model.train()
    timed_tokens, timed_s = 0, 0.0
    for step, (ids, att, lab, n) in enumerate(batches):
        sync()
        t = time.perf_counter()
        with autocast:
            loss = model(input_ids=ids.to(device), attention_mask=att.to(device), labels=lab.to(device)).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if step >= size.train_warmup:
            timed_tokens += n
            timed_s += time.perf_counter() - t
    steps = f"steps {size.train_warmup + 1}-{size.train_steps + size.train_warmup}"
    return timed_tokens / timed_s, peak_gib(), steps, plan


def part_train_raw(size: Size, model_dir: Path, args, part: str) -> list[dict]:
    """The baselines: a bare loop over the project's token-budget batches (`_plan`)."""
    cuda = _cuda()
    qlora = part == "train-raw-qlora"
    use_unsloth = part == "train-raw-unsloth" or (qlora and has_module("unsloth"))
    if use_unsloth and not (cuda and has_module("unsloth") and has_module("bitsandbytes")):
        raise Skip("raw unsloth loop needs CUDA, unsloth and bitsandbytes")
    if qlora and not (cuda and has_module("bitsandbytes")):
        raise Skip("QLoRA needs CUDA and bitsandbytes")
    reset_peak()
    if use_unsloth:
        import unsloth  # noqa: F401  (before transformers)
        import torch
        from unsloth import FastLanguageModel

        model, tok = FastLanguageModel.from_pretrained(str(model_dir), max_seq_length=TRAIN_MAX_LENGTH,
                                                       dtype=torch.bfloat16,
                                                       load_in_4bit=qlora, local_files_only=True)
        model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, lora_dropout=0,
                                                 target_modules=LORA_TARGETS, bias="none",
                                                 use_gradient_checkpointing="unsloth")
        what = "unsloth"
    else:
        from peft import LoraConfig, get_peft_model

        model, tok = load_model(model_dir, four_bit=qlora)
        if qlora:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0,
                                                 target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
        what = "HF + PEFT"
    tps, peak, how, plan = _raw_loop(model, tok, size)
    name = f"train: raw {'QLoRA' if qlora else what} loop"
    return [dict(name=name, tokens_per_s=tps, peak_gib=peak, timing=how, batch=size.train_batch,
                 **_batch_fields(size, plan), loop=what, baseline=None)]


# --- the driver -----------------------------------------------------------------------------


def run_part(part: str, size: Size, model_dir: Path, args) -> list[dict]:
    if part == "save":
        return [dict(name="setup: random model saved", tokens_per_s=None, peak_gib=None,
                     **save_model(size, model_dir), baseline=None)]
    if not (model_dir / "config.json").is_file():
        raise Skip(f"no model in {model_dir}: run the 'save' part first")
    if part == "anchor-gen":
        return part_anchor_gen(size, model_dir, args)
    if part == "anchor-unsloth-gen":
        return part_anchor_unsloth_gen(size, model_dir)
    if part.startswith("backend-"):
        return part_backend(size, model_dir, args, part)
    if part.startswith("train-project-"):
        return part_train_project(size, model_dir, args, part)
    if part.startswith("train-raw-"):
        return part_train_raw(size, model_dir, args, part)
    raise ValueError(part)


def child(args) -> int:
    """One part, in this process; result lines (JSON) appended to args.jsonl."""
    size = TINY if args.tiny else FULL
    from benchmarks.provenance import commit

    common = {"card": card(), "versions": versions(), "size": "tiny" if args.tiny else "full",
              "part": args.child, "provenance": {"commit": commit()}}
    try:
        rows = run_part(args.child, size, Path(args.model_dir), args)
    except Skip as s:
        rows = [{"name": f"skipped: {args.child}", "skipped": str(s)}]
    with open(args.jsonl, "a") as f:
        for r in rows:
            r = {**common, "baseline": None, **r}
            f.write(json.dumps(r) + "\n")
            print(json.dumps({k: v for k, v in r.items() if k != "versions"}), flush=True)
    return 0


def merge(out: Path, new: list[dict]) -> list[dict]:
    """Merge by (name, card) (a rerun replaces), then fill each baseline's tokens/s from the same card."""
    old = json.loads(out.read_text()) if out.is_file() else []
    by = {(r["name"], r.get("card")): r for r in old}  # figures from other cards stay
    for r in new:
        by[(r["name"], r.get("card"))] = r
    rows = list(by.values())
    index = {(r["name"], r.get("card")): r for r in rows}
    for r in rows:
        b = index.get((r.get("baseline"), r.get("card")))
        r["baseline_tokens_per_s"] = b["tokens_per_s"] if b else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def _fmt(x, digits=0):
    return "–" if x is None else f"{x:,.{digits}f}"


def table(rows: list[dict], skipped: list[dict]) -> str:
    lines = ["| measurement | card | tokens/s | peak GiB | baseline | baseline tokens/s | × baseline |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        t, b = r.get("tokens_per_s"), r.get("baseline_tokens_per_s")
        ratio = f"{t / b:.2f}" if t and b else "–"
        lines.append(f"| {r['name']} | {r.get('card')} | {_fmt(t)} | {_fmt(r.get('peak_gib'), 1)} | "
                     f"{r.get('baseline') or '–'} | {_fmt(b)} | {ratio} |")
    for s in skipped:
        lines.append(f"| {s['name']} | {s.get('card')} | – | – | {s['skipped']} | – | – |")
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[str]:
    """The performance targets, each met / missed / not measured (full size on CUDA only)."""
    full = [r for r in rows if r.get("size") == "full" and not r.get("card", "").startswith("cpu")]
    if not full:
        return ["targets: not applicable (no full-size GPU measurement in this file)"]
    cards = sorted({r["card"] for r in full})
    if len(cards) > 1:  # one verdict list per card: figures from different cards never mix
        return [line for c in cards for line in [f"{c}:"] + targets([r for r in full if r["card"] == c])]
    get = {r["name"]: r for r in full}
    out = []

    def check(label, value, ok):
        out.append(f"- {label}: " + ("not measured" if value is None else f"{value} → {'MET' if ok else 'MISSED'}"))

    for eng in ("plain", "static+compile", "share-prefix", "continuous", "graph"):
        for c, goal in ((32, 2800), (1, 100)):
            r = get.get(f"rollout: HFBackend [{eng}], {c} concurrent")
            v = r and r["tokens_per_s"]
            check(f"rollout [{eng}] {c} concurrent ≥ {goal} tok/s", v and round(v), bool(v and v >= goal))
    p, u = get.get("train: project train() [unsloth]"), get.get("train: raw unsloth loop")
    ratio = p and u and round(p["tokens_per_s"] / u["tokens_per_s"], 2)
    check("trainer ≥ 0.9× raw unsloth tok/s", ratio, bool(ratio and ratio >= 0.9))
    check("trainer peak ≤ 18 GiB (bf16 LoRA)", p and p["peak_gib"], bool(p and p["peak_gib"] <= 18))
    q = next((r for n, r in get.items() if n.startswith("train: project train() QLoRA")), None)
    check("QLoRA training peak ≤ 22 GiB", q and q["peak_gib"], bool(q and q["peak_gib"] <= 22))
    r4 = [r for n, r in get.items() if n.startswith("rollout: HFBackend 4-bit")]
    worst = max((r["peak_gib"] for r in r4), default=None)
    check("4-bit rollout peak ≤ 22 GiB", worst, bool(worst is not None and worst <= 22))
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny model and workload: a CPU smoke run")
    p.add_argument("--parts", default="all", help=f"comma-separated, or 'all': {', '.join(PARTS)}")
    p.add_argument("--model-dir", default=None, help="default: runs/gpu_perf/<size>-model")
    p.add_argument("--out", default=None, help="default: benchmarks/results/gpu_perf.json "
                   "(--tiny: runs/gpu_perf/gpu_perf_tiny.json, never the real results)")
    p.add_argument("--copy-to", default=None, help="also copy --out into this folder after every part "
                   "(the device tool's $OUT, so a call cut off by its time limit keeps what it measured)")
    p.add_argument("--part-timeout", type=float, default=540.0, help="seconds per part")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--jsonl", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    size_name = "tiny" if args.tiny else "full"
    args.model_dir = args.model_dir or str(ROOT / "runs" / "gpu_perf" / f"{size_name}-model")
    args.out = args.out or str(ROOT / ("runs/gpu_perf/gpu_perf_tiny.json" if args.tiny
                                       else "benchmarks/results/gpu_perf.json"))
    parts = list(PARTS) if args.parts == "all" else [x.strip() for x in args.parts.split(",") if x.strip()]
    bad = [x for x in parts if x not in PARTS]
    if bad and not args.child:
        p.error(f"unknown part(s) {', '.join(bad)}; choose from {', '.join(PARTS)}")
    args.part_list = parts
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.child:
        return child(args)
    new, skipped, failed, merged = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="gpu-perf-") as tmp:
        for part in args.part_list:
            jsonl = Path(tmp) / f"{part}.jsonl"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", part, "--jsonl", str(jsonl),
                   "--model-dir", args.model_dir] + (["--tiny"] if args.tiny else [])
            t0 = time.perf_counter()
            print(f"## {part}: {PARTS[part]}", flush=True)
            try:
                rc = subprocess.run(cmd, cwd=ROOT, timeout=args.part_timeout).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
            rows = [json.loads(x) for x in jsonl.read_text().splitlines()] if jsonl.is_file() else []
            for r in rows:
                r["part_wall_s"] = round(time.perf_counter() - t0, 1)
                r["command"] = " ".join(["python", "benchmarks/gpu_perf.py"] + (["--tiny"] if args.tiny else [])
                                        + ["--parts", part])
            skipped += [r for r in rows if "skipped" in r]
            new += [r for r in rows if "skipped" not in r]
            if rc != 0:
                failed.append(f"{part} (exit {rc})")
            print(f"## {part}: {time.perf_counter() - t0:.1f} s, exit {rc}", flush=True)
            merged = merge(Path(args.out), [r for r in rows if "skipped" not in r])  # after every part
            if args.copy_to:
                Path(args.copy_to).mkdir(parents=True, exist_ok=True)
                (Path(args.copy_to) / Path(args.out).name).write_text(Path(args.out).read_text())
    print()
    print(table(merged if args.part_list else [], skipped))
    print()
    print("\n".join(targets(merged)))
    if failed:
        print(f"failed parts: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
