"""One LoRA adapter from two stacked ones: a warm start and what `improve` trained on top of it.

`improve` from a distilled warm start trains each iteration's adapter on the *merged* warm
model (base + B1·A1·s1). Shipping that adapter alone would need the merged model too (270 MB
for SmolLM2). But the two updates add: W + s1·B1·A1 + s2·B2·A2 = W + [s1·B1 | s2·B2] · [A1 ; A2],
which is exactly one LoRA adapter of rank r1 + r2 on the base (scale 1). So the improved model
ships as one adapter over the bare base, loaded like any other (`--adapter DIR`).

    python -c "from trainer.stacking import stack; stack('data/pocket/smollm2', 'runs/work/rules/it3/adapter', 'out')"
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


def _load(folder: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    cfg = json.loads((folder / CONFIG).read_text())
    if cfg.get("use_dora") or cfg.get("use_rslora") or cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise ValueError(f"{folder}: only plain LoRA adapters (one r, one alpha) can be stacked")
    return cfg, load_file(folder / WEIGHTS)


def _pairs(weights: dict) -> dict[str, tuple]:
    """module name -> (A, B) from PEFT's `...lora_A.weight` / `...lora_B.weight` keys."""
    out: dict[str, list] = {}
    for key, tensor in weights.items():
        for i, part in enumerate(("lora_A", "lora_B")):
            marker = f".{part}."
            if marker in key:
                out.setdefault(key.split(marker)[0], [None, None])[i] = tensor
    return {m: tuple(ab) for m, ab in out.items() if None not in ab}


def stack(inner: str | Path, outer: str | Path, out: str | Path) -> Path:
    """Write to `out` one adapter equal to `inner` then `outer` (outer trained on base+inner)."""
    import torch
    from safetensors.torch import save_file

    inner, outer, out = Path(inner), Path(outer), Path(out)
    (c1, w1), (c2, w2) = _load(inner), _load(outer)
    s1, s2 = c1["lora_alpha"] / c1["r"], c2["lora_alpha"] / c2["r"]
    p1, p2 = _pairs(w1), _pairs(w2)
    r = c1["r"] + c2["r"]
    stacked = {}
    for module in sorted(set(p1) | set(p2)):
        a1, b1 = p1.get(module, (None, None))
        a2, b2 = p2.get(module, (None, None))
        ref_a, ref_b = (a1, b1) if a1 is not None else (a2, b2)
        zeros_a = lambda n: ref_a.new_zeros(n, ref_a.shape[1])  # noqa: E731
        zeros_b = lambda n: ref_b.new_zeros(ref_b.shape[0], n)  # noqa: E731
        a = torch.cat([a1.float() if a1 is not None else zeros_a(c1["r"]).float(),
                       a2.float() if a2 is not None else zeros_a(c2["r"]).float()])
        b = torch.cat([b1.float() * s1 if b1 is not None else zeros_b(c1["r"]).float(),
                       b2.float() * s2 if b2 is not None else zeros_b(c2["r"]).float()], dim=1)
        dtype = ref_a.dtype
        stacked[f"{module}.lora_A.weight"] = a.to(dtype).contiguous()
        stacked[f"{module}.lora_B.weight"] = b.to(dtype).contiguous()
    # inner's config names the bare base (outer's names the merged model it trained on)
    cfg = {**c1, "r": r, "lora_alpha": r,  # scale 1: the scales are folded into B
           "target_modules": sorted(set(c1["target_modules"]) | set(c2["target_modules"]))}
    out.mkdir(parents=True, exist_ok=True)
    save_file(stacked, out / WEIGHTS)
    (out / CONFIG).write_text(json.dumps(cfg, indent=2))
    return out
