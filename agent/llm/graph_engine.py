"""The "graph" rollout engine: our own decode loop on a static KV cache, replayed as a CUDA graph.

Why not `model.generate`: on a GPU an 8B model's decode step is ~5 ms of weight reads, but
`generate` spends far longer than that in Python between steps (logits processors,
stopping criteria, a host sync every step), and its static-cache compile path recompiles
per shape. This loop keeps a step to: one CUDA-graph replay of the model's forward, a few
sampling kernels, and no host sync except a stop check every `check_every` steps.

How one batch of rows runs:
1. Rows (K rows per request of K samples) are left-padded to a common width W. Distinct
   prompts are prefilled once (the K samples of a step share one prefill) into a small
   temporary cache, then copied into the row slots of a persistent `StaticCache` whose
   batch is the row count rounded up to a power of two and whose length is W + new
   tokens rounded up to `cache_len_step`: a handful of shapes serve every batch.
2. For each such shape the decode step (embed → 32 layers → logits for one token per row)
   is captured once as a CUDA graph whose inputs are fixed buffers: this step's token,
   its position, and a key-validity mask over the cache. We build that mask ourselves as a
   4D tensor, which transformers passes straight to attention, so no mask logic (and no
   data-dependent branch) runs inside the graph.
3. Sampling is Gumbel-style on the device (argmax of p / Exp(1) noise, the same
   distribution as multinomial sampling) or argmax when greedy; the raw (temperature-1)
   log-probability of each chosen token is kept, as every engine promises.

On a CPU (tests) or when capture fails (some quantized kernels cannot be captured) the
same loop runs eagerly: identical arithmetic, no replay. Greedy output equals the plain
path's token for token (tests/test_engine.py).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence


ATTENTION_NAME = "restreact_sdpa"
_register_lock = threading.Lock()


def gqa_decode_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                         scaling: float | None = None, **kwargs):
    """Attention for one new token per row without repeating K/V across query groups.

    transformers' SDPA path repeats the 8 K/V heads of Llama-3 to all 32 query heads
    whenever a mask is given (PyTorch's fused GQA needs mask=None), so every decode step
    writes and re-reads 4x the KV cache: at 32 rows x 768 columns that is most of a step's
    memory traffic. Here the query heads are grouped under their K/V head instead, and two
    batched matmuls read each cached K and V once. Prefill, training, and anything else
    with more than one query token go to the standard SDPA function unchanged.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.shape[2] != 1 or module.training:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    import torch

    b, h, _, d = query.shape
    kvh, length = key.shape[1], key.shape[2]
    q = query.reshape(b, kvh, h // kvh, d)  # heads are ordered kv-head-major, as repeat_kv assumes
    scores = torch.matmul(q, key.transpose(-1, -2)).float() * (scaling if scaling is not None else d ** -0.5)
    if attention_mask is not None:
        m = attention_mask[:, :, :, :length]  # [rows, 1, 1, length] broadcasts over kv heads and groups
        scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value)  # [rows, kv heads, groups, head dim]
    return out.reshape(b, h, 1, d).transpose(1, 2).contiguous(), None


def use_gqa_decode_attention(model) -> None:
    """Point an SDPA model at `gqa_decode_attention` (same masks; identical off the decode path)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    with _register_lock:
        AttentionInterface.register(ATTENTION_NAME, gqa_decode_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, sdpa_mask)
    from agent.llm.fused_decode import base_model

    base_model(model).set_attn_implementation(ATTENTION_NAME)


def _bucket(n: int) -> int:
    """Rows rounded up to a power of two: few graph shapes, little padding waste."""
    b = 1
    while b < n:
        b *= 2
    return b


def torch_element_size(dtype) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


class _LayerKV:
    """A slot's K/V: one [2, rows, kv heads, length, head dim] tensor per layer.

    Per layer rather than one tensor for all layers: an 8B slot for 32 web-size trajectories
    is tens of GB, and one allocation that size fails on a card whose free memory is split
    into smaller pieces, while 32 of a thirty-second of it fit.
    """

    def __init__(self, layers: int, rows: int, heads: int, length: int, dim: int, dtype, device):
        import torch

        self.layers = [torch.zeros(2, rows, heads, length, dim, dtype=dtype, device=device)
                       for _ in range(layers)]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.layers)

    def write(self, row: int, col: int, kv) -> None:
        """Put a sequence's [layers, 2, kv heads, n, head dim] K/V at (row, col:col + n)."""
        n = kv.shape[3]
        for i, layer in enumerate(self.layers):
            layer[:, row, :, col:col + n].copy_(kv[i])

    def read(self, row: int, a: int, b: int):
        """A copy of row's columns [a, b) as [layers, 2, kv heads, b - a, head dim]."""
        import torch

        return torch.stack([layer[:, row, :, a:b] for layer in self.layers])


def _bind_static_cache(cache, kv: _LayerKV) -> None:
    """Point every layer of a fresh `StaticCache` at its slice of the slot's K/V (what
    `StaticLayer.lazy_initialization` would allocate itself), so the engine can copy a
    sequence's K/V in and out of a row."""
    import torch

    for layer, t in zip(cache.layers, kv.layers, strict=True):
        layer.dtype, layer.device = t.dtype, t.device
        layer.batch_size, layer.num_heads = t.shape[1], t.shape[2]
        layer.k_head_dim = layer.v_head_dim = t.shape[4]
        layer.keys, layer.values = t[0], t[1]
        layer.cumulative_length = layer.cumulative_length.to(t.device)
        for x in (layer.keys, layer.values, layer.cumulative_length):
            torch._dynamo.mark_static_address(x)
        layer.is_initialized = True


@dataclass
class _Slot:
    """A persistent cache and (on CUDA) the captured decode step for one (rows, length) shape."""

    rows: int
    length: int
    cache: Any
    token: Any  # [rows, 1] the token fed this step
    position: Any  # [rows, 1] its position id
    valid: Any  # [rows, length] which cache columns each row may attend to
    column: Any  # [1] the cache column this step writes
    mask: Any  # the 4D view of `valid` handed to the model
    kv: Any = None  # _LayerKV: the cache's K/V, a tensor per layer
    graph: Any = None
    logits: Any = None  # the graph's output buffer (or the last eager output)


class GraphEngine:
    """Batched decoding for `HFBackend(engine="graph")`; one caller thread at a time."""

    kind = "graph"  # HFBackend hands it token rows, not a generate() call

    def __init__(self, model, options, eos_ids: Sequence[int], pad_id: int):
        import torch

        self.model = model
        self.options = options
        self.eos_ids = sorted(int(i) for i in eos_ids)
        self.pad_id = int(pad_id)
        self.device = next(model.parameters()).device
        self.use_graphs = self.device.type == "cuda" and options.cuda_graphs
        self.slots: OrderedDict[tuple[int, int], _Slot] = OrderedDict()
        self.captures = 0
        # Where the time goes (seconds, summed over calls): prefill vs the decode loop.
        # decode_s includes remember_s: handing each batch's KV to the prefix cache afterwards
        self.timings = {"prefill_s": 0.0, "decode_s": 0.0, "decode_steps": 0, "capture_s": 0.0,
                        "remember_s": 0.0}
        self.capture_failures: list[str] = []
        self._pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        attn = getattr(model.config, "_attn_implementation", "sdpa") or "sdpa"
        if attn == "sdpa" and options.gqa_decode:
            use_gqa_decode_attention(model)
            attn = ATTENTION_NAME
        if attn not in ("sdpa", "eager", ATTENTION_NAME):
            raise ValueError(f"the graph engine needs sdpa or eager attention, not {attn!r}")
        self._float_mask = attn == "eager"  # eager attention adds the mask; sdpa takes booleans
        self.fused = self._fused_step(model, options)
        # Embeddings are never quantized, so this is the compute dtype in 4-bit models too.
        self.dtype = model.get_input_embeddings().weight.dtype
        cfg = model.config.get_text_config()
        self.kv_shape = (cfg.num_hidden_layers, 2, getattr(cfg, "num_key_value_heads", None)
                         or cfg.num_attention_heads,
                         getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        self.kv_token_bytes = (self.kv_shape[0] * 2 * self.kv_shape[2] * self.kv_shape[3]
                               * torch_element_size(self.dtype))
        # Prompt tokens: as rows ask for them, prefilled, served from the prefix cache, and
        # prefilled although computed before (evicted, or two prompts of one batch sharing them).
        self.prefix_stats = {"rows": 0, "prompt_tokens": 0, "distinct_prompt_tokens": 0,
                             "prefilled_tokens": 0, "reused_tokens": 0, "recomputed_tokens": 0}
        self.prefix = self._prefix_cache(options)
        self._batch = None  # the last prefill's layout, for storing its KV after the decode
        self._noise = self._noise_generator()

    def _noise_generator(self):
        """The sampling noise's own generator, seeded from torch's global one (so
        `torch.manual_seed` still makes runs repeatable). Graph capture registers the device's
        default generator with every graph; sampling runs outside the graphs, and on the default
        generator a capture that failed part-way (out of memory, say) leaves it marked as
        capturing, after which every draw fails ("Offset increment outside graph capture")."""
        import torch

        gen = torch.Generator(device=self.device)
        gen.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        return gen

    def _fused_step(self, model, options):
        """The fused Llama decode step (fused_decode.py) when asked for and the model allows it."""
        from agent.llm.fused_decode import FusedLlamaStep

        if not options.fused_decode:
            return None
        try:  # torch.compile fuses only on a GPU; on a CPU the same functions run eagerly
            return FusedLlamaStep(model, compile=self.use_graphs and options.compile_fused,
                                  pack=options.pack_projections)
        except ValueError:  # not a Llama layout: transformers' own step serves it
            return None

    def _prefix_cache(self, options):
        """A PrefixCache when asked for and the fused prefill runs (it prefills suffixes only)."""
        if not (options.prefix_cache and self.fused is not None and options.fused_prefill):
            return None
        from agent.llm.prefix_cache import PrefixCache

        gib = options.prefix_cache_gib
        if gib is None:  # several engines (one per process, say) may share one card
            gib = min(8.0, self._free_bytes() / 2**30 / 2) if self.device.type == "cuda" else 1.0
        return PrefixCache(int(gib * 2**30))

    def _free_bytes(self) -> int:
        """Device memory a new tensor can take: free on the card plus what torch holds unused."""
        import torch

        free, _ = torch.cuda.mem_get_info(self.device)
        return free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)

    # --- public -----------------------------------------------------------------------

    def run(self, rows: Sequence[Sequence[int]], row_max: Sequence[int], do_sample: bool,
            temperature: float, done_check: Callable[[int, list[int]], bool] | None = None
            ) -> tuple[list[list[int]], list[list[float]]]:
        """(new tokens, raw log-probabilities) per row, each list `max(row_max)` long or less.

        `done_check(row, tokens_so_far)` says whether a row may stop early (a stop string);
        EOS and `row_max` are checked here. Tokens after a row's end are junk the caller cuts.
        """
        import torch

        n, new = len(rows), max(int(m) for m in row_max)
        width = max(len(r) for r in rows)
        if n > 1 and not self._fits(rows, width + new):
            # Too many rows for one cache (long trajectories × K samples fill a card): halves,
            # one after the other. Rows are independent, so the result is the same.
            h = n // 2
            a = self.run(rows[:h], row_max[:h], do_sample, temperature, done_check)
            shift = None if done_check is None else (lambda r, t: done_check(r + h, t))
            b = self.run(rows[h:], row_max[h:], do_sample, temperature, shift)
            return a[0] + b[0], a[1] + b[1]
        t0 = time.perf_counter()
        slot = self._slot(_bucket(n), width + new)
        t1 = time.perf_counter()
        with torch.inference_mode():
            first = self._prefill(slot, rows, width)
            self._sync()  # a few per batch: the timings split prefill, decode and remember
            t2 = time.perf_counter()
            out = self._decode(slot, first, n, width, new, list(row_max), do_sample,
                               float(temperature), done_check)
            self._sync()
            t_kv = time.perf_counter()
            self._remember(slot, rows, width, out[0], list(row_max))
            self._sync()
        t3 = time.perf_counter()
        self.timings["capture_s"] += t1 - t0
        self.timings["prefill_s"] += t2 - t1
        self.timings["decode_s"] += t3 - t2
        self.timings["remember_s"] += t3 - t_kv
        self.timings["decode_steps"] += len(out[0][0]) if out[0] else 0
        return out

    def _sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        self.slots.clear()
        if self.prefix is not None:
            self.prefix.clear()

    # --- shapes -----------------------------------------------------------------------

    def _slot(self, rows: int, need: int) -> _Slot:
        step = self.options.cache_len_step
        length = ((need + step - 1) // step) * step
        # Any cached slot at least this big serves, but every decode step reads its whole
        # cache (masked columns too), so the shortest one that fits.
        fits = [key for key in self.slots if key[0] == rows and key[1] >= length]
        if fits:
            key = min(fits, key=lambda k: k[1])
            self.slots.move_to_end(key)
            return self.slots[key]
        while len(self.slots) >= self.options.max_shapes:
            self.slots.popitem(last=False)  # frees that cache and graph
        self._make_room(rows * length * self.kv_token_bytes)
        slot = self._new_slot(rows, length)
        self.slots[(rows, length)] = slot
        return slot

    # Room a batch needs beyond its cache: logits, prefill activations (a GPU only).
    RESERVE_BYTES = 3 * 2**30

    def _batch_bytes(self, rows: Sequence[Sequence[int]], need: int) -> int:
        """What one batch takes: its slot's cache and its distinct prompts' prefill activations."""
        step = self.options.cache_len_step
        length = ((need + step - 1) // step) * step
        distinct = len({tuple(r) for r in rows})
        width = max(len(r) for r in rows)
        act = self._prefill_bytes(distinct, width, width)
        budget = self._prefill_budget()
        if budget is not None:  # prompts prefill in groups of at most that
            act = min(act, max(budget, self._prefill_bytes(1, width, width)))
        return _bucket(len(rows)) * length * self.kv_token_bytes + act

    def _fits(self, rows: Sequence[Sequence[int]], need: int) -> bool:
        """Can this batch run as one? Under `batch_gib` when set; on a GPU, in what is free once
        other shapes' caches and cached prefixes make room."""
        size = self._batch_bytes(rows, need)
        if self.options.batch_gib is not None and size > self.options.batch_gib * 2**30:
            return False
        if self.device.type != "cuda":
            return True
        held = sum(s.kv.nbytes for s in self.slots.values())
        held += self.prefix.bytes if self.prefix is not None else 0
        return self._free_bytes() + held >= size + self.RESERVE_BYTES

    def _make_room(self, need: int, keep: "_Slot | None" = None) -> None:
        """On a GPU, free older shapes' caches (all but `keep`, the batch's own), then
        prefix-cache KV, until `need` bytes and the reserve fit."""
        if self.device.type != "cuda":
            return
        import torch

        need += self.RESERVE_BYTES
        for key in [k for k, s in self.slots.items() if s is not keep]:  # oldest first
            if self._free_bytes() >= need:
                break
            del self.slots[key]
        if self.prefix is not None and self._free_bytes() < need:
            self.prefix.evict(need - self._free_bytes())
        if torch.cuda.mem_get_info(self.device)[0] < need:
            # What torch holds unused is scattered blocks (evicted prefixes, freed shapes): one
            # cache of tens of GB needs them back on the card to be allocated in one piece.
            torch.cuda.empty_cache()

    def _new_slot(self, rows: int, length: int) -> _Slot:
        import torch
        from transformers import StaticCache

        dev = self.device
        cache = StaticCache(config=self.model.config, max_cache_len=length)
        valid = torch.zeros(rows, length, dtype=torch.bool, device=dev)
        slot = _Slot(rows=rows, length=length, cache=cache,
                     token=torch.full((rows, 1), self.pad_id, dtype=torch.long, device=dev),
                     position=torch.zeros(rows, 1, dtype=torch.long, device=dev),
                     valid=valid, column=torch.zeros(1, dtype=torch.long, device=dev),
                     mask=None)
        slot.mask = self._mask_view(valid)
        layers, _, heads, dim = self.kv_shape
        slot.kv = _LayerKV(layers, rows, heads, length, dim, self.dtype, dev)
        _bind_static_cache(cache, slot.kv)
        # One eager step checks the cache as bound (and warms the model up); the prefill of
        # every batch overwrites what it wrote.
        with torch.inference_mode():
            valid[:, 0] = True
            slot.logits = self._model_step(slot)
            if self.use_graphs:
                self._capture(slot)
        return slot

    def _mask_view(self, valid):
        import torch

        if not self._float_mask:
            return valid[:, None, None, :]
        # Eager attention adds the mask: a persistent float buffer refreshed from `valid`.
        return torch.zeros(valid.shape[0], 1, 1, valid.shape[1], dtype=self.dtype,
                           device=valid.device)

    def _refresh_mask(self, slot: _Slot) -> None:
        if self._float_mask:
            import torch

            slot.mask.copy_(torch.where(slot.valid, 0.0, torch.finfo(slot.mask.dtype).min)[:, None, None, :])

    def _set_cache_length(self, slot: _Slot, n: int) -> None:
        for layer in slot.cache.layers:
            layer.cumulative_length.fill_(n)

    def _step(self, slot: _Slot):
        """One decode step on the slot's fixed buffers: what the graph captures."""
        if self.fused is not None:
            return self.fused(slot.token, slot.position, slot.valid, slot.column, slot.cache)
        return self._model_step(slot)

    def _model_step(self, slot: _Slot):
        """The step through the model's own forward. A new slot runs it once: its first write
        is what allocates the StaticCache's K/V tensors, which the fused step writes into."""
        self._refresh_mask(slot)
        out = self.model(input_ids=slot.token, position_ids=slot.position, attention_mask=slot.mask,
                         past_key_values=slot.cache, use_cache=True)
        return out.logits[:, -1, :]

    def _capture(self, slot: _Slot) -> None:
        import torch

        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm-up: cuBLAS handles, lazy allocations
                    self._set_cache_length(slot, 0)
                    self._step(slot)
            torch.cuda.current_stream().wait_stream(stream)
            self._set_cache_length(slot, 0)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                logits = self._step(slot)
            slot.graph, slot.logits = graph, logits
            self.captures += 1
        except Exception as e:
            torch.cuda.synchronize()
            self.capture_failures.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            slot.graph = None
            if self._compile_failed(e):  # torch.compile, not the capture: keep graphs, fuse eagerly
                from agent.llm.fused_decode import FusedLlamaStep

                self.fused = FusedLlamaStep(self.model, compile=False,
                                            pack=self.fused.pack)
                self._capture(slot)
            else:  # e.g. a quantized kernel that syncs: eager steps from now on
                self.use_graphs = False

    def _compile_failed(self, e: Exception) -> bool:
        """Did the compiled fused pieces fail (no Triton, an Inductor error, the recompile limit)?"""
        from agent.llm.fused_decode import compile_failure

        return self.fused is not None and self.fused.compiled and compile_failure(e)

    # --- prefill and decode ---------------------------------------------------------------

    def _prefill(self, slot: _Slot, rows: Sequence[Sequence[int]], width: int):
        """Write every row's prompt into the slot's cache; the first new token's raw logits per row."""
        import torch

        from agent.llm.engine import left_pad, positions, unique_rows

        distinct, index = unique_rows(rows)
        self._count_rows(rows, distinct)
        if self.fused is not None and self.options.fused_prefill:
            # With or without a prefix cache: without one, nothing is matched and every prompt
            # prefills whole, in groups that fit the card.
            return self._prefill_from_prefixes(slot, distinct, index, len(rows), width)
        self._count_prefill(distinct, [0] * len(distinct), [0] * len(distinct))
        ids, attn = left_pad(distinct, self.pad_id)
        ids, attn = ids.to(self.device), attn.to(self.device)
        keys = attn.bool()
        cols = torch.arange(width, device=self.device)
        causal = cols[None, :] <= cols[:, None]  # [query, key]
        itself = torch.eye(width, dtype=torch.bool, device=self.device)
        # Pad queries attend to themselves only: finite, never read.
        mask = ((causal[None] & keys[:, None, :]) | itself[None])[:, None]
        # Row r of the slot takes distinct prompt pick[r] (K samples of one prompt share it).
        pick = torch.tensor(index + [index[0]] * (slot.rows - len(index)), device=self.device)
        last = self._model_prefill(slot, ids, attn, mask, pick, width)
        self._set_cache_length(slot, width)
        slot.valid.zero_()
        slot.valid[:, :width] = keys.index_select(0, pick)
        slot.position.copy_(attn.sum(-1, keepdim=True).index_select(0, pick))  # next position = length
        return last.index_select(0, pick)

    # --- prefill from cached prefixes ---------------------------------------------------------

    def _count_rows(self, rows, distinct) -> None:
        st = self.prefix_stats
        st["rows"] += len(rows)
        st["prompt_tokens"] += sum(len(r) for r in rows)
        st["distinct_prompt_tokens"] += sum(len(p) for p in distinct)

    def _count_prefill(self, prompts, reused: list[int], seen: list[int]) -> None:
        """Counters for one prefill of `prompts`, `reused[j]` tokens of prompt j from the cache and
        its first `seen[j]` tokens computed at some earlier point. Two prompts of this prefill
        sharing a prefix compute it twice: the second (in sorted order) counts as recomputed."""
        from agent.llm.prefix_cache import common_prefix

        order = sorted(range(len(prompts)), key=lambda j: prompts[j])
        shared = [0] * len(prompts)
        for a, b in zip(order, order[1:]):
            shared[b] = common_prefix(prompts[a], prompts[b])
        st = self.prefix_stats
        for j, p in enumerate(prompts):
            st["prefilled_tokens"] += len(p) - reused[j]
            st["reused_tokens"] += reused[j]
            st["recomputed_tokens"] += max(0, min(len(p), max(seen[j], shared[j])) - reused[j])

    def _prefill_from_prefixes(self, slot: _Slot, distinct, index, n: int, width: int):
        """`_prefill` with a prefix cache: each distinct prompt's longest cached prefix is copied
        into its row, only the rest runs through the model, and rows sharing a prompt copy it.

        A row's tokens end at column `width` - 1 as always (prefix, then the prefilled rest),
        and K/V depend on positions, not columns, so the result is the full prefill's.
        """
        import torch

        if self.prefix is not None:
            self._prefill_shared_prefixes(slot, distinct)
        rep = [index.index(j) for j in range(len(distinct))]  # the slot row prefilled for prompt j
        last = self._prefill_rows(slot, distinct, rep, width)
        pick = index + [index[0]] * (slot.rows - n)
        src = [rep[j] for j in pick]
        dst = [r for r in range(slot.rows) if src[r] != r]
        if dst:  # the other rows of each prompt (K samples, the shape's padding rows)
            d = torch.tensor(dst, device=self.device)
            s = torch.tensor([src[r] for r in dst], device=self.device)
            for layer in slot.cache.layers:
                layer.keys[d, :, :width] = layer.keys[s, :, :width]
                layer.values[d, :, :width] = layer.values[s, :, :width]
        lens = torch.tensor([len(distinct[j]) for j in pick], device=self.device)
        cols = torch.arange(slot.length, device=self.device)
        self._set_cache_length(slot, width)
        slot.valid.copy_((cols[None, :] >= (width - lens)[:, None]) & (cols[None, :] < width))
        slot.position.copy_(lens[:, None])
        self._batch = (distinct, index, rep)
        return last.index_select(0, torch.tensor(pick, device=self.device))

    def _prefill_rows(self, slot: _Slot, prompts, rep: list[int], width: int, min_left: int = 1):
        """Prompt j into slot row rep[j], columns [width - len, width): its cached prefix copied,
        the rest prefilled (at least `min_left` tokens). Raw logits after each prompt's last token.

        Prompts prefill in groups whose activations fit `_prefill_budget` (a batch of 32 web-size
        prompts on an 8B model needs tens of GB at once); each group's logits land in place.
        """
        import torch

        matches = [] if self.prefix is None else [
            self.prefix.match(p, limit=len(p) - min_left) for p in prompts]
        reused = [m.length for m in matches] or [0] * len(prompts)
        self._count_prefill(prompts, reused, [m.seen for m in matches] or [0] * len(prompts))
        for j, m in enumerate(matches):
            col = width - len(prompts[j])
            for kv, a, b in m.pieces:
                slot.kv.write(rep[j], col, kv[:, :, :, a:b])
                col += b - a
        tails = [len(p) - r for p, r in zip(prompts, reused)]
        out = [None] * len(prompts)
        for group in self._prefill_groups(tails, width):
            logits = self._prefill_group(slot, [prompts[j] for j in group], [rep[j] for j in group],
                                         [reused[j] for j in group], width)
            for i, j in enumerate(group):
                out[j] = logits[i]
        return torch.stack(out)

    def _prefill_group(self, slot: _Slot, prompts, rep: list[int], reused: list[int], width: int):
        """One prefill pass: each prompt's tokens after its first `reused` ones, into its row."""
        import torch

        from agent.llm.engine import left_pad, positions

        dev = self.device
        ids, attn = left_pad([p[r:] for p, r in zip(prompts, reused)], self.pad_id)
        ids, attn = ids.to(dev), attn.to(dev)
        tail = ids.shape[1]  # the prefilled tokens sit in columns [width - tail, width)
        self._make_room(self._prefill_bytes(len(prompts), tail, width), keep=slot)
        start = torch.tensor(reused, device=dev)[:, None]
        pos = torch.where(attn.bool(), positions(attn) + start, 0)
        rows = torch.tensor(rep, device=dev)
        if tail == width and all(len(p) == width for p in prompts):
            # Whole prompts of one length: plain causal attention (the flash kernel).
            def write_plain(i, k, v):
                layer = slot.cache.layers[i]
                layer.keys[rows, :, :width] = k
                layer.values[rows, :, :width] = v

            return self.fused.prefill(ids, pos, None, write_plain)
        lens = torch.tensor([len(p) for p in prompts], device=dev)
        cols = torch.arange(width, device=dev)
        qcol = width - tail + torch.arange(tail, device=dev)
        keys_ok = cols[None, :] >= (width - lens)[:, None]  # [prompts, width]
        causal = cols[None, :] <= qcol[:, None]  # [queries, width]
        itself = cols[None, :] == qcol[:, None]  # pad queries: finite, never read
        mask = ((causal[None] & keys_ok[:, None, :]) | itself[None])[:, None]
        fresh = attn.bool()[:, None, :, None]

        def write(i, k, v):
            layer = slot.cache.layers[i]
            out = []
            for big, new in ((layer.keys, k), (layer.values, v)):
                mine = big[:, :, :width].index_select(0, rows)
                mine[:, :, width - tail:] = torch.where(fresh, new, mine[:, :, width - tail:])
                big[rows, :, :width] = mine
                out.append(mine)
            return out

        return self.fused.prefill(ids, pos, mask, write)

    def _prefill_bytes(self, rows: int, tail: int, width: int) -> int:
        """A prefill pass's activations: the packed gate/up output and a few hidden-size copies
        per token, one layer's head-repeated K/V, and its attention scores should the kernel
        materialize them (sdpa under a mask may)."""
        cfg = self.model.config.get_text_config()
        size = torch_element_size(self.dtype)
        heads = cfg.num_attention_heads
        per_row = tail * (2 * cfg.intermediate_size + 6 * cfg.hidden_size) * size
        per_row += tail * width * (1 + heads * size) + 2 * heads * width * self.kv_shape[3] * size
        return rows * per_row

    def _prefill_budget(self) -> int | None:
        gib = self.options.prefill_gib
        if gib is None and self.device.type == "cuda":
            gib = 4.0
        return None if gib is None else int(gib * 2**30)

    def _prefill_groups(self, tails: list[int], width: int) -> list[list[int]]:
        """Prompt indices in groups under the prefill budget, shortest first so a group pads
        little; every group holds at least one prompt."""
        budget = self._prefill_budget()
        order = sorted(range(len(tails)), key=lambda j: tails[j])
        if budget is None:
            return [order]
        groups: list[list[int]] = [[]]
        for j in order:  # a group's tail is its last (longest) member's
            if groups[-1] and self._prefill_bytes(len(groups[-1]) + 1, tails[j], width) > budget:
                groups.append([])
            groups[-1].append(j)
        return groups

    # Prompts of one batch sharing at least this many tokens beyond the cache prefill them once.
    MIN_SHARED = 16

    def _prefill_shared_prefixes(self, slot: _Slot, distinct) -> None:
        """Common prefixes of this batch's prompts (trajectories with one instruction text, on
        their first step) prefilled once into the cache, so each prompt then reuses them."""
        from agent.llm.prefix_cache import common_prefix

        if len(distinct) < 2:
            return
        order = sorted(distinct)
        wanted = set()
        for a, b in zip(order, order[1:]):
            n = min(common_prefix(a, b), len(a) - 1, len(b) - 1)
            if n >= self.MIN_SHARED:
                wanted.add(tuple(a[:n]))
        todo = [list(p) for p in sorted(wanted)
                if len(p) - self.prefix.match(p).length >= self.MIN_SHARED]
        if not todo:
            return
        width = max(len(p) for p in todo)
        self._prefill_rows(slot, todo, list(range(len(todo))), width)
        for j, p in enumerate(todo):
            self.prefix.insert(p, self._kv_reader(slot, j, width - len(p)))

    def _kv_reader(self, slot: _Slot, row: int, first_col: int):
        """kv_of(a, b) for the sequence held in `row` from column `first_col` on: a copy (on a
        GPU, older cached prefixes make room for it first)."""
        def kv_of(a: int, b: int):
            if self.device.type == "cuda":
                need = (b - a) * self.kv_token_bytes + self.RESERVE_BYTES
                free = self._free_bytes()
                if free < need:
                    self.prefix.evict(need - free)
            return slot.kv.read(row, first_col + a, first_col + b)

        return kv_of

    def _remember(self, slot: _Slot, rows, width: int, tokens: list[list[int]], row_max: list[int]) -> None:
        """After a batch: its prompts' (and rows' generated tokens') K/V into the prefix cache."""
        if self.prefix is None or self._batch is None:
            return
        distinct, index, rep = self._batch
        self._batch = None
        eos = set(self.eos_ids)
        for j, p in enumerate(distinct):
            self.prefix.insert(p, self._kv_reader(slot, rep[j], width - len(p)))
        if not self.options.prefix_outputs:
            return
        for r, new in enumerate(tokens):
            # The last chosen token was never fed, so its K/V is not in the cache.
            fed = new[:max(0, min(len(new) - 1, row_max[r]))]
            end = next((i for i, t in enumerate(fed) if t in eos), len(fed))
            if end:
                p = distinct[index[r]]
                self.prefix.insert(list(p) + fed[:end], self._kv_reader(slot, r, width - len(p)))

    def _model_prefill(self, slot: _Slot, ids, attn, mask, pick, width: int):
        """The prefill through the model's own forward, into a temporary cache copied to the slot."""
        import torch
        from transformers import StaticCache

        from agent.llm.engine import positions

        tmp = StaticCache(config=self.model.config, max_cache_len=width)
        if self._float_mask:
            mask = torch.where(mask, 0.0, torch.finfo(self.dtype).min).to(self.dtype)
        out = self.model(input_ids=ids, position_ids=positions(attn), attention_mask=mask,
                         past_key_values=tmp, use_cache=True, logits_to_keep=1)
        for big, small in zip(slot.cache.layers, tmp.layers):
            big.keys[:, :, :width].copy_(small.keys.index_select(0, pick))
            big.values[:, :, :width].copy_(small.values.index_select(0, pick))
        return out.logits[:, -1, :]

    def _decode(self, slot: _Slot, logits, n: int, width: int, new: int, row_max: list[int],
                do_sample: bool, temperature: float, done_check) -> tuple[list[list[int]], list[list[float]]]:
        import torch

        tokens = torch.empty(slot.rows, new, dtype=torch.long, device=self.device)
        logps = torch.empty(slot.rows, new, dtype=torch.float32, device=self.device)
        eos = torch.tensor(self.eos_ids, device=self.device)
        check_every = max(1, self.options.check_every)
        steps = 0
        for t in range(new):
            chosen = self._choose(logits, do_sample, temperature, self._noise)
            tokens[:, t] = chosen
            logps[:, t] = torch.log_softmax(logits.float(), dim=-1).gather(1, chosen[:, None])[:, 0]
            steps = t + 1
            if steps == new or (steps % check_every == 0 and self._all_done(
                    tokens[:n, :steps], eos, row_max, done_check)):
                break
            # Feed the chosen token: it lands in cache column width + t.
            slot.token.copy_(chosen[:, None])
            slot.column.fill_(width + t)
            slot.valid.index_fill_(1, slot.column, True)
            if slot.graph is not None:
                slot.graph.replay()
                logits = slot.logits
            else:
                logits = self._step(slot)
            slot.position.add_(1)
        return tokens[:n, :steps].tolist(), logps[:n, :steps].tolist()

    @staticmethod
    def _choose(logits, do_sample: bool, temperature: float, generator=None):
        import torch

        if not do_sample:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        # argmax p / E with E ~ Exp(1) draws exactly from p, without a host sync.
        return (probs / torch.empty_like(probs).exponential_(generator=generator)).argmax(-1)

    def _all_done(self, tokens, eos, row_max: list[int], done_check) -> bool:
        """One host copy: has every row hit EOS, its own limit, or a stop string?"""
        import torch

        hit = torch.isin(tokens, eos).any(-1).tolist()
        steps = tokens.shape[1]
        host = None
        for r, m in enumerate(row_max):
            if hit[r] or steps >= m:
                continue
            if done_check is None:
                return False
            host = host if host is not None else tokens.tolist()
            if not done_check(r, host[r]):
                return False
        return True
