"""A Llama decode step with its small element-wise work fused, for the graph engine.

Why: at 32 rows an 8B model's decode step reads ~16 GB of weights (3.7 ms on an H200), but
transformers' eager Llama step also launches ~1,400 small kernels (RMSNorm alone is seven
per call: cast, square, mean, add, rsqrt, multiply, cast-multiply; rotary is ten per layer),
and even replayed from a CUDA graph each costs a few microseconds. This step keeps the
model's own Linear modules for every matrix product (so LoRA adapters and 4-bit weights
work unchanged) and runs the work between them as five small functions that
`torch.compile` fuses into one kernel each on a GPU: ~16 kernels a layer instead of ~45.

The norms, rotary and MLP follow transformers' Llama cast for cast. The attention is the
graph engine's GQA decode attention (scores scaled in fp32, as `gqa_decode_attention` does),
so on a CPU, where the pieces run eagerly, the logits equal the model's own forward within
fp32 rounding (tests/test_engine.py). `emulate_precision_casts` makes the compiled pieces
round to bf16 where the eager ones do.

Where q/k/v (and gate/up) are plain Linear layers, their weights are packed into one matrix
each, so a layer runs two matrix products fewer per projection group: the modules' weights
become views into the packed matrix, so memory does not grow and the model's own forward
still works. LoRA-wrapped or 4-bit projections keep their modules.

It writes the new token's K/V straight into a `StaticCache`'s tensors at `column` and reads
the whole cache under a key-validity mask, so it never touches the cache's own length
counter (the graph engine's prefill sets that).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


def base_model(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports(model) -> str | None:
    """None when `model` can take the fused step, else why not (one line)."""
    base = base_model(model)
    cfg = getattr(base, "config", None)
    if getattr(cfg, "model_type", None) != "llama":
        return f"model type {getattr(cfg, 'model_type', None)!r} is not llama"
    if getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "pretraining_tp", 1) != 1:
        return "only silu MLPs without tensor-parallel slicing are fused"
    inner = getattr(base, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(base, "lm_head"):
        return "not a LlamaForCausalLM layout"
    return None


# --- the fused pieces (pure functions: one compile serves every layer) ------------------


def rms_norm(x, weight, eps: float):
    import torch

    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def add_rms_norm(x, y, weight, eps: float):
    """The residual add, then the next norm: (new residual stream, its normalised copy)."""
    s = x + y
    return s, rms_norm(s, weight, eps)


def rotary(q, k, cos, sin):
    """q [rows, heads, 1, d], k [rows, kv heads, 1, d]; cos/sin [rows, 1, d]."""
    import torch

    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)

    def turn(x):
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    return (q * cos) + (turn(q) * sin), (k * cos) + (turn(k) * sin)


def masked_softmax(scores, valid, scaling: float, dtype):
    """scores [rows, kv heads, groups, length]; valid [rows, length] (bool)."""
    import torch

    s = scores.float() * scaling
    s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
    return torch.softmax(s, dim=-1).to(dtype)


def silu_mul(gate, up):
    import torch

    return torch.nn.functional.silu(gate) * up


PIECES = (rms_norm, add_rms_norm, rotary, masked_softmax, silu_mul)


# The same pieces for prompts (prefill). They are separate functions on purpose: torch.compile
# keeps its compiled variants per code object, so the prompt shapes (rows x width, which vary
# batch to batch) get their own dynamic-shape kernels and never re-specialise the decode
# step's static ones, which CUDA graphs have captured.
def prompt_rms_norm(x, weight, eps: float):
    return rms_norm(x, weight, eps)


def prompt_add_rms_norm(x, y, weight, eps: float):
    return add_rms_norm(x, y, weight, eps)


def prompt_rotary(q, k, cos, sin):
    return rotary(q, k, cos, sin)


def prompt_silu_mul(gate, up):
    return silu_mul(gate, up)


PROMPT_PIECES = (prompt_rms_norm, prompt_add_rms_norm, prompt_rotary, prompt_silu_mul)


def compile_failure(e: BaseException) -> bool:
    """Did torch.compile fail (no Triton, an Inductor error, the recompile limit)?"""
    import torch

    hit_limit = getattr(torch._dynamo.exc, "FailOnRecompileLimitHit", ())  # not a TorchDynamoException
    return isinstance(e, (torch._dynamo.exc.TorchDynamoException, hit_limit))


def _ops(compiled: bool, pieces=PIECES, prefix: str = "") -> SimpleNamespace:
    """The pieces by name (less `prefix`): as they are, or each behind torch.compile."""
    names = [f.__name__.removeprefix(prefix) for f in pieces]
    if not compiled:
        return SimpleNamespace(**dict(zip(names, pieces)))
    import torch

    # emulate_precision_casts: round to bf16 where eager rounds, so the two stay close.
    return SimpleNamespace(**{name: torch.compile(f, dynamic=None, fullgraph=True,
                                                  options={"emulate_precision_casts": True})
                              for name, f in zip(names, pieces)})


EAGER_PROMPT_OPS = _ops(False, PROMPT_PIECES, "prompt_")


def _packed(modules, key: str):
    """One weight matrix for `modules` (plain bias-free Linear layers on one device and
    dtype), their weights re-pointed to row slices of it; None when they do not qualify.

    Kept on the first module under `key`, so a second FusedLlamaStep on the same model
    (the graph engine's fallback after a failed compile) reuses it instead of packing again.
    """
    import torch

    first = modules[0]
    kept = getattr(first, key, None)
    if kept is not None and kept.data_ptr() == first.weight.data_ptr():
        return kept
    if any(type(m) is not torch.nn.Linear or m.bias is not None for m in modules):
        return None
    weights = [m.weight for m in modules]
    if len({(w.device, w.dtype) for w in weights}) != 1:
        return None
    with torch.no_grad():
        packed = torch.cat([w.detach() for w in weights], dim=0)
        row = 0
        for m in modules:
            n = m.weight.shape[0]
            m.weight.data = packed[row:row + n]
            row += n
    setattr(first, key, packed)
    return packed


class FusedLlamaStep:
    """`step(token, position, valid, column, cache)` → logits [rows, vocab] for one new token per row;
    `step.prefill(ids, position, mask, write)` runs whole prompts the same way."""

    def __init__(self, model, compile: bool, pack: bool = True):  # noqa: A002 (torch.compile's word)
        why = supports(model)
        if why:
            raise ValueError(f"the fused decode step cannot run this model: {why}")
        self.lm = base_model(model)
        self.ops = _ops(compile)
        # Rows and width change every batch: after its first recompile torch.compile makes
        # them symbolic (the hidden size, which never changes, stays a constant).
        self.prompt_ops = _ops(compile, PROMPT_PIECES, "prompt_")
        self.prompt_fallback: str | None = None  # why the prompt pieces went eager, if they did
        self.compiled, self.pack = compile, pack
        cfg = self.lm.config
        self.eps = float(cfg.rms_norm_eps)
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        # Per layer: (packed q/k/v weight or None, packed gate/up weight or None).
        self.packed = [self._pack(layer) if pack else (None, None) for layer in self.lm.model.layers]

    def __call__(self, token, position, valid, column, cache: Any):
        inner, ops = self.lm.model, self.ops
        layers = inner.layers
        rows, d = token.shape[0], self.head_dim
        h = inner.embed_tokens(token)  # [rows, 1, hidden]
        cos, sin = inner.rotary_emb(h, position)
        n = ops.rms_norm(h, layers[0].input_layernorm.weight, self.eps)
        for i, layer in enumerate(layers):
            attn, mlp, kv = layer.self_attn, layer.mlp, cache.layers[i]
            qkv, gate_up = self.packed[i]
            q, k, v = self._project(n, qkv, (attn.q_proj, attn.k_proj, attn.v_proj))
            q, k, v = (t.view(rows, 1, -1, d).transpose(1, 2) for t in (q, k, v))
            q, k = ops.rotary(q, k, cos, sin)
            kv.keys.index_copy_(2, column, k)
            kv.values.index_copy_(2, column, v)
            o = attn.o_proj(self._attend(q, kv.keys, kv.values, valid, attn.scaling))
            h, n = ops.add_rms_norm(h, o, layer.post_attention_layernorm.weight, self.eps)
            m = mlp.down_proj(ops.silu_mul(*self._project(n, gate_up, (mlp.gate_proj, mlp.up_proj))))
            after = layers[i + 1].input_layernorm.weight if i + 1 < len(layers) else inner.norm.weight
            h, n = ops.add_rms_norm(h, m, after, self.eps)
        return self.lm.lm_head(n)[:, -1, :]

    def prefill(self, ids, position, mask, write):
        """Logits [rows, vocab] after each row's last prompt token; `write(i, k, v)` stores layer i's
        keys (after rotary) and values, [rows, kv heads, width, head dim], wherever the caller keeps them.
        When `write` returns (keys, values) instead of None, the prompt's queries attend to those
        (a cached prefix followed by these tokens, [rows, kv heads, keys, head dim]) under `mask`
        [rows, 1, width, keys], which must then be given: how the graph engine prefills only what
        a prompt adds to its cached prefix.

        The same fusion as the decode step, for a prompt batch: at 32 rows x 512 tokens the
        matrix products are compute-bound, and transformers' eager norms, rotary and SiLU move
        ~5 GB a layer through memory between them. `mask` is [rows, 1, width, width], True
        where a query may attend, or None when no row is padded (plain causal attention, which
        the flash kernel serves). Only the last position's logits are needed, so the last
        layer runs attention and MLP for that position alone (its K/V still cover every token).
        """
        try:
            return self._prefill(ids, position, mask, write, self.prompt_ops)
        except Exception as e:  # noqa: BLE001 -- a compile failure: same arithmetic, eagerly
            if not (self.compiled and compile_failure(e)):
                raise
            self.prompt_fallback = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            self.prompt_ops = EAGER_PROMPT_OPS
            return self._prefill(ids, position, mask, write, self.prompt_ops)

    def _prefill(self, ids, position, mask, write, ops):
        inner = self.lm.model
        layers = inner.layers
        rows, width, d = ids.shape[0], ids.shape[1], self.head_dim
        h = inner.embed_tokens(ids)  # [rows, width, hidden]
        cos, sin = inner.rotary_emb(h, position)
        n = ops.rms_norm(h, layers[0].input_layernorm.weight, self.eps)
        for i, layer in enumerate(layers):
            attn, mlp = layer.self_attn, layer.mlp
            qkv, gate_up = self.packed[i]
            q, k, v = self._project(n, qkv, (attn.q_proj, attn.k_proj, attn.v_proj))
            q, k, v = (t.view(rows, width, -1, d).transpose(1, 2) for t in (q, k, v))
            q, k = ops.rotary(q, k, cos, sin)
            seen = write(i, k, v)
            if seen is not None:  # the caller's cached prefix and these tokens, under `mask`
                k, v = seen
            causal = True
            if i == len(layers) - 1:  # from here on only the last position matters
                q, h, causal = q[:, :, -1:], h[:, -1:], False  # the last query sees every key
                mask = None if mask is None else mask[:, :, -1:]
                # One token a row is too little work to fuse; eager keeps these shapes (and
                # the width-dependent strides of the slices) away from the compiled pieces,
                # whose recompiles torch caps at 8 a function.
                ops = EAGER_PROMPT_OPS
            o = attn.o_proj(self._attend_prompt(q, k, v, mask, attn.scaling, causal))
            h, n = ops.add_rms_norm(h, o, layer.post_attention_layernorm.weight, self.eps)
            m = mlp.down_proj(ops.silu_mul(*self._project(n, gate_up, (mlp.gate_proj, mlp.up_proj))))
            after = layers[i + 1].input_layernorm.weight if i + 1 < len(layers) else inner.norm.weight
            h, n = ops.add_rms_norm(h, m, after, self.eps)
        return self.lm.lm_head(n[:, -1:])[:, -1, :]

    @staticmethod
    def _attend_prompt(q, k, v, mask, scaling: float, causal: bool):
        """Attention over the prompt; [rows, queries, heads x head dim].

        With a mask, each K/V head is repeated to its query group, as transformers' SDPA path
        does when a mask is given. Without one, the kernel reads the K/V heads as they are
        (`enable_gqa`), and `causal` says whether to hide later keys.
        """
        import torch

        sdpa = torch.nn.functional.scaled_dot_product_attention
        b, heads, queries, d = q.shape
        kv_heads, width = k.shape[1], k.shape[2]
        if mask is None:
            out = sdpa(q, k, v, is_causal=causal, scale=scaling, enable_gqa=heads != kv_heads)
        else:
            if heads != kv_heads:
                groups = heads // kv_heads
                k, v = (t[:, :, None].expand(b, kv_heads, groups, width, d).reshape(b, heads, width, d)
                        for t in (k, v))
            out = sdpa(q, k, v, attn_mask=mask, scale=scaling)
        return out.transpose(1, 2).reshape(b, queries, heads * d)

    @staticmethod
    def _pack(layer):
        attn, mlp = layer.self_attn, layer.mlp
        return (_packed([attn.q_proj, attn.k_proj, attn.v_proj], "_restreact_qkv"),
                _packed([mlp.gate_proj, mlp.up_proj], "_restreact_gate_up"))

    @staticmethod
    def _project(x, packed, modules):
        """Each module's output: one matrix product on the packed weight, or one per module."""
        if packed is None:
            return tuple(m(x) for m in modules)
        import torch

        return torch.nn.functional.linear(x, packed).split([m.weight.shape[0] for m in modules], dim=-1)

    def _attend(self, q, keys, values, valid, scaling: float):
        """One query per row; each K/V head read once for its group of query heads."""
        import torch

        b, heads, _, d = q.shape
        kv_heads = keys.shape[1]
        q = q.reshape(b, kv_heads, heads // kv_heads, d)  # heads are kv-head-major, as repeat_kv assumes
        probs = self.ops.masked_softmax(torch.matmul(q, keys.transpose(-1, -2)), valid, scaling,
                                        values.dtype)
        return torch.matmul(probs, values).reshape(b, 1, heads * d)
