"""Supervised fine-tuning on step examples: setup → train → save.

Run it:
    from trainer.config import TrainConfig
    from trainer.examples import load_alpaca
    from trainer.sft import train
    result = train(examples, TrainConfig(base_model="path/to/llama", output_dir="adapters/it1"))

Two paths share one recipe. Path A (default, CPU and GPU): transformers + PEFT LoRA under
TRL's `SFTTrainer`, fed a pre-tokenized dataset (input_ids + completion_mask) so the prompt
tokens are exactly the rollout's. Path B (CUDA with unsloth installed): unsloth's
`FastLanguageModel` with its gradient checkpointing, about 1.8x faster and 40% less memory
on an 8B model; the same trainer and data run on top of it.

Heavy imports live inside functions: unsloth must be imported before transformers and TRL
to patch them, and `cli.py --help` must stay fast.
"""

from __future__ import annotations

import errno
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from trainer.config import TrainConfig
from trainer.examples import Example, tokenize_examples

MARKER = "restreact_train.json"  # written into every output dir: config, metrics, lineage


class TrainError(RuntimeError):
    """Training cannot start or finish; the message is one line meant for the user."""


@dataclass
class TrainResult:
    output_dir: str  # the LoRA adapter (adapter=True) or the whole model (adapter=False)
    adapter: bool
    # train_loss, steps, tokens, tokens_per_s, runtime_s, peak_gib, max_padded_tokens,
    # loss_curve, examples, backend
    metrics: dict
    config: dict = field(default_factory=dict)  # the resolved TrainConfig
    model: Any = field(default=None, repr=False, compare=False)  # in memory, only with keep_model


def train(examples: Sequence[Example], cfg: TrainConfig,
          on_log: Callable[[dict], None] | None = None, keep_model: bool = False) -> TrainResult:
    """Fine-tune `cfg.base_model` on `examples`; save to `cfg.output_dir`; report metrics.

    `on_log` receives the trainer's log dicts (step, loss, learning_rate, ...) as they come.
    `keep_model` returns the trained model in `result.model`; by default it is dropped so
    an 8B model's GPU memory is free for the evaluation that usually follows.
    """
    if not examples:
        raise TrainError("no training examples: rank some finished trajectories first "
                         "(or pass an Alpaca file); nothing was trained")
    out = _check_output_dir(Path(cfg.output_dir))

    # --- setup
    model, tok, peft_config, cuda, unsloth = setup(cfg)
    dataset = build_dataset(tok, examples, cfg)

    # --- train
    with tempfile.TemporaryDirectory(prefix="restreact-trainer-") as scratch:
        trainer = make_trainer(model, tok, dataset, cfg, cuda, peft_config, scratch,
                               unsloth=unsloth, on_log=on_log)
        t0 = time.perf_counter()
        output = trainer.train()
        runtime = time.perf_counter() - t0
    # Unwrapped, so the model no longer runs under the Trainer's mixed-precision autocast.
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    model.config.use_cache = True  # the Trainer turned it off; generation is ~8x slower without
    metrics = _metrics(trainer, output.training_loss, runtime, cuda, len(dataset))
    metrics["backend"] = "unsloth" if unsloth else "transformers"
    metrics["processes"] = trainer.accelerator.num_processes  # > 1 under a multi-GPU launch

    # --- save
    result = TrainResult(output_dir=str(out), adapter=cfg.method == "lora", metrics=metrics,
                         config=cfg.to_dict())
    if trainer.accelerator.is_main_process:  # under DDP every rank holds the same weights
        from agent import interrupt

        with interrupt.deferred():  # Ctrl-C while saving: the model is saved whole first
            save(model, tok, out, result)
    if keep_model:
        result.model = model
    return result


# --- setup -----------------------------------------------------------------------------


def setup(cfg: TrainConfig):
    """Load model and tokenizer for `cfg` → (model, tokenizer, peft_config, cuda, unsloth).

    peft_config is the LoRA config SFTTrainer applies (Path A), or None when the model is
    already wrapped (unsloth) or trained in full.
    """
    cuda = not cfg.cpu and _cuda_available()
    unsloth = _want_unsloth(cfg, cuda)  # decided (and imported) before transformers loads
    import torch
    from transformers import set_seed

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    set_seed(cfg.seed)  # before the model exists: LoRA's init is random
    if unsloth:
        model, tok, peft_config = _setup_unsloth(cfg)
    else:
        model, tok, peft_config = _setup_hf(cfg, cuda)
    return model, tok, peft_config, cuda, unsloth


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _want_unsloth(cfg: TrainConfig, cuda: bool) -> bool:
    """Decide on Path B, importing unsloth now (it must come before transformers/TRL)."""
    if cfg.use_unsloth is False or (cfg.use_unsloth == "auto" and not cuda):
        return False
    if not cuda:
        raise TrainError("use_unsloth=True needs a CUDA GPU; none is visible or cpu=True "
                         "(use --no-unsloth)")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:  # unsloth's loader needs it, even for 16-bit
        if cfg.use_unsloth is True:
            raise TrainError("use_unsloth=True needs bitsandbytes (pip install '.[gpu]')")
        return False
    try:
        import unsloth  # noqa: F401  (patches transformers, peft and trl on import)
    except Exception as e:  # ImportError, or unsloth's own checks failing
        if cfg.use_unsloth is True:
            raise TrainError(f"use_unsloth=True but `import unsloth` failed: {str(e).splitlines()[0]} "
                             "(pip install '.[gpu]')") from None
        return False
    return True


def _load_error(base: str, e: Exception) -> TrainError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return TrainError(f"cannot load base model {base!r} ({first}); point --model at a local directory "
                      "holding config.json, the weights and the tokenizer (no model hub offline)")


def _setup_hf(cfg: TrainConfig, cuda: bool):
    """Path A: transformers model + tokenizer; PEFT wraps the model inside SFTTrainer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not cfg.base_model:
        raise TrainError("no base model given: pass --model with a local model directory")
    if cfg.load_in_4bit and not cuda:
        raise TrainError("load_in_4bit needs a CUDA GPU (bitsandbytes); drop --4bit on CPU")
    kwargs: dict[str, Any] = {}
    kwargs["dtype"] = getattr(torch, weights_dtype(cfg, cuda))
    if cfg.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        import os

        if "LOCAL_RANK" in os.environ:  # QLoRA under DDP: each rank quantizes onto its own GPU
            kwargs["device_map"] = {"": _rank_device()}
    try:
        tok = AutoTokenizer.from_pretrained(cfg.base_model)
        model = AutoModelForCausalLM.from_pretrained(cfg.base_model, **kwargs)
    except (OSError, ValueError) as e:
        raise _load_error(cfg.base_model, e) from None
    if cuda and not cfg.load_in_4bit:
        model.to(_rank_device())
    return model, tok, _lora_config(cfg) if cfg.method == "lora" else None


def _rank_device() -> str:
    """This process's GPU: under a multi-GPU launch (DDP) rank r owns cuda:LOCAL_RANK,
    so the ranks do not all load their copy of the model onto GPU 0 first."""
    import os

    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


def _lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM")


def _setup_unsloth(cfg: TrainConfig):
    """Path B: unsloth's FastLanguageModel, LoRA applied here (the trainer gets no peft_config)."""
    import torch
    from unsloth import FastLanguageModel

    if not cfg.base_model:
        raise TrainError("no base model given: pass --model with a local model directory")
    try:
        model, tok = FastLanguageModel.from_pretrained(
            model_name=cfg.base_model, max_seq_length=cfg.max_length,
            # Full fine-tuning keeps fp32 master weights here too (see weights_dtype).
            dtype=(torch.float32 if cfg.method == "full"
                   else torch.bfloat16 if cfg.resolved_bf16(True) else torch.float16),
            load_in_4bit=cfg.load_in_4bit, full_finetuning=cfg.method == "full")
    except (OSError, ValueError, RuntimeError) as e:
        raise _load_error(cfg.base_model, e) from None
    if cfg.method == "lora":
        model = FastLanguageModel.get_peft_model(
            model, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules), bias="none",
            use_gradient_checkpointing="unsloth" if cfg.gradient_checkpointing else False,
            random_state=cfg.seed, max_seq_length=cfg.max_length)
    return model, tok, None


def build_dataset(tok, examples: Sequence[Example], cfg: TrainConfig):
    """A pre-tokenized `datasets.Dataset`: input_ids (+ completion_mask for completion loss).

    TRL turns completion_mask into labels (-100 on the prompt) when completion_only_loss is
    on; without the column every token carries loss (cfg.loss == "full").
    """
    from datasets import Dataset

    if tok.pad_token is None:  # TRL pads with it; Llama-3 ships none
        tok.pad_token = tok.eos_token
    rows = tokenize_examples(tok, examples, cfg.max_length)
    if cfg.loss == "full":
        rows = [{"input_ids": r["input_ids"]} for r in rows]
    return Dataset.from_list(rows)


def sft_config(cfg: TrainConfig, cuda: bool, output_dir: str, unsloth: bool = False):
    """TRL's SFTConfig for this TrainConfig (also used by tests to prepare data the same way)."""
    from trl import SFTConfig

    # Padding-free without packing cannot enforce max_length; examples are already cut to it.
    max_length = None if (cfg.padding_free and not cfg.packing) else cfg.max_length
    return SFTConfig(
        output_dir=output_dir, report_to=cfg.report_to, run_name=cfg.run_name or None,
        save_strategy="no", disable_tqdm=True,
        use_cpu=not cuda, bf16=cfg.resolved_bf16(cuda), fp16=False,
        per_device_train_batch_size=cfg.per_device_batch,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        optim=cfg.resolved_optim(cuda), seed=cfg.seed, data_seed=cfg.seed,
        logging_steps=cfg.logging_steps, max_length=max_length,
        completion_only_loss=cfg.loss == "completion",
        packing=cfg.packing, padding_free=cfg.padding_free,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        include_num_input_tokens_seen="non_padding", dataloader_num_workers=0,
        # unsloth does its own (offloaded) checkpointing inside the model.
        **{_checkpointing_field(SFTConfig): cfg.gradient_checkpointing and not unsloth},
    )


def _checkpointing_field(config_class) -> str:
    """transformers 5.25 renamed gradient_checkpointing to activation_checkpointing (the old
    name warns); 5.17, which unsloth needs, knows only the old one."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_class)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def _trainer_class():
    """SFTTrainer, with a plain-PyTorch loss where TRL's fused Triton loss cannot run, and
    token-budget batches when `max_batch_tokens` is set.

    TRL computes the training loss through its fused LM head (`fused_lm_head=True`), a Triton
    kernel on CUDA/XPU. TRL 1.15 has no fallback: on a CPU, or without triton, it fails with
    "'NoneType' object has no attribute 'apply'" (1.16 falls back to chunked PyTorch). There
    the model's own cross-entropy over the same labels is used, with either release, so both
    train alike.
    """
    from transformers import Trainer
    from transformers.utils import is_triton_available
    from trl import SFTTrainer  # after `import unsloth` this is unsloth's patched class

    fused = is_triton_available()

    class RestreactSFTTrainer(SFTTrainer):
        max_batch_tokens = 0  # set by make_trainer from TrainConfig
        max_padded_tokens = 0  # the most tokens, padding included, of one forward pass so far

        def get_train_dataloader(self):
            loader = super().get_train_dataloader()
            if self.max_batch_tokens <= 0:
                return loader
            return _budget_dataloader(self, loader)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:  # reported in the metrics, so a run shows its budget held
                self.max_padded_tokens = max(self.max_padded_tokens, inputs["input_ids"].numel())
            if fused and inputs["input_ids"].device.type in ("cuda", "xpu"):
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return RestreactSFTTrainer


def _budget_dataloader(trainer, loader):
    """The trainer's own training loader (its dataset with unused columns dropped, its
    collator and worker settings), batched by our token-budget sampler instead of
    batch_size + sampler: transformers' only batch_sampler route is its own rebalancer."""
    from torch.utils.data import DataLoader

    from trainer.batching import TokenBudgetBatchSampler

    a = trainer.args
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]  # after TRL's preparation
    sampler = TokenBudgetBatchSampler(lengths, trainer.max_batch_tokens, a.per_device_train_batch_size,
                                      seed=a.data_seed if a.data_seed is not None else a.seed)
    budget = DataLoader(loader.dataset, batch_sampler=sampler, collate_fn=loader.collate_fn,
                        num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                        persistent_workers=loader.persistent_workers,
                        multiprocessing_context=loader.multiprocessing_context,
                        prefetch_factor=loader.prefetch_factor, worker_init_fn=loader.worker_init_fn)
    # prepare: device placement, and under DDP whole batches dealt out to the ranks.
    return trainer.accelerator.prepare(budget)


def make_trainer(model, tok, dataset, cfg: TrainConfig, cuda: bool, peft_config, output_dir: str,
                 unsloth: bool = False, on_log: Callable[[dict], None] | None = None):
    import datasets

    quiet = datasets.is_progress_bar_enabled()
    if quiet:  # TRL's dataset preparation would draw four progress bars
        datasets.disable_progress_bars()
    try:
        trainer = _trainer_class()(model=model, args=sft_config(cfg, cuda, output_dir, unsloth),
                                   train_dataset=dataset, processing_class=tok,
                                   peft_config=peft_config)
    finally:
        if quiet:
            datasets.enable_progress_bars()
    from transformers import PrinterCallback

    trainer.max_batch_tokens = cfg.max_batch_tokens
    trainer.remove_callback(PrinterCallback)  # logs go to on_log, not stdout
    _point_tensorboard(trainer, cfg)
    trainer.add_callback(_log_callback(on_log))
    if cfg.time_limit_s > 0:
        trainer.add_callback(_deadline_callback(cfg.time_limit_s))
    return trainer


def _point_tensorboard(trainer, cfg: TrainConfig) -> None:
    """TensorBoard's events go to cfg.logging_dir: the default, under output_dir, is the
    scratch folder train() deletes afterwards."""
    if cfg.report_to != "tensorboard":
        return
    from transformers.integrations import TensorBoardCallback

    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback):
            cb.logging_dir = cfg.logging_dir or str(Path(cfg.output_dir).with_name(
                Path(cfg.output_dir).name + ".tensorboard"))


def weights_dtype(cfg: TrainConfig, cuda: bool) -> str:
    """The dtype the model's weights are loaded in (training math is bf16 autocast either way).

    LoRA on a GPU: the frozen base in bf16 (memory). Full fine-tuning and CPU runs: fp32, because
    in bf16 weights AdamW's small late updates round away (a pure-bf16 pocket warm start went
    flat once its learning rate decayed).
    """
    low = cuda and cfg.resolved_bf16(cuda) and cfg.method != "full"
    return "bfloat16" if low else "float32"


def _deadline_callback(seconds: float):
    """Ends training gracefully after `seconds`, so a time-boxed run still saves its model."""
    import time

    from transformers import TrainerCallback

    class Deadline(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.end = time.monotonic() + seconds

        def on_step_end(self, args, state, control, **kw):
            if time.monotonic() > self.end:
                control.should_training_stop = True
            return control

    return Deadline()


def _log_callback(on_log: Callable[[dict], None] | None):
    """A TrainerCallback keeping the loss curve and forwarding each log dict to `on_log`."""
    from transformers import TrainerCallback

    class LossLog(TrainerCallback):
        def __init__(self):
            self.losses: list[float] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            if "loss" in logs:
                self.losses.append(float(logs["loss"]))
            if on_log is not None:
                on_log({"step": state.global_step, **logs})

    return LossLog()


# --- train -----------------------------------------------------------------------------


def _metrics(trainer, train_loss: float, runtime: float, cuda: bool, n_examples: int) -> dict:
    import torch

    cb = next(c for c in trainer.callback_handler.callbacks if hasattr(c, "losses"))
    tokens = int(trainer.state.num_input_tokens_seen)
    return {
        "train_loss": float(train_loss),
        "steps": int(trainer.state.global_step),
        "examples": n_examples,
        "tokens": tokens,
        "tokens_per_s": tokens / runtime if runtime > 0 else 0.0,
        "runtime_s": runtime,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "max_padded_tokens": int(getattr(trainer, "max_padded_tokens", 0)),  # max rows x width
        "loss_curve": list(cb.losses),
    }


# --- save ------------------------------------------------------------------------------


def _check_output_dir(out: Path) -> Path:
    """Refuse to overwrite a directory that is not an earlier training output."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise TrainError(f"output dir {out} exists and is not a restreact model dir; "
                         "choose another --out or remove it")
    return out


def _safetensors_error() -> type[Exception]:
    """safetensors' SafetensorError: a full disk during save_pretrained arrives as this."""
    from safetensors import SafetensorError

    return SafetensorError


def save(model, tok, out: Path, result: TrainResult) -> None:
    """Write adapter (or whole model) + tokenizer + MARKER, all or nothing.

    Everything goes to a sibling `.partial` dir first and is renamed into place, so a full
    disk or a crash never leaves a half-written model where a loader would find it.
    """
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model.save_pretrained(partial)  # a PeftModel writes the adapter only
        tok.save_pretrained(partial)
        (partial / MARKER).write_text(json.dumps(
            {"adapter": result.adapter, "base_model": result.config.get("base_model"),
             "config": result.config, "metrics": result.metrics}, indent=2))
    except (OSError, _safetensors_error()) as e:  # safetensors wraps I/O errors in its own
        shutil.rmtree(partial, ignore_errors=True)
        if getattr(e, "errno", None) == errno.ENOSPC or f"os error {errno.ENOSPC})" in str(e):
            raise TrainError(f"disk full while saving the model to {out}; nothing was kept: "
                             "free space or choose another --out") from None
        why = getattr(e, "strerror", None) or str(e).strip().splitlines()[-1]
        raise TrainError(f"cannot save the model to {out}: {why}") from None
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
