"""Two stacked LoRA adapters folded into one: the same model as merging them one after another."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny import build_tiny_model


def _random_adapter(base: Path, out: Path, r: int, alpha: int, seed: int, modules) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=list(modules),
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))
    with torch.no_grad():  # B starts at zero in PEFT: give both factors weight
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.2)
    peft.save_pretrained(out)
    return out


def test_a_stacked_adapter_equals_merging_both_in_turn(tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from trainer.stacking import stack
    from trainer.warmstart import merge

    base = build_tiny_model(tmp_path / "base")
    inner = _random_adapter(base, tmp_path / "inner", r=4, alpha=8, seed=1,
                            modules=["q_proj", "v_proj", "down_proj"])
    warm = merge(str(base), inner, tmp_path / "warm")
    warm_model = AutoModelForCausalLM.from_pretrained(warm, dtype=torch.float32)
    # the outer adapter trains on the merged model, on other modules too
    outer = _random_adapter(warm, tmp_path / "outer", r=2, alpha=2, seed=2,
                            modules=["q_proj", "o_proj", "up_proj"])
    stacked = stack(inner, outer, tmp_path / "stacked")

    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.no_grad():
        want = PeftModel.from_pretrained(warm_model, str(outer)).eval()(ids).logits
        got = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base),
                                        str(stacked)).eval()(ids).logits
        bare = AutoModelForCausalLM.from_pretrained(base)(ids).logits
    assert not torch.allclose(bare, want, atol=1e-2)  # the adapters do change the model
    assert torch.allclose(got, want, atol=2e-3), (got - want).abs().max()


def test_only_plain_lora_stacks(tmp_path):
    import json

    from trainer.stacking import stack

    base = build_tiny_model(tmp_path / "base")
    a = _random_adapter(base, tmp_path / "a", r=2, alpha=2, seed=1, modules=["q_proj"])
    cfg = json.loads((a / "adapter_config.json").read_text())
    (a / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(ValueError, match="only plain LoRA"):
        stack(a, a, tmp_path / "out")
