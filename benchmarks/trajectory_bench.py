"""Rollout speed on the agent's own workload: trajectories whose step prompts grow and repeat.

An agent's step prompt is most of the previous step's prompt plus what happened since, with
K samples a step; the fixed 512 + 128 shape of benchmarks/gpu_perf.py hides that. This
benchmark replays trajectory-shaped prompts through every rollout engine and beside raw
transformers anchors, on two architectures with random weights:

  llama3-8b     the Llama-3-8B architecture (bf16 on a GPU)
  smollm2-135m  SmolLM2-135M's (vocab 49152, hidden 576, 30 layers, 9 heads, 3 KV heads, tied)

The workload (benchmarks/workloads/trajectory_pocket.json, made by the `workload` command
from a real pocket store) keeps what the stored trajectories show: the step count, K per
step, the generated lengths, the instruction header every trajectory shares, and how much
of each step's prompt an earlier prompt of the trajectory already held. Its prompt lengths
are scaled to a web trajectory's, 600 -> 3,000 tokens over 6 steps. Prompts are drawn from
it deterministically (new tokens are fresh random ids), so every engine sees the same ones.

Each (model, engine) runs in its own child process, every concurrency level (1, 8, 32, 128
trajectories at once; each trajectory a thread stepping through its prompts) after one
untimed pass of the same workload (compiles, captures). Reported per run: generated tokens/s
end to end, step latency p50/p95, prompt tokens (per request and per row), prompt tokens
prefilled and recomputed (prefilled although the same prefix was computed before), peak
memory, and for the GPU the HBM bound (below). The fixed 512 + 128 shape at 32 rows is
re-measured by benchmarks/gpu_perf.py's own parts, in the same run.

HBM bound (decode only; prefill is compute-bound and left out, so the bound is optimistic):
    bound tokens/s = generated tokens / sum over decode steps of
                     (weight bytes + sum over active rows of context tokens x KV bytes a token)
                     / HBM bandwidth (3.35e12 B/s, H100 SXM)
with KV bytes a token = layers x 2 x KV heads x head dim x 2 (bf16), each row reading its own
context (the K samples of a prompt each hold a copy, as in every engine measured here). The
stored trajectories' steps generate few tokens (12-41) after long prompts, so prefill weighs
as much as decode: `roofline_tokens_per_s` adds the least prefill any engine must do (the
first-time prompt tokens x 2 FLOPs a layer weight, at 989 TFLOP/s dense bf16).

    python benchmarks/trajectory_bench.py --out $OUT/trajectory_bench.json   # GPU: everything
    python benchmarks/trajectory_bench.py --tiny                             # CPU smoke run
    bash benchmarks/device/trajectory.sh   # one device call: --plan device under a deadline
    python benchmarks/trajectory_bench.py workload --store runs.db --out FILE
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKLOAD = ROOT / "benchmarks" / "workloads" / "trajectory_pocket.json"
HBM_BYTES_PER_S = 3.35e12  # H100 SXM
BF16_FLOP_PER_S = 989e12  # H100 SXM, dense
TARGET_PROMPTS = (600, 3000)  # a web trajectory's first and last step prompt, in tokens
TARGET_STEPS = 6
HBM_FORMULA = ("bound tokens/s = generated tokens / sum over decode steps of (weight bytes + sum over "
               "active rows of context tokens x KV bytes a token) / 3.35e12 B/s; KV bytes a token = "
               "layers x 2 x KV heads x head dim x 2; decode only (prefill left out). roofline tokens/s "
               "adds the least prefill: first-time prompt tokens x 2 x layer weights / 989e12 FLOP/s")


# --- the workload ---------------------------------------------------------------------------


def _lcp(a, b) -> int:
    from agent.llm.prefix_cache import common_prefix

    return common_prefix(a, b)


def workload_from_store(db: str, tokenizer_dir: str | None = None) -> dict:
    """Per stored trajectory and step: kind, prompt tokens, K, generated tokens, and how many of
    the prompt's tokens an earlier step (same trajectory) or another trajectory had already."""
    from transformers import AutoTokenizer

    from agent.worlds.pocket.assets import pocket_assets
    from store.api import Store

    store = Store(db)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir or str(pocket_assets().model_dir))
    trajs = [t for t in store.trajectories(status="finished")]
    real, firsts = [], []
    for t in trajs:
        steps = sorted(store.trajectory(t.id).steps, key=lambda s: s.idx)
        ids = [tok(s.prompt, add_special_tokens=False)["input_ids"] for s in steps]
        rows = []
        for i, (s, p) in enumerate(zip(steps, ids)):
            rows.append({"kind": s.kind, "prompt_tokens": len(p), "k": len(s.samples),
                         "sample_tokens": [x.n_tokens for x in s.samples],
                         "shared_with_earlier_step": max((_lcp(p, q) for q in ids[:i]), default=0)})
        real.append(rows)
        firsts.append(ids)
    for i, ids in enumerate(firsts):  # the instruction text other trajectories share
        for j, p in enumerate(ids):
            others = [q for k, o in enumerate(firsts) if k != i for q in o]
            real[i][j]["shared_with_other_trajectories"] = max((_lcp(p, q) for q in others), default=0)
    if not real:
        raise ValueError(f"no finished trajectories in {db}")
    return {"source": {"store": Path(db).name, "trajectories": len(real), "tokenizer": "pocket model"
                       if tokenizer_dir is None else Path(tokenizer_dir).name},
            "real": real, "scaled": scale(real)}


def scale(real: list[list[dict]], steps: int = TARGET_STEPS, first: int = TARGET_PROMPTS[0],
          last: int = TARGET_PROMPTS[1]) -> dict:
    """The web-sized shape with the stored trajectories' proportions. Per step index: the step
    kind, K, generated tokens, and the share of the prompt an earlier prompt of the same kind in
    the trajectory began with; per kind: the share every trajectory has in common (its
    instructions), as a share of that kind's first prompt."""
    from collections import Counter

    def at(i, f):
        vals = [f(t[i]) for t in real if len(t) > i]
        return statistics.mean(vals) if vals else statistics.mean(f(t[-1]) for t in real)

    lengths = [round(first + (last - first) * i / max(1, steps - 1)) for i in range(steps)]
    kinds = []
    for i in range(steps):
        seen = Counter(t[i]["kind"] for t in real if len(t) > i) or Counter(t[-1]["kind"] for t in real)
        kinds.append(seen.most_common(1)[0][0])
    header = {}
    for kind in dict.fromkeys(kinds):
        xs = [s["shared_with_other_trajectories"] / max(1, s["prompt_tokens"])
              for t in real for s in t if s["kind"] == kind]
        header[kind] = round(statistics.mean(xs), 3) if xs else 0.0
    return {"prompt_tokens": lengths, "kind": kinds,
            "k": [max(1, round(at(i, lambda s: s["k"]))) for i in range(steps)],
            "new_tokens": [max(1, round(at(i, lambda s: statistics.mean(s["sample_tokens"] or [1]))))
                           for i in range(steps)],
            "seen_fraction": [round(at(i, lambda s: s["shared_with_earlier_step"] / max(1, s["prompt_tokens"])), 3)
                              for i in range(steps)],
            "header_fraction": header}


@dataclass
class Step:
    ids: list  # prompt token ids
    k: int
    new: int


def trajectories(shape: dict, n: int, vocab: int, seed: int = 0) -> list[list[Step]]:
    """n trajectories of the shape. A step begins with the kind's instructions (common to every
    trajectory), or, when the trajectory had a step of its kind before, with the seen share of
    that step's prompt (never all of it); fresh tokens make up the rest."""
    rng = random.Random(seed)
    draw = lambda m: [rng.randrange(1, vocab - 3) for _ in range(m)]  # noqa: E731 (clear of specials)
    lengths, kinds = shape["prompt_tokens"], shape["kind"]
    headers = {}
    for i, kind in enumerate(kinds):  # instructions sized on the kind's first prompt
        headers.setdefault(kind, draw(round(shape["header_fraction"][kind] * lengths[i])))
    out = []
    for _ in range(n):
        steps, last_of = [], {}
        for i, (length, kind) in enumerate(zip(lengths, kinds)):
            head = headers[kind]
            if kind in last_of:
                before = last_of[kind]
                keep = min(max(round(shape["seen_fraction"][i] * length), len(head)), len(before) - 1)
                prompt = before[:keep]
            else:
                prompt = head[:length - 1]
            prompt = prompt + draw(length - len(prompt))
            last_of[kind] = prompt
            steps.append(Step(prompt, shape["k"][i], shape["new_tokens"][i]))
        out.append(steps)
    return out


def first_time_tokens(trajs: list[list[Step]]) -> int:
    """Prompt tokens no earlier prompt (any trajectory, any step before) began with: the least
    any engine must prefill. Steps are taken in step order across trajectories."""
    from agent.llm.prefix_cache import PrefixCache

    seen = PrefixCache(budget_bytes=0)
    total = 0
    for i in range(max(len(t) for t in trajs)):
        for t in trajs:
            if i < len(t):
                total += len(t[i].ids) - seen.match(t[i].ids).seen
                seen.insert(t[i].ids, None)
    return total


# --- models ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arch:
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    tied: bool


ARCHS = {
    "llama3-8b": Arch(128256, 4096, 14336, 32, 32, 8, False),
    "smollm2-135m": Arch(49152, 576, 1536, 30, 9, 3, True),
}
TINY_ARCHS = {"llama3-8b": Arch(512, 64, 128, 2, 4, 2, False),
              "smollm2-135m": Arch(512, 48, 96, 2, 3, 1, True)}


def config(arch: Arch):
    from benchmarks.gpu_perf import llama_config

    return llama_config(arch)


def build(arch: Arch):
    """(tokenizer, random model) in memory: bf16 on a GPU. The EOS logit row is zeroed so random
    weights (practically) never stop early; decode lengths are the workload's."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    cfg = config(arch)
    cuda = torch.cuda.is_available()
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if cuda else torch.float32,
                                                 attn_implementation="sdpa")
    with torch.no_grad():
        model.lm_head.weight[cfg.eos_token_id].zero_()
    model.generation_config.eos_token_id = cfg.eos_token_id
    model.generation_config.pad_token_id = cfg.pad_token_id
    v = arch.vocab
    vocab = {f"t{i}": i for i in range(v - 3)}
    vocab.update({"<bos>": v - 3, "<eos>": v - 2, "<pad>": v - 1})
    wl = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    wl.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=wl, bos_token="<bos>", eos_token="<eos>",
                                  pad_token="<pad>")
    return tok, model.eval()


def text_of(ids) -> str:
    """Prompt text the word-level tokenizer maps back to exactly these ids (after the BOS)."""
    return " " + " ".join(f"t{i}" for i in ids)


# --- one (model, engine) in a child process -----------------------------------------------------

ENGINES = {  # name -> HFBackend engine spec, or a raw transformers anchor
    "graph": "graph", "graph+no-prefix-cache": "graph+no-prefix-cache", "plain": "plain",
    "static+compile": "static+compile", "share-prefix": "share-prefix", "continuous": "continuous",
    "anchor-generate-dynamic": None, "anchor-generate-static-compile": None,
    "anchor-continuous": None,
}


def _peak_reset():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return round(torch.cuda.max_memory_allocated() / 2**30, 2)
    from trainer.stage_stats import peak_rss_bytes

    rss = peak_rss_bytes()
    return None if rss is None else round(rss / 2**30, 2)


def kv_bytes_per_token(arch: Arch, dtype_bytes: int = 2) -> int:
    return arch.layers * 2 * arch.kv_heads * (arch.hidden // arch.heads) * dtype_bytes


def weight_bytes(arch: Arch, dtype_bytes: int = 2) -> int:
    h, i = arch.hidden, arch.intermediate
    d = h // arch.heads
    layer = h * (arch.heads * d) * 2 + h * (arch.kv_heads * d) * 2 + 3 * h * i + 2 * h
    emb = arch.vocab * h * (1 if arch.tied else 2)
    return (arch.layers * layer + emb + h) * dtype_bytes


def hbm_bound(arch: Arch, trajs: list[list[Step]], max_rows: int) -> dict:
    """The decode-only HBM bound of the module docstring, for lock-step batches of at most
    `max_rows` rows (the concurrent trajectories' step i, K rows each)."""
    wb, kvb = weight_bytes(arch), kv_bytes_per_token(arch)
    seconds, tokens = 0.0, 0
    for i in range(max(len(t) for t in trajs)):
        rows = [(len(t[i].ids), t[i].new) for t in trajs if i < len(t) for _ in range(t[i].k)]
        for start in range(0, len(rows), max_rows):
            batch = rows[start:start + max_rows]
            for step in range(max(n for _, n in batch)):
                live = [(p + step) for p, n in batch if step < n]
                seconds += (wb + sum(live) * kvb) / HBM_BYTES_PER_S
                tokens += len(live)
    # With the least prefill any engine must do (the first-time prompt tokens, at the card's
    # dense bf16 peak, 2 FLOPs a weight a token) added: where the workload is prefill-bound.
    layer_weights = wb / 2 - arch.vocab * arch.hidden * (1 if arch.tied else 2)  # no embeddings, no head
    prefill = first_time_tokens(trajs) * 2 * layer_weights / BF16_FLOP_PER_S
    return {"hbm_bound_tokens_per_s": round(tokens / seconds, 1) if seconds else None,
            "roofline_tokens_per_s": round(tokens / (seconds + prefill), 1) if seconds else None,
            "decode_bound_s": round(seconds, 3), "prefill_bound_s": round(prefill, 3),
            "weight_bytes": wb, "kv_bytes_per_token": kvb,
            "hbm_bound_formula": HBM_FORMULA}


def _replay_backend(backend, trajs: list[list[Step]]) -> dict:
    """Every trajectory in its own thread, its steps in order; per-step latencies and tokens."""
    from store.records import GenRequest

    latencies, tokens, errors = [], [0], []
    lock = threading.Lock()
    barrier = threading.Barrier(len(trajs) + 1)

    def run(steps):
        barrier.wait()
        try:
            for s in steps:
                t0 = time.perf_counter()
                gen = backend.generate(GenRequest(text_of(s.ids), n=s.k, max_new_tokens=s.new))
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    tokens[0] += sum(c.n_tokens for c in gen.completions)
        except Exception as e:  # noqa: BLE001 -- reported, the other threads finish
            errors.append(e)

    threads = [threading.Thread(target=run, args=(t,)) for t in trajs]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return {"wall_s": wall, "generated_tokens": tokens[0], "latencies": latencies}


def _anchor_batches(model, tok, trajs, engine: str, cap: list) -> dict:
    """Raw transformers, lock-step: step i of every trajectory as one batch of K rows a prompt
    (at most max_rows rows a call), through generate (dynamic or static+compile) or continuous
    batching. Latency of a step = its batch's wall time. `cap[0]` rows a call, halved for good
    (the warm-up pass finds it) when a call runs out of GPU memory."""
    import torch

    max_rows = cap[0]
    latencies, tokens = [], 0
    pad, eos = tok.pad_token_id, tok.eos_token_id
    t_all = time.perf_counter()
    for i in range(max(len(t) for t in trajs)):
        reqs = [t[i] for t in trajs if i < len(t)]
        rows = [([tok.bos_token_id] + s.ids, s.new, s.k) for s in reqs for _ in range(s.k)]
        t0 = time.perf_counter()
        start = 0
        while start < len(rows):
            chunk = rows[start:start + max_rows]
            try:
                tokens += _anchor_call(model, chunk, engine, pad, eos)
            except torch.OutOfMemoryError:  # generate holds every row's whole prompt: fewer rows a call
                if max_rows == 1:
                    raise
                torch.cuda.empty_cache()
                max_rows = cap[0] = max_rows // 2
                continue
            start += len(chunk)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        latencies += [time.perf_counter() - t0] * len(reqs)
    return {"wall_s": time.perf_counter() - t_all, "generated_tokens": tokens, "latencies": latencies,
            "rows_a_call": max_rows}


def _anchor_call(model, chunk, engine: str, pad: int, eos: int) -> int:
    import torch

    from agent.llm.engine import left_pad

    new = max(n for _, n, _ in chunk)
    sample = any(k > 1 for _, _, k in chunk)
    kw = dict(max_new_tokens=new, do_sample=sample, pad_token_id=pad, eos_token_id=eos)
    if sample:
        kw.update(temperature=0.5, top_k=0, top_p=1.0)
    if engine == "anchor-continuous":
        from transformers import GenerationConfig

        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        gc = GenerationConfig(**kw)
        cb = (ContinuousBatchingConfig() if torch.cuda.is_available() else  # CPU: no memory to size from
              ContinuousBatchingConfig(block_size=16, num_blocks=512, max_batch_tokens=2048))
        # One manager for the whole run (as a user after speed would keep it): it is built,
        # and its graphs captured, once, and keeps its prefix blocks between calls.
        out = model.generate_batch(inputs=[r for r, _, _ in chunk], generation_config=gc,
                                   continuous_batching_config=cb, progress_bar=False,
                                   persistent_manager=True)
        return sum(len(o.generated_tokens) for o in out.values())
    ids, mask = left_pad([r for r, _, _ in chunk], pad)
    ids, mask = ids.to(model.device), mask.to(model.device)
    if engine == "anchor-generate-static-compile":
        kw["cache_implementation"] = "static"
        if not torch.cuda.is_available():
            kw["disable_compile"] = True  # CPU smoke: the static cache alone
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, **kw)
    return int((out[:, ids.shape[1]:] != pad).sum())


def _prefilled(engine: str, trajs, stats: dict | None) -> int | None:
    """Prompt tokens the engine ran through the model: its own counter, else by its design
    (generate prefills every row; share-prefix every distinct prompt of a batch, taken as a
    step's prompts). None where the engine does not say (continuous batching's block sharing)."""
    if stats is not None:
        return stats["prefilled_tokens"]
    if engine in ("plain", "static+compile", "anchor-generate-dynamic", "anchor-generate-static-compile"):
        return sum(len(s.ids) * s.k for t in trajs for s in t)
    if engine == "share-prefix":
        return sum(len(s.ids) for t in trajs for s in t)
    return None


def measure(engine: str, arch_name: str, arch: Arch, trajs_all: dict, warm_all: dict | None,
            max_batch: int) -> list[dict]:
    """One child: load the model once, run each concurrency level: an untimed pass over
    `warm_all`'s trajectories (the same shapes, other tokens: nothing it caches helps the timed
    pass), then the timed pass."""
    import torch

    from agent.llm import hf

    tok, model = build(arch)
    spec = ENGINES[engine]
    backend = None
    cuda = torch.cuda.is_available()
    if spec is not None:
        from agent.llm.engine import EngineOptions

        opts = EngineOptions.parse(spec)
        if opts.compile and not cuda:
            opts = EngineOptions(cache="static")
        if opts.kind == "continuous" and not cuda:
            opts = EngineOptions(kind="continuous", cb_block_size=16, cb_num_blocks=512,
                                 cb_max_batch_tokens=2048, seed=0)
        hf._load = lambda *a, **k: (tok, model, "cuda" if cuda else "cpu",  # noqa: E731
                                    "bfloat16" if cuda else "float32")
        backend = hf.HFBackend("random:" + arch_name, max_batch=max_batch, batch_wait_s=0.02,
                               chat=False, engine=opts)
    out = []
    try:
        for conc, trajs in trajs_all.items():
            rows_cap = max_batch * max(s.k for t in trajs for s in t)
            anchor_cap = [rows_cap]

            def once(ts):
                if backend is not None:
                    return _replay_backend(backend, ts)
                return _anchor_batches(model, tok, ts, engine, anchor_cap)

            if warm_all:
                once(warm_all[conc])
            graph = None if backend is None else backend._graph
            if graph is not None:
                graph.prefix_stats = {k: 0 for k in graph.prefix_stats}
                graph.timings = {k: type(v)() for k, v in graph.timings.items()}
            _peak_reset()
            got = once(trajs)
            stats = backend.prefix_stats if backend is not None else None
            lat = sorted(got["latencies"])
            req_tokens = sum(len(s.ids) for t in trajs for s in t)
            prefilled = _prefilled(engine, trajs, stats)
            first = first_time_tokens(trajs)
            row = dict(model=arch_name, engine=engine, concurrency=conc,
                       tokens_per_s=round(got["generated_tokens"] / got["wall_s"], 1),
                       generated_tokens=got["generated_tokens"], wall_s=round(got["wall_s"], 3),
                       step_latency_p50_s=round(lat[len(lat) // 2], 4),
                       step_latency_p95_s=round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 4),
                       steps=len(lat), prompt_tokens=req_tokens,
                       prompt_tokens_rows=sum(len(s.ids) * s.k for t in trajs for s in t),
                       first_time_prompt_tokens=first, prefilled_prompt_tokens=prefilled,
                       recomputed_prompt_tokens=None if prefilled is None else max(0, prefilled - first),
                       peak_gib=_peak_gib(), max_batch_requests=max_batch,
                       **({"anchor_rows_a_call": got["rows_a_call"]} if "rows_a_call" in got else {}),
                       **({"engine_prefix_stats": stats} if stats else {}),
                       # where the graph engine's time went: slot set-up and capture, prefill
                       # (cached prefixes copied in, the rest computed), decode (of which
                       # remember_s: the batch's KV handed to the prefix cache)
                       **({"engine_timings": {k: round(v, 4) for k, v in graph.timings.items()}}
                          if graph is not None else {}))
            if row["recomputed_prompt_tokens"] is not None:
                row["recomputed_fraction"] = round(row["recomputed_prompt_tokens"] / req_tokens, 4)
            if cuda:
                row.update(hbm_bound(arch, trajs, rows_cap))
                b = row["hbm_bound_tokens_per_s"]
                row["fraction_of_hbm_bound"] = round(row["tokens_per_s"] / b, 3) if b else None
                roof = row["roofline_tokens_per_s"]
                row["fraction_of_roofline"] = round(row["tokens_per_s"] / roof, 3) if roof else None
            out.append(row)
            print(json.dumps(row), flush=True)
    finally:
        if backend is not None:
            backend.close()
    return out


# --- the driver -------------------------------------------------------------------------------

# The order parts run in: the targets' measurements first, so a run cut short keeps them.
PLAN = [
    ("llama3-8b", "graph", (32,)), ("llama3-8b", "anchor-generate-dynamic", (32,)),
    ("llama3-8b", "anchor-generate-static-compile", (32,)), ("llama3-8b", "anchor-continuous", (32,)),
    ("smollm2-135m", "graph", (128,)), ("smollm2-135m", "anchor-generate-dynamic", (128,)),
    ("smollm2-135m", "anchor-generate-static-compile", (128,)), ("smollm2-135m", "anchor-continuous", (128,)),
    ("fixed-512+128", "gpu_perf", ()),
    ("llama3-8b", "graph+no-prefix-cache", (32,)),
    ("llama3-8b", "graph", (1, 8, 128)), ("smollm2-135m", "graph", (1, 8, 32)),
    ("llama3-8b", "plain", (1, 8, 32)), ("llama3-8b", "static+compile", (8, 32)),
    ("llama3-8b", "continuous", (8, 32)), ("llama3-8b", "share-prefix", (8, 32)),
    ("smollm2-135m", "graph+no-prefix-cache", (128,)), ("smollm2-135m", "plain", (32, 128)),
    ("smollm2-135m", "static+compile", (128,)), ("smollm2-135m", "continuous", (128,)),
    ("llama3-8b", "anchor-generate-dynamic", (1, 8)), ("smollm2-135m", "anchor-generate-dynamic", (1, 8, 32)),
]
TINY_PLAN = [("llama3-8b", "graph", (1, 2)), ("llama3-8b", "graph+no-prefix-cache", (2,)),
             ("llama3-8b", "plain", (2,)), ("llama3-8b", "anchor-generate-dynamic", (2,)),
             ("smollm2-135m", "graph", (2,))]
# One device call: prefix reuse against the same engine without it, at the target sizes, then
# the transformers anchors and the fixed shape as the time allows (benchmarks/device/trajectory.sh).
DEVICE_PLAN = [
    ("llama3-8b", "graph", (32,)), ("llama3-8b", "graph+no-prefix-cache", (32,)),
    ("smollm2-135m", "graph", (128,)), ("smollm2-135m", "graph+no-prefix-cache", (128,)),
    ("llama3-8b", "anchor-generate-static-compile", (32,)),
    ("smollm2-135m", "anchor-generate-static-compile", (128,)),
    ("llama3-8b", "anchor-generate-dynamic", (32,)), ("smollm2-135m", "anchor-generate-dynamic", (128,)),
    ("fixed-512+128", "gpu_perf", ()),
    ("llama3-8b", "anchor-continuous", (32,)), ("smollm2-135m", "anchor-continuous", (128,)),
]
PLANS = {"full": PLAN, "device": DEVICE_PLAN}
TINY_CONCURRENCY = {1: 1, 8: 2, 32: 2, 128: 3}  # --tiny: a plan's levels at CPU size
MAX_BATCH = {"llama3-8b": 32, "smollm2-135m": 128}  # requests a batch: K=4 rows each fit one H100


def tiny_shape(shape: dict) -> dict:
    """The workload's proportions on a CPU-sized scale: 3 steps, 24 -> 60 tokens, few new tokens."""
    return {**shape, "prompt_tokens": [24, 42, 60], "k": shape["k"][:3], "kind": shape["kind"][:3],
            "new_tokens": [min(4, n) for n in shape["new_tokens"][:3]],
            "seen_fraction": shape["seen_fraction"][:3]}


def child(args) -> int:
    spec = json.loads(args.child)
    archs = TINY_ARCHS if args.tiny else ARCHS
    arch = archs[spec["model"]]
    shape = json.loads(Path(args.workload).read_text())["scaled"]
    if args.tiny:
        shape = tiny_shape(shape)
    # A seed per level and pass: no pass finds another's prompts cached.
    trajs = {c: trajectories(shape, c, arch.vocab, seed=2 * c) for c in spec["concurrency"]}
    warm = None if args.no_warmup else {c: trajectories(shape, c, arch.vocab, seed=2 * c + 1)
                                        for c in spec["concurrency"]}
    rows = measure(spec["engine"], spec["model"], arch, trajs, warm, MAX_BATCH[spec["model"]])
    with open(args.jsonl, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return 0


def run_fixed(args, tmp: Path, timeout_s: float) -> list[dict]:
    """The fixed 512 + 128 shape through benchmarks/gpu_perf.py's own parts (graph engine and the
    generate anchors), rows tagged as such."""
    out = tmp / "gpu_perf.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_perf.py"), "--parts",
           "save,anchor-gen,backend-graph", "--out", str(out), "--model-dir", str(tmp / "fixed-model"),
           "--part-timeout", str(min(args.part_timeout, timeout_s / 3))] + (["--tiny"] if args.tiny else [])
    try:
        subprocess.run(cmd, cwd=ROOT, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass  # the parts gpu_perf.py finished are in its file
    rows = json.loads(out.read_text()) if out.is_file() else []
    return [{**r, "model": "llama3-8b", "engine": "gpu_perf", "workload": "fixed 512+128"}
            for r in rows if r.get("tokens_per_s")]


def commit() -> str:
    """$RESTREACT_COMMIT first (a device copy's git state can be stale), else HEAD."""
    from benchmarks.provenance import commit as recorded

    return recorded() or "unknown"


def provenance(command: str) -> dict:
    """The results file's provenance block, as the other benchmarks write it."""
    import importlib.metadata as md
    import platform

    import torch

    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.machine()})"
    versions = {"python": platform.python_version()}
    for pkg in ("torch", "transformers"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {"commit": commit(), "card": card, "versions": versions, "command": command}


def targets(rows: list[dict]) -> list[str]:
    """The speed targets of docs/BENCHMARKS.md section 3, each MET / MISSED / not measured (GPU rows only)."""
    if not rows or provenance("")["card"].startswith("cpu"):
        return ["targets: not applicable on a CPU"]
    by = {(r["model"], r["engine"], r.get("concurrency")): r for r in rows}
    out = []

    def best_anchor(model, conc):
        got = [by[(model, e, conc)]["tokens_per_s"] for e in ENGINES
               if e.startswith("anchor-") and (model, e, conc) in by]
        return max(got) if got else None

    for model, conc in (("llama3-8b", 32), ("smollm2-135m", 128)):
        g, a = by.get((model, "graph", conc)), best_anchor(model, conc)
        ratio = g and a and round(g["tokens_per_s"] / a, 2)
        out.append(f"- {model} at {conc}: graph ≥ 3× best transformers mode: "
                   + ("not measured" if not ratio else f"{ratio}× → {'MET' if ratio >= 3 else 'MISSED'}"))
    g = by.get(("llama3-8b", "graph", 32))
    if g and g.get("fraction_of_hbm_bound") is not None:
        f = g["fraction_of_hbm_bound"]
        out.append(f"- llama3-8b at 32: ≥ 60% of the HBM bound ({g['hbm_bound_tokens_per_s']} tok/s): "
                   f"{f:.0%} → {'MET' if f >= 0.6 else 'MISSED'} (of the roofline with the least "
                   f"prefill, {g['roofline_tokens_per_s']} tok/s: {g['fraction_of_roofline']:.0%})")
    if g and g.get("recomputed_fraction") is not None:
        f = g["recomputed_fraction"]
        out.append(f"- llama3-8b at 32: recomputed prompt tokens ≤ 10%: {f:.1%} → {'MET' if f <= 0.1 else 'MISSED'}")
    return out


def side_by_side(rows: list[dict]) -> list[dict]:
    """The graph engine with its prefix cache against the same engine without, per model and
    concurrency measured both ways: end-to-end speed-up and prompt tokens prefilled."""
    by = {(r["model"], r["engine"], r.get("concurrency")): r for r in rows}
    out = []
    for (model, engine, conc), base in by.items():
        reuse = by.get((model, "graph", conc))
        if engine != "graph+no-prefix-cache" or reuse is None:
            continue
        out.append(dict(model=model, concurrency=conc,
                        speedup=round(reuse["tokens_per_s"] / base["tokens_per_s"], 2),
                        tokens_per_s=reuse["tokens_per_s"], tokens_per_s_without=base["tokens_per_s"],
                        prefilled_tokens=reuse["prefilled_prompt_tokens"],
                        prefilled_tokens_without=base["prefilled_prompt_tokens"],
                        step_latency_p50_s=reuse["step_latency_p50_s"],
                        step_latency_p50_s_without=base["step_latency_p50_s"]))
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "workload":
        p = argparse.ArgumentParser(description="Write a trajectory workload from a pocket store.")
        p.add_argument("--store", required=True, help="SQLite file (or URL) holding finished trajectories")
        p.add_argument("--out", default=str(WORKLOAD))
        p.add_argument("--tokenizer", default=None, help="default: the pocket model's")
        a = p.parse_args(argv[1:])
        if not Path(a.store).is_file():
            print(f"error: no store file {a.store}", file=sys.stderr)
            return 1
        try:
            wl = workload_from_store(a.store, a.tokenizer)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(wl, indent=1) + "\n")
        print(json.dumps(wl["scaled"]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny models and workload: a CPU smoke run")
    p.add_argument("--workload", default=str(WORKLOAD))
    out_default = (Path(os.environ["OUT"]) / "trajectory_bench.json" if os.environ.get("OUT")
                   else ROOT / "benchmarks" / "results" / "trajectory_bench.json")
    p.add_argument("--out", default=None, help=f"results JSON (default {out_default}; "
                   "--tiny: runs/trajectory_bench_tiny.json)")
    p.add_argument("--only", default=None, help="run only plan entries whose model, engine or "
                   "model/engine is in this comma-separated list (e.g. 'graph,smollm2-135m/plain')")
    p.add_argument("--budget-s", type=float, default=570.0, help="stop starting parts after this long")
    p.add_argument("--part-timeout", type=float, default=300.0)
    p.add_argument("--deadline-s", type=float, default=None, help="no part runs past this many "
                   "seconds from the start (its timeout shortened to fit; none started with < 20 s left)")
    p.add_argument("--plan", choices=sorted(PLANS), default="full", help="full: every engine and "
                   "level; device: prefix reuse against no reuse at the target sizes first, then anchors")
    p.add_argument("--no-warmup", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--jsonl", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.child:
        return child(args)
    if not Path(args.workload).is_file():
        print(f"error: no workload file {args.workload} (make one with the 'workload' command)", file=sys.stderr)
        return 1
    out = Path(args.out or (ROOT / "runs" / "trajectory_bench_tiny.json" if args.tiny else out_default))
    plan = PLANS[args.plan]
    if args.tiny:
        plan = TINY_PLAN if args.plan == "full" else [
            (m, e, tuple(sorted({TINY_CONCURRENCY.get(c, 2) for c in concs}))) for m, e, concs in plan]
    if args.only:
        keep = {x.strip() for x in args.only.split(",")}
        plan = [e for e in plan if e[0] in keep or e[1] in keep or f"{e[0]}/{e[1]}" in keep]
    wl = json.loads(Path(args.workload).read_text())
    result = {"provenance": provenance(" ".join(["python", "benchmarks/trajectory_bench.py"] + argv)),
              "workload": {"file": str(args.workload), "source": wl["source"],
              "scaled": tiny_shape(wl["scaled"]) if args.tiny else wl["scaled"]},
              "hbm_bound_formula": HBM_FORMULA, "rows": [], "not_run": [], "failed": []}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trajectory-bench-") as tmp:
        for model, engine, concs in plan:
            label = f"{model} {engine} {list(concs)}"
            elapsed = time.perf_counter() - t_start
            left = args.part_timeout if args.deadline_s is None else min(
                args.part_timeout, args.deadline_s - elapsed)
            if elapsed > args.budget_s or left < 20:
                result["not_run"].append(label)
                continue
            print(f"## {label}", flush=True)
            if engine == "gpu_perf":
                result["rows"] += run_fixed(args, Path(tmp), left)
            else:
                jsonl = Path(tmp) / f"{model}-{engine}.jsonl"
                spec = json.dumps({"model": model, "engine": engine, "concurrency": list(concs)})
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", spec, "--jsonl", str(jsonl),
                       "--workload", args.workload] + (["--tiny"] if args.tiny else []) + (
                       ["--no-warmup"] if args.no_warmup else [])
                try:
                    rc = subprocess.run(cmd, cwd=ROOT, timeout=left).returncode
                except subprocess.TimeoutExpired:
                    rc = "timeout"
                if jsonl.is_file():
                    result["rows"] += [json.loads(x) for x in jsonl.read_text().splitlines()]
                    jsonl.unlink()
                if rc != 0:
                    result["failed"].append(f"{label} (exit {rc})")
            result["targets"] = targets(result["rows"])
            result["prefix_reuse"] = side_by_side(result["rows"])
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1) + "\n")  # after every part
    result["targets"] = targets(result["rows"])
    result["prefix_reuse"] = side_by_side(result["rows"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")  # also when no part ran
    print(table(result["rows"]))
    print("\n".join(result["targets"] if result["rows"] else []))
    for r in result.get("prefix_reuse", []):
        print(f"- {r['model']} at {r['concurrency']}: prefix reuse {r['speedup']}× the engine without it "
              f"({r['prefilled_tokens']:,} against {r['prefilled_tokens_without']:,} prompt tokens prefilled)")
    for key in ("not_run", "failed"):
        if result[key]:
            print(f"{key}: {'; '.join(result[key])}")
    print(f"wrote {out}")
    return 1 if result["failed"] else 0


def table(rows: list[dict]) -> str:
    lines = ["| model | engine | conc | tok/s | p50 s | p95 s | recomputed | peak GiB | × HBM bound |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("workload") == "fixed 512+128":
            lines.append(f"| {r['model']} | {r['name']} | {r.get('rows', '')} | {r['tokens_per_s']:,.0f} "
                         f"| – | – | – | {r.get('peak_gib') or '–'} | – |")
            continue
        rec = r.get("recomputed_fraction")
        lines.append(f"| {r['model']} | {r['engine']} | {r['concurrency']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['step_latency_p50_s']} | {r['step_latency_p95_s']} | "
                     f"{'–' if rec is None else f'{rec:.1%}'} | {r.get('peak_gib') or '–'} | "
                     f"{r.get('fraction_of_hbm_bound') or '–'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
