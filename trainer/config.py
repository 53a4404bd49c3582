"""How a training run is configured: one dataclass whose fields document themselves.

The defaults are unsloth's Llama-3-8B recipe: LoRA r=16, alpha=16, no
dropout, all seven projections, batch 2 x grad-accum 4, lr 2e-4 on a linear schedule,
adamw_8bit. Every field carries its help text in `metadata["help"]`, so a CLI can expose
the fields as flags and the resolved config (`to_dict`) is saved with every model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Literal, Union

REPORT_TO = ("none", "tensorboard", "wandb")
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _f(default, help: str, **kw):
    """A dataclass field with its help text (lists need a factory)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TrainConfig:
    # --- what to train, and where it goes ---
    base_model: str = _f("", "Base model: a local directory or a hub id (offline: a local directory).")
    output_dir: str = _f("adapter", "Where the adapter (LoRA) or the whole model (full) is saved.")
    method: Literal["lora", "full"] = _f("lora", "'lora' trains a LoRA adapter; 'full' trains every weight.")

    # --- LoRA (unsloth's Llama-3 recipe) ---
    lora_r: int = _f(16, "LoRA rank.")
    lora_alpha: int = _f(16, "LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = _f(0.0, "Dropout on the LoRA path; 0 lets unsloth use its fast kernels.")
    target_modules: list[str] = _f(list(LLAMA_PROJECTIONS),
                                   "Module names LoRA wraps: the seven Llama projections by default.")

    # --- optimisation ---
    learning_rate: float = _f(2e-4, "Peak learning rate.")
    lr_scheduler: str = _f("linear", "Learning-rate schedule after warm-up (a transformers scheduler name).")
    warmup_steps: int = _f(5, "Optimizer steps of linear warm-up.")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    epochs: float = _f(1.0, "Passes over the examples (ignored when max_steps > 0).")
    max_steps: int = _f(-1, "Stop after this many optimizer steps; -1 = run the epochs.")
    per_device_batch: int = _f(2, "Sequences per forward pass.")
    grad_accum: int = _f(4, "Forward passes accumulated per optimizer step.")
    max_batch_tokens: int = _f(
        0, "Cap on padded tokens (rows x longest row) per forward pass, which sets peak activation "
        "memory: batches then group rows of similar length (in place of group_by_length), up to "
        "per_device_batch rows within the cap; an example longer than the cap trains alone. 0 = off.")
    optim: str = _f("auto", "Optimizer name for transformers; 'auto' = adamw_8bit on CUDA with bitsandbytes, "
                   "else adamw_torch.")
    seed: int = _f(3407, "Seed for LoRA init, data order and dropout: same seed, same run.")

    # --- data and loss ---
    max_length: int = _f(2048, "Longest sequence in tokens; longer prompts lose their left end.")
    loss: Literal["completion", "full"] = _f(
        "completion", "'completion' = loss on the chosen output only; 'full' = on the whole sequence "
        "(what first taught the pocket model to copy names, docs/NOTEBOOK.md).")
    group_by_length: bool = _f(True, "Batch sequences of similar length together (less padding).")
    padding_free: bool = _f(False, "Flatten each batch into one unpadded sequence (needs flash-attention).")
    packing: bool = _f(False, "Pack several examples into max_length blocks (best-fit; needs flash-attention).")

    # --- precision, memory, backend ---
    bf16: Union[bool, Literal["auto"]] = _f("auto", "bfloat16 mixed precision; 'auto' = on where supported.")
    load_in_4bit: bool = _f(False, "QLoRA: load the base model in 4 bits (bitsandbytes, CUDA only).")
    gradient_checkpointing: bool = _f(True, "Recompute activations in backward: less memory, ~30% slower.")
    cpu: bool = _f(False, "Train on the CPU even when a GPU is visible.")
    use_unsloth: Union[bool, Literal["auto"]] = _f(
        "auto", "unsloth's FastLanguageModel: 'auto' = when CUDA and `import unsloth` work; "
        "True = required; False = never.")
    logging_steps: int = _f(1, "Report the loss every this many optimizer steps.")
    time_limit_s: float = _f(0.0, "Stop training (and still save) after this many seconds; 0 = no limit.")

    # --- experiment tracking (trainer/tracking.py) ---
    report_to: str = _f("none", "Where TRL reports training: 'none', 'tensorboard' or 'wandb' (each "
                        "needs its package).")
    run_name: str = _f("", "The tracked run's name (W&B run name); '' = the trainer's default.")
    logging_dir: str = _f("", "TensorBoard event folder for this training; '' = under the output dir.")

    def __post_init__(self) -> None:
        if self.method not in ("lora", "full"):
            raise ValueError(f"method must be 'lora' or 'full', not {self.method!r}")
        if self.loss not in ("completion", "full"):
            raise ValueError(f"loss must be 'completion' or 'full', not {self.loss!r}")
        if self.use_unsloth not in ("auto", True, False):
            raise ValueError(f"use_unsloth must be 'auto', True or False, not {self.use_unsloth!r}")
        if self.bf16 not in ("auto", True, False):
            raise ValueError(f"bf16 must be 'auto', True or False, not {self.bf16!r}")
        if self.max_batch_tokens < 0:
            raise ValueError(f"max_batch_tokens must be 0 (off) or positive, not {self.max_batch_tokens}")
        if self.report_to not in REPORT_TO:
            raise ValueError(f"report_to must be one of {', '.join(REPORT_TO)}, not {self.report_to!r}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, not {self.max_length}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Build from a saved dict, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @staticmethod
    def help() -> dict[str, str]:
        """Field name → help text, for CLI flags and docs."""
        return {f.name: f.metadata.get("help", "") for f in fields(TrainConfig)}

    def resolved_optim(self, cuda: bool) -> str:
        # adamw_8bit needs bitsandbytes and a GPU; elsewhere the plain torch AdamW.
        if self.optim != "auto":
            return self.optim
        import importlib.util

        has_bnb = importlib.util.find_spec("bitsandbytes") is not None
        return "adamw_8bit" if cuda and has_bnb else "adamw_torch"

    def resolved_bf16(self, cuda: bool) -> bool:
        """'auto': bf16 on a GPU that supports it, and on a CPU only where it has bf16
        instructions (AVX512-BF16 or AMX). Elsewhere bf16 is emulated: on a 2-core AVX2 CPU
        two LoRA steps of the pocket model took over 300 s in bf16 against 17 s in fp32."""
        if self.bf16 != "auto":
            return bool(self.bf16)
        if cuda:
            import torch

            return torch.cuda.is_bf16_supported()
        return cpu_has_bf16()


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (torch has no public query for it yet)."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
