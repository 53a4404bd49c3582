"""Warm-starting a pretrained model by distillation: a teacher's steps, then LoRA.

The paper trains its small models on a larger model's trajectories; here the teacher is any
policy that can walk a world (a world's scripted reader, deliberately imperfect, or any
`--teacher` model spec) and the student is any local model (`--model smollm2`, a folder).
The teacher walks freshly generated *training* worlds only, never the worlds anything is
evaluated on, and every step it takes becomes one example: the prompt rendered the way the
student's backend renders it (its chat template), the teacher's output as the completion,
loss on the completion. The result is a LoRA adapter small enough to ship, plus a JSON record
of what made it.

    python cli.py pocket distill --model smollm2 --worlds 150 --out data/pocket/smollm2   # GPU: minutes
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

RECORD = "warmstart.json"


@dataclass
class DistillConfig:
    model: str = "smollm2"  # the student: any local-model spec (agent/llm/factory.py)
    worlds: int = 150  # fresh training worlds the teacher walks
    questions_per_world: int = 20
    teacher: str = ""  # a model spec; "" = the world's scripted reader
    error_rate: float = 0.3  # the scripted teacher's mistake rate: iteration 0 leaves room
    mistake_weights: dict = field(default_factory=lambda: {"summarize": 2.0, "answer": 1.5})
    lora_r: int = 8  # rank 8 on all seven projections: about 2.4 M weights, ~5 MB in bf16
    learning_rate: float = 5e-4
    epochs: float = 1.0
    batch: int = 16
    max_length: int = 1024
    workers: int = 0  # processes for the teacher's walks (0 = all cores)
    seed: int = 0
    time_limit_s: float = 0.0


def teacher_steps(cfg: DistillConfig) -> list[dict]:
    """The teacher's steps ({kind, prompt, completion}) on cfg.worlds fresh training worlds."""
    from trainer.pocket import PocketConfig, seed_data

    pcfg = PocketConfig(worlds=cfg.worlds, questions_per_world=cfg.questions_per_world,
                        error_rate=cfg.error_rate, mistake_weights=dict(cfg.mistake_weights),
                        workers=cfg.workers, seed=cfg.seed, teacher=cfg.teacher)
    steps, _docs = seed_data(pcfg)
    return steps


def distill(cfg: DistillConfig, out: Path, log=print, steps: list[dict] | None = None,
            record: str | None = RECORD) -> dict:
    """Collect the teacher's steps (unless given) and LoRA-tune the student; returns metrics
    (and writes them to `out/record` unless the caller keeps its own record)."""
    from agent.llm.factory import local_model_path
    from trainer.config import TrainConfig
    from trainer.examples import Example
    from trainer.sft import train

    t0 = time.perf_counter()
    if steps is None:
        steps = teacher_steps(cfg)
        log(f"teacher: {len(steps)} steps from {cfg.worlds} fresh worlds "
            f"in {time.perf_counter() - t0:.0f}s")
    base = local_model_path(cfg.model, log=log)
    tok = _tokenizer(base)
    from agent.llm.hf import render_prompt

    examples = [Example(None, render_prompt(tok, s["prompt"]), s["completion"]) for s in steps]
    random.Random(cfg.seed).shuffle(examples)
    tcfg = TrainConfig(base_model=base, output_dir=str(out), method="lora", loss="completion",
                       lora_r=cfg.lora_r, lora_alpha=cfg.lora_r, learning_rate=cfg.learning_rate,
                       epochs=cfg.epochs, per_device_batch=cfg.batch, grad_accum=1,
                       warmup_steps=20, max_length=cfg.max_length, gradient_checkpointing=False,
                       use_unsloth=False, lr_scheduler="cosine", logging_steps=20, seed=cfg.seed,
                       time_limit_s=cfg.time_limit_s)
    result = train(examples, tcfg, on_log=lambda d: log(json.dumps(d)) if "loss" in d else None)
    _adapter_to_bf16(out)
    metrics = {**result.metrics, "teacher_steps": len(steps), "base": base,
               "base_sha256": _weights_sha(Path(base)), "config": asdict(cfg),
               "wall_s": round(time.perf_counter() - t0, 1)}
    if record:
        (out / record).write_text(json.dumps(metrics, indent=1, default=str))
    return metrics


def merge(base: str, adapter: str | Path, out: Path) -> Path:
    """Fold a LoRA adapter into its base and save the whole model (bf16) with its tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    _tokenizer(base).save_pretrained(out)
    return out


def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _adapter_to_bf16(out: Path) -> None:
    """Half the bytes of the fp32 adapter PEFT writes, so it ships in the repository."""
    import torch
    from safetensors.torch import load_file, save_file

    f = out / "adapter_model.safetensors"
    if f.is_file():
        save_file({k: v.to(torch.bfloat16) for k, v in load_file(f).items()}, f)


def _weights_sha(folder: Path) -> str | None:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()
