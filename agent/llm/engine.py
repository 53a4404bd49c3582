"""Rollout engines for the local backend: how one batch of prompt rows becomes tokens.

`HFBackend` gathers concurrent requests into rows (K rows per request of K samples) and,
by default, answers them with one plain `model.generate` call on a dynamic KV cache. On a
GPU that path is bound by Python and kernel-launch overhead, far from the memory-bandwidth
bound (on an H100, 393 tok/s at 32 sequences where ~5,500 is possible: docs/BENCHMARKS.md
section 3). The options
here trade set-up cost for speed; every one keeps greedy outputs token-for-token equal to
the plain path (tests/test_engine.py checks it on a tiny model):

- `cache="static"` — generate on a pre-allocated `StaticCache` (transformers'
  `cache_implementation="static"`). Its length is rounded up to `cache_len_step` and, via
  `max_cache_len`, never shrinks between calls, so compiled graphs are reused.
- `compile=True` — with the static cache, transformers compiles the decode step itself
  (`torch.compile`, mode "reduce-overhead" = CUDA graphs). It does so only on CUDA unless
  `compile_everywhere` is set (CPU compile needs a C++ toolchain and is only for tests).
  Measured anchor: 102 → 1,386 tok/s (batch 1 / 32) against 9 / 314 for the plain path.
  A new batch size (rows) compiles again once; expect a warm-up per size.
- `share_prefix=True` — rows with the same prompt (the K samples of one step, or two
  trajectories asking the same thing) are prefilled ONCE: all but the last prompt token
  run through the model for the unique prompts, the KV cache is copied to every row, and
  `generate` continues from there. What is reused: prefill compute (for K=4 samples of a
  500-token prompt, 3 of 4 prefills). What is not: KV-cache memory (each row still holds
  its own copy) and prefixes shared only in part (left padding puts a shared system prompt
  at different columns per row). Note that `generate(num_return_sequences=K)` does NOT
  share the prefill in transformers 5.17: it repeats the input rows before the first
  forward pass (`_expand_inputs_for_generation`). Dynamic cache only.
- `kind="continuous"` — transformers' continuous batching (`init_continuous_batching`, a
  paged KV cache and its own scheduler thread): requests join and leave the running batch
  token by token instead of waiting for the slowest row of a `generate` call, and its
  block sharing reuses the KV blocks of identical prompt prefixes. One manager serves
  every sampling setting: it samples with per-request temperature, and greedy rows are
  sampled with top_k=1 (the argmax). Its own log-probabilities are of the processed
  distribution, so the raw log-probabilities the backend promises are recomputed by one
  teacher-forced pass (`rescore`) on a twin of the model that shares its weights but keeps
  ordinary SDPA attention (the manager switches the model to paged attention while it
  runs). Stop strings are applied after the fact (the text is the same; decoding does not
  end early at a stop string). Anchor: ~290 tok/s at 32 requests in 5.17, so it pays only
  when request arrivals are ragged; measure before choosing it.
- `kind="graph"` — the project's own decode loop (agent/llm/graph_engine.py): a persistent
  static cache per (rows, length) shape, the decode step captured once as a CUDA graph,
  sampling on the device, one prefill per distinct prompt, a host sync only every
  `check_every` steps. The fast path on a GPU; eager (same loop, no replay) on a CPU.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any, Sequence

KINDS = ("generate", "continuous", "graph")
CACHES = ("dynamic", "static")


@dataclass(frozen=True)
class EngineOptions:
    """How the local backend runs a batch. The default is the plain `generate` path."""

    kind: str = "generate"  # "generate" (one generate call per batch) or "continuous"
    cache: str = "dynamic"  # generate kind: "dynamic" or "static" KV cache
    compile: bool = False  # static cache: let transformers torch.compile the decode step
    compile_everywhere: bool = False  # compile on CPU too (tests only)
    share_prefix: bool = False  # one prefill per distinct prompt (dynamic cache only)
    # Static cache length rounded up to a multiple of this. Each graph-engine decode step reads
    # its whole cache, so finer is faster; coarser means fewer shapes to compile and capture.
    cache_len_step: int = 256
    cb_block_size: int = 256  # continuous: tokens per KV-cache block
    cb_num_blocks: int | None = None  # continuous: KV blocks (None = sized from free GPU memory)
    cb_max_batch_tokens: int | None = None  # continuous: tokens per forward (None = auto)
    cb_memory_fraction: float | None = None  # continuous: share of free GPU memory for the cache
    seed: int | None = None  # continuous: sampling seed (None = random)
    cuda_graphs: bool = True  # graph: capture the decode step as a CUDA graph (CUDA only)
    check_every: int = 8  # graph: decode steps between host-side stop checks
    gqa_decode: bool = True  # graph: decode attention reads K/V once per group (graph_engine.py)
    max_shapes: int = 4  # graph: (rows, cache length) shapes kept, each with its cache and graph
    # graph: the most memory one batch's cache and prefill may take; a larger batch runs as
    # several smaller ones (None: what the card has free; no limit on a CPU)
    batch_gib: float | None = None
    # graph: the most memory one prefill pass's activations may take; more prompts than fit
    # prefill in groups (None: 4 GiB on a GPU, no limit on a CPU)
    prefill_gib: float | None = None
    fused_decode: bool = True  # graph: Llama decode step with its element-wise work fused (fused_decode.py)
    compile_fused: bool = True  # graph: torch.compile those fused pieces (GPU only; eager on a CPU)
    pack_projections: bool = True  # fused step: one matmul for q/k/v and one for gate/up
    fused_prefill: bool = True  # graph: prompts run through the fused step's pieces too
    # graph: keep the KV of computed sequences and prefill only what a prompt adds to the longest
    # cached prefix (agent/llm/prefix_cache.py); needs the fused prefill, ignored without it
    prefix_cache: bool = True
    prefix_cache_gib: float | None = None  # graph: its memory (None: half the free GPU memory, at most 8 GiB; 1 on a CPU)
    prefix_outputs: bool = True  # graph: cache each row's prompt + generated tokens, not the prompt alone

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"engine kind must be one of {KINDS}, not {self.kind!r}")
        if self.cache not in CACHES:
            raise ValueError(f"engine cache must be one of {CACHES}, not {self.cache!r}")
        if self.compile and self.cache != "static":
            raise ValueError("compile needs cache='static' (transformers compiles only static-cache decoding)")
        if self.share_prefix and self.cache != "dynamic":
            raise ValueError("share_prefix works on the dynamic cache only")
        if self.kind == "continuous" and (self.cache != "dynamic" or self.share_prefix or self.compile):
            raise ValueError("the continuous engine has its own paged cache: leave cache, compile "
                             "and share_prefix at their defaults")
        if self.kind == "graph" and (self.cache != "dynamic" or self.share_prefix or self.compile):
            raise ValueError("the graph engine brings its own static cache and shares prefills "
                             "itself: leave cache, compile and share_prefix at their defaults")
        if not self.fused_decode and self.kind != "graph":
            raise ValueError("'unfused' is an option of the graph engine")
        if not self.pack_projections and (self.kind != "graph" or not self.fused_decode):
            raise ValueError("'unpacked' is an option of the graph engine's fused step")
        if not self.fused_prefill and (self.kind != "graph" or not self.fused_decode):
            raise ValueError("'hf-prefill' is an option of the graph engine's fused step")
        if not self.prefix_cache and self.kind != "graph":
            raise ValueError("'no-prefix-cache' is an option of the graph engine")
        if self.batch_gib is not None and self.batch_gib <= 0:
            raise ValueError("batch_gib must be > 0")
        if self.prefill_gib is not None and self.prefill_gib <= 0:
            raise ValueError("prefill_gib must be > 0")
        if self.prefix_cache_gib is not None and self.prefix_cache_gib < 0:
            raise ValueError("prefix_cache_gib must be >= 0")
        if self.check_every < 1 or self.max_shapes < 1:
            raise ValueError("check_every and max_shapes must be >= 1")
        if self.cache_len_step < 1 or self.cb_block_size < 4:
            raise ValueError("cache_len_step must be >= 1 and cb_block_size >= 4")

    @property
    def is_plain(self) -> bool:
        """True when this is exactly the backend's default path."""
        return self == EngineOptions()

    @classmethod
    def parse(cls, spec: str | None) -> "EngineOptions":
        """From a short spec: 'plain', 'static', 'static+compile', 'share-prefix', 'continuous',
        'graph', 'graph+unfused', 'graph+unpacked', 'graph+hf-prefill', 'graph+no-prefix-cache'.

        Parts join with '+'; an unknown part is a ValueError naming it.
        """
        kw: dict[str, Any] = {}
        for part in (p.strip().lower() for p in (spec or "plain").split("+") if p.strip()):
            if part in ("plain", "generate", "dynamic"):
                continue
            elif part == "static":
                kw["cache"] = "static"
            elif part == "compile":
                kw["compile"] = True
            elif part in ("share-prefix", "share_prefix", "prefix"):
                kw["share_prefix"] = True
            elif part in ("continuous", "cb"):
                kw["kind"] = "continuous"
            elif part in ("graph", "cuda-graph", "cudagraph"):
                kw["kind"] = "graph"
            elif part == "unfused":  # graph engine with transformers' own decode step
                kw["fused_decode"] = False
            elif part == "unpacked":  # fused step, one matmul per projection (as measured before)
                kw["pack_projections"] = False
            elif part in ("hf-prefill", "hfprefill"):  # prompts through the model's own forward
                kw["fused_prefill"] = False
            elif part in ("no-prefix-cache", "noprefix"):  # every prompt prefilled from its first token
                kw["prefix_cache"] = False
            else:
                raise ValueError(f"unknown engine option {part!r} (use plain, static, compile, "
                                 "share-prefix, continuous, graph, unfused, unpacked, hf-prefill, "
                                 "no-prefix-cache, joined with '+')")
        return cls(**kw)

    def label(self) -> str:
        if self.kind == "graph":
            if not self.fused_decode:
                return "graph+unfused" + ("" if self.prefix_cache else "+no-prefix-cache")
            return "+".join(["graph"] + ([] if self.pack_projections else ["unpacked"])
                            + ([] if self.fused_prefill else ["hf-prefill"])
                            + ([] if self.prefix_cache else ["no-prefix-cache"]))
        if self.kind == "continuous":
            return self.kind
        parts = ([] if self.cache == "dynamic" else [self.cache]) + (
            ["compile"] if self.compile else []) + (["share-prefix"] if self.share_prefix else [])
        return "+".join(parts) or "plain"


# --- left-padded rows ------------------------------------------------------------------


def left_pad(rows: Sequence[Sequence[int]], pad_id: int):
    """(input_ids, attention_mask) tensors, rows right-aligned so new tokens line up."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def positions(mask):
    """Position ids exactly as `generate` derives them from a left-padded mask."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def unique_rows(rows: Sequence[Sequence[int]]) -> tuple[list[list[int]], list[int]]:
    """(distinct prompts in first-seen order, for each row the index of its prompt)."""
    seen: dict[tuple[int, ...], int] = {}
    index = []
    for r in rows:
        index.append(seen.setdefault(tuple(r), len(seen)))
    return [list(k) for k in seen], index


# --- the generate-based engine -----------------------------------------------------------


class GenerateEngine:
    """`model.generate` over left-padded rows, with the static cache / compile / shared prefill options."""

    def __init__(self, options: EngineOptions):
        self.options = options
        self.prefill_rows_saved = 0  # rows whose prompt prefill was skipped (share_prefix)

    def generate(self, model, rows: Sequence[Sequence[int]], pad_id: int, **gen_kwargs):
        """Token tensor [rows, width + new] like `model.generate`; the caller strips the prompt."""
        import torch

        input_ids, mask = left_pad(rows, pad_id)
        device = model.device
        input_ids, mask = input_ids.to(device), mask.to(device)
        extra = self._static_kwargs(input_ids.shape[1], gen_kwargs.get("max_new_tokens", 1))
        with torch.inference_mode():
            if self.options.share_prefix:
                cache = self._shared_prefill(model, rows, pad_id)
                if cache is not None:
                    extra["past_key_values"] = cache
            return model.generate(input_ids=input_ids, attention_mask=mask, **gen_kwargs, **extra)

    def _static_kwargs(self, width: int, max_new: int) -> dict[str, Any]:
        if self.options.cache != "static":
            return {}
        step = self.options.cache_len_step
        need = width + max_new
        kw: dict[str, Any] = {"cache_implementation": "static",
                              "max_cache_len": ((need + step - 1) // step) * step}
        if self.options.compile:
            from transformers import CompileConfig

            cc = CompileConfig()
            if self.options.compile_everywhere:
                cc._compile_all_devices = True
            kw["compile_config"] = cc
        else:
            kw["disable_compile"] = True  # static cache alone: no silent compile on CUDA
        return kw

    def _shared_prefill(self, model, rows: Sequence[Sequence[int]], pad_id: int):
        """A DynamicCache holding every row's prompt minus its last token, prefilled once per prompt.

        `generate` then feeds only the last prompt token (its cache_position starts at the
        cache length), so the first new token's logits pass through the logits processors
        exactly as on the plain path. None when no prompt repeats (nothing to share).
        """
        import torch
        from transformers import DynamicCache

        distinct, index = unique_rows(rows)
        if len(distinct) == len(rows) or min(len(r) for r in rows) < 2:
            return None
        # The distinct prompts include the longest row, so their padded width is the batch's
        # and the cache's columns line up with the rows generate will feed.
        ids, mask = left_pad(distinct, pad_id)
        ids, mask = ids.to(model.device), mask.to(model.device)
        cache = DynamicCache(config=model.config)
        model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions(mask)[:, :-1],
              past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache.batch_select_indices(torch.tensor(index, device=model.device))
        self.prefill_rows_saved += len(rows) - len(distinct)
        return cache


# --- raw log-probabilities by a teacher-forced pass ------------------------------------------


def rescore(model, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
            pad_id: int, chunk_rows: int = 8) -> list[list[float]]:
    """log p(token) of each completion token under the raw (temperature-1) distribution.

    Rows are left-padded so every completion ends in the last column and only the last
    (longest completion) positions need logits: memory is chunk_rows x that x vocabulary.
    """
    import torch

    out: list[list[float]] = []
    for start in range(0, len(prompts), chunk_rows):
        ps, cs = prompts[start:start + chunk_rows], completions[start:start + chunk_rows]
        longest = max(len(c) for c in cs)
        if longest == 0:
            out.extend([] for _ in cs)
            continue
        ids, mask = left_pad([list(p) + list(c) for p, c in zip(ps, cs)], pad_id)
        ids, mask = ids.to(model.device), mask.to(model.device)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask),
                           use_cache=False, logits_to_keep=longest + 1).logits
        # logits[:, j] predicts the token at column (width - longest - 1 + j + 1).
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        targets = ids[:, -longest:]
        picked = torch.gather(logp, 2, targets.unsqueeze(-1)).squeeze(-1).tolist()
        for r, c in enumerate(cs):
            out.append(picked[r][longest - len(c):] if c else [])
    return out


def weight_sharing_twin(model):
    """A copy of the module tree (and config) that shares every parameter and buffer tensor.

    Costs no weight memory. Used to run ordinary forward passes while continuous batching
    has switched the original model's config to paged attention.
    """
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    twin = copy.deepcopy(model, memo)
    return twin


# --- the continuous-batching engine ------------------------------------------------------------


class ContinuousEngine:
    """transformers' continuous batching behind a blocking `run(rows, ...)` call; thread-safe.

    Concurrent callers add their rows to one running manager; a dispatcher thread routes
    finished results back to each caller.
    """

    kind = "continuous"

    def __init__(self, model, options: EngineOptions, eos_ids: Sequence[int], pad_id: int,
                 vocab_size: int | None = None):
        self.options = options
        self.model = model
        self.eos_ids = sorted(int(i) for i in eos_ids)
        self.pad_id = int(pad_id)
        self.vocab_size = int(vocab_size or model.config.get_text_config().vocab_size)
        self.twin = weight_sharing_twin(model)  # before the manager switches attention
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, list]] = {}
        self._manager = None
        self._dispatcher: threading.Thread | None = None
        self._closed = False
        self._next = 0

    def _start(self):
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        o = self.options
        # Sampling with per-request temperature and top_k: greedy rows use top_k=1 (argmax).
        # Neutral otherwise, so no processor from the model's own generation_config leaks in.
        gc = GenerationConfig(do_sample=True, temperature=0.5, top_k=self.vocab_size, top_p=1.0,
                              min_p=None, typical_p=1.0, repetition_penalty=1.0,
                              eos_token_id=self.eos_ids, pad_token_id=self.pad_id, max_new_tokens=256)
        cb = ContinuousBatchingConfig(block_size=o.cb_block_size, num_blocks=o.cb_num_blocks,
                                      max_batch_tokens=o.cb_max_batch_tokens,
                                      max_memory_percent=o.cb_memory_fraction,
                                      per_request_processors=True, seed=o.seed)
        self._manager = self.model.init_continuous_batching(generation_config=gc,
                                                            continuous_batching_config=cb)
        self._manager.start()
        self._dispatcher = threading.Thread(target=self._dispatch, name="cb-dispatch", daemon=True)
        self._dispatcher.start()

    def _dispatch(self) -> None:
        while not self._closed:
            result = self._manager.get_result(timeout=0.1)
            if result is None:
                if not self._manager.is_running():
                    self._fail_all(RuntimeError("continuous batching thread stopped"))
                    return
                continue
            if not result.is_finished():
                continue
            with self._lock:
                slot = self._waiting.pop(result.request_id, None)
            if slot is not None:
                slot[1].append(result)
                slot[0].set()

    def _fail_all(self, err: Exception) -> None:
        with self._lock:
            slots, self._waiting = list(self._waiting.values()), {}
        for event, box in slots:
            box.append(err)
            event.set()

    def run(self, rows: Sequence[Sequence[int]], row_max: Sequence[int], do_sample: bool,
            temperature: float, timeout_s: float | None = None, done_check=None
            ) -> tuple[list[list[int]], list[list[float]]]:
        """(new tokens, raw log-probabilities) per row; tokens end at EOS (included) or row_max.

        `done_check` (stop strings) is not used: the manager cannot end a request early on
        text, so the caller cuts at stop strings afterwards.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("continuous engine is closed")
            if self._manager is None:
                self._start()
            ids = [f"restreact-{self._next + i}" for i in range(len(rows))]
            self._next += len(rows)
            slots = {i: (threading.Event(), []) for i in ids}
            self._waiting.update(slots)
        kwargs = ({"temperature": float(temperature), "top_k": self.vocab_size} if do_sample
                  else {"temperature": 1.0, "top_k": 1})
        for rid, r, m in zip(ids, rows, row_max):
            got = self._manager.add_request(list(r), request_id=rid, max_new_tokens=int(m),
                                            eos_token_id=self.eos_ids, **kwargs)
            if got is None:
                self._drop(ids)
                raise RuntimeError("continuous batching refused a request (manager stopping)")
        tokens = []
        for rid in ids:
            event, box = slots[rid]
            if not event.wait(timeout_s):
                self._drop(ids)
                raise TimeoutError(f"continuous batching gave no result in {timeout_s} s")
            res = box[0]
            if isinstance(res, Exception):
                raise res
            if res.error is not None:
                raise RuntimeError(f"continuous batching failed a request: {res.error}")
            tokens.append(list(res.generated_tokens))
        return tokens, rescore(self.twin, rows, tokens, self.pad_id)

    def _drop(self, ids) -> None:
        with self._lock:
            for rid in ids:
                self._waiting.pop(rid, None)
        for rid in ids:
            self._manager.cancel_request(rid)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._manager is not None:
            self._manager.stop(block=True, timeout=30)  # restores the model's attention
            self._manager.destroy()
        if self._dispatcher is not None:
            self._dispatcher.join(timeout=5)
        self._fail_all(RuntimeError("continuous engine is closed"))
