"""The SFT recipe on a real tiny Llama: label masks through TRL's own data preparation,
LoRA changes the adapter and not the base, full fine-tuning, errors, and (GPU) unsloth."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from tests.tiny import build_tiny_model
from trainer.config import TrainConfig
from trainer.examples import Example, tokenize_example
from trainer.sft import MARKER, TrainError, build_dataset, make_trainer, setup, train

QUESTIONS = ["Who founded Acme?", "Where was Ada born?", "Which band is from Lowtown?",
             "In which country is Lowtown?", "Who runs Acme now?", "When was Acme founded?",
             "What is the capital of the country of Ada?", "Is Acme a band?"]
COMPLETIONS = ['Search(query="founder of Acme", thoughts="find the founder")',
               'Answer(thoughts="done", answer="Ada [link_id=1]")',
               'Terminate(thoughts="enough")',
               'SelectLink(summary="According to [link_id=1] Acme was founded by Ada.", '
               'thoughts="ok", selected_link_ids=[1])']


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture(scope="module")
def tok(base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base)


def rollout_prompt(tok, question: str) -> str:
    """What the local backend feeds the model: the chat template rendered to text."""
    return tok.apply_chat_template([{"role": "user", "content": question}],
                                   add_generation_prompt=True, tokenize=False)


@pytest.fixture(scope="module")
def examples(tok) -> list[Example]:
    return [Example(i, rollout_prompt(tok, q), COMPLETIONS[i % len(COMPLETIONS)])
            for i, q in enumerate(QUESTIONS)]


def config(base, out, **kw) -> TrainConfig:
    # A high lr and a short warm-up make 20 steps on a random model move the loss clearly;
    # no gradient checkpointing: it only costs time on a model this small. CPU (fp32
    # weights) even where a GPU is visible: the GPU paths have their own tests below.
    defaults = dict(base_model=str(base), output_dir=str(out), max_steps=20, per_device_batch=4,
                    grad_accum=1, learning_rate=5e-3, warmup_steps=2, gradient_checkpointing=False,
                    cpu=True, use_unsloth=False)
    return TrainConfig(**{**defaults, **kw})


def completion_loss(model, tok, examples) -> float:
    """Mean loss over completion tokens, the way training masks it."""
    import torch

    total, n = 0.0, 0
    model.eval()
    with torch.no_grad():
        for ex in examples:
            row = tokenize_example(tok, ex, 2048)
            ids = torch.tensor([row["input_ids"]])
            labels = torch.tensor([[t if m else -100 for t, m in zip(row["input_ids"], row["completion_mask"])]])
            k = int((labels != -100).sum()) - (1 if row["completion_mask"][0] else 0)
            total += float(model(input_ids=ids, labels=labels).loss) * k
            n += k
    return total / n


def logits(model, tok, examples):
    import torch

    model.eval()
    batch = tok([ex.prompt + ex.completion for ex in examples[:3]], add_special_tokens=False,
                padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


# --- the label mask, through TRL's own preparation and collator ---------------------------


@pytest.mark.parametrize("loss", ["completion", "full"])
def test_training_tokens_are_the_rollout_tokens_and_only_completions_carry_loss(
        base, tok, examples, tmp_path, loss):
    cfg = config(base, tmp_path / "out", loss=loss)
    model, tok2, peft_config, cuda, _ = setup(cfg)
    trainer = make_trainer(model, tok2, build_dataset(tok2, examples, cfg), cfg, cuda, peft_config,
                           str(tmp_path / "scratch"))
    prepared = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batch = trainer.data_collator(prepared)
    assert len(prepared) == len(examples)
    for i, ex in enumerate(examples):
        prompt_ids = tok(rollout_prompt(tok, QUESTIONS[i]), add_special_tokens=False)["input_ids"]
        want = prompt_ids + tok(ex.completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        n, p = len(want), len(prompt_ids)
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        assert ids[:n] == want  # what the model saw at rollout, then the chosen output
        assert all(t == tok.pad_token_id for t in ids[n:])
        expect = ([-100] * p if loss == "completion" else want[:p]) + want[p:] + [-100] * (len(ids) - n)
        assert labels == expect


# --- LoRA ----------------------------------------------------------------------------------


def test_lora_changes_the_adapter_not_the_base_and_reloads_exactly(base, tok, examples, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    logs = []
    res = train(examples, config(base, tmp_path / "adapter"), on_log=logs.append, keep_model=True)
    trained = res.model

    lora_b = {n: p for n, p in trained.named_parameters() if "lora_B" in n}
    assert len(lora_b) == 7 * 2  # seven projections in each of the two layers
    assert all(p.abs().sum() > 0 for p in lora_b.values())  # initialised to zero, now trained

    fresh = AutoModelForCausalLM.from_pretrained(base)
    fresh_sd = fresh.state_dict()
    inner = {n.replace(".base_layer", ""): p for n, p in trained.get_base_model().named_parameters()
             if "lora_" not in n}
    assert inner.keys() == {k for k in fresh_sd if k != "lm_head.weight"}  # tied to embed_tokens
    assert all(torch.equal(p, fresh_sd[n]) for n, p in inner.items())

    before, after = completion_loss(fresh, tok, examples), completion_loss(trained, tok, examples)
    assert after < before - 0.3, (before, after)
    assert res.metrics["loss_curve"][-1] < res.metrics["loss_curve"][0]

    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), res.output_dir)
    assert torch.allclose(logits(reloaded, tok, examples), logits(trained, tok, examples), atol=1e-5)

    out = Path(res.output_dir)
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    assert json.loads((out / MARKER).read_text())["config"]["lora_r"] == 16
    assert trained.config.use_cache is True
    m = res.metrics
    assert res.adapter and m["steps"] == 20 and m["backend"] == "transformers"
    assert m["tokens"] > 0 and m["tokens_per_s"] > 0 and m["peak_gib"] is None
    assert [d["step"] for d in logs if "loss" in d] == list(range(1, 21))


def test_same_seed_same_run(base, examples, tmp_path):
    a = train(examples, config(base, tmp_path / "a", max_steps=5))
    b = train(examples, config(base, tmp_path / "b", max_steps=5))
    assert a.metrics["loss_curve"] == b.metrics["loss_curve"]
    assert (Path(a.output_dir) / "adapter_model.safetensors").read_bytes() == \
        (Path(b.output_dir) / "adapter_model.safetensors").read_bytes()


# --- token-budget batches ------------------------------------------------------------------


def test_max_batch_tokens_caps_every_batch_the_trainer_consumes(base, tok, examples, tmp_path, monkeypatch):
    import math

    import trainer.sft as sft
    from trainer.batching import token_budget_batches

    seen: list[list[tuple]] = []  # each training forward pass: its rows' unpadded token ids
    shapes: list[tuple] = []
    plain = sft._trainer_class

    def recording():
        class Recording(plain()):
            def compute_loss(self, model, inputs, **kw):
                ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
                shapes.append(tuple(ids.shape))
                seen.append([tuple(ids[r][mask[r]].tolist()) for r in range(len(ids))])
                return super().compute_loss(model, inputs, **kw)
        return Recording

    monkeypatch.setattr(sft, "_trainer_class", recording)
    cfg = config(base, tmp_path / "out", max_steps=-1, epochs=2, per_device_batch=8, grad_accum=2)
    rows = [tuple(r) for r in build_dataset(tok, examples, cfg)["input_ids"]]
    lengths = [len(r) for r in rows]
    budget = 3 * min(lengths)  # tight: one or two rows a batch here, some alone
    cfg.max_batch_tokens = budget
    res = train(examples, cfg)

    plan = token_budget_batches(lengths, budget, 8, seed=cfg.seed)
    assert 1 < len(plan) < len(rows) and any(len(b) > 1 for b in plan)
    assert all(r * w <= budget or r == 1 for r, w in shapes)
    assert res.metrics["max_padded_tokens"] == max(r * w for r, w in shapes)
    # Two epochs: every example exactly once in each, in the planned batches.
    assert len(seen) == 2 * len(plan)
    for e, epoch in enumerate((seen[:len(plan)], seen[len(plan):])):
        assert sorted(s for b in epoch for s in b) == sorted(rows)
        # In the planned order of that epoch: the Trainer's set_epoch reached the sampler.
        want = token_budget_batches(lengths, budget, 8, seed=cfg.seed, epoch=e)
        assert [sorted(b) for b in epoch] == [sorted(rows[i] for i in b) for b in want]
    # The steps the schedule planned from the batch count: grad accumulation of 2 per step.
    assert res.metrics["steps"] == 2 * math.ceil(len(plan) / 2)
    assert res.metrics["tokens"] == 2 * sum(lengths)


# --- full fine-tuning ----------------------------------------------------------------------


def test_full_fine_tuning_saves_a_whole_model_that_learned(base, tok, examples, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    res = train(examples, config(base, tmp_path / "full", method="full", max_steps=10,
                                 learning_rate=1e-3))
    out = Path(res.output_dir)
    assert not res.adapter and (out / "model.safetensors").exists()
    assert not (out / "adapter_config.json").exists()
    fresh = AutoModelForCausalLM.from_pretrained(base)
    tuned = AutoModelForCausalLM.from_pretrained(out)
    assert tuned.config.use_cache is True
    changed = [n for n, p in tuned.state_dict().items() if not torch.equal(p, fresh.state_dict()[n])]
    assert "model.layers.0.self_attn.q_proj.weight" in changed
    assert completion_loss(tuned, tok, examples) < completion_loss(fresh, tok, examples) - 0.3


# --- errors --------------------------------------------------------------------------------


def test_no_examples_is_a_train_error(base, tmp_path):
    with pytest.raises(TrainError, match="no training examples"):
        train([], config(base, tmp_path / "out"))


def test_unknown_base_model_says_how_to_point_model_at_a_local_dir(examples, tmp_path):
    with pytest.raises(TrainError) as err:
        train(examples, config(tmp_path / "no-such-model", tmp_path / "out"))
    msg = str(err.value)
    assert "\n" not in msg and "no-such-model" in msg and "--model" in msg and "local directory" in msg


def test_an_unrelated_output_dir_is_not_overwritten(base, examples, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    with pytest.raises(TrainError, match="not a restreact model dir"):
        train(examples, config(base, precious))
    assert (precious / "thesis.txt").read_text() == "keep me"


def test_disk_full_while_saving_leaves_no_half_written_model(base, examples, tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    out = tmp_path / "adapter"
    first = train(examples, config(base, out, max_steps=2))
    before = (out / "adapter_model.safetensors").read_bytes()

    def full_disk(self, *a, **kw):  # the adapter is already written when the tokenizer fails
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", full_disk)
    with pytest.raises(TrainError) as err:
        train(examples, config(base, out, max_steps=2, seed=1))
    assert "disk full" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "adapter.partial").exists()
    # the earlier, complete model is still there, untouched
    assert (out / "adapter_model.safetensors").read_bytes() == before
    assert first.output_dir == str(out)


# --- GPU: Path B (unsloth) -----------------------------------------------------------------


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _gpu_train(tmp_path, **kw):
    """A slightly wider tiny model (GPU kernels want head_dim >= 64), trained on the GPU."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = build_tiny_model(tmp_path / "base", hidden=256, layers=2)
    tok = AutoTokenizer.from_pretrained(base)
    exs = [Example(i, rollout_prompt(tok, q), COMPLETIONS[i % len(COMPLETIONS)])
           for i, q in enumerate(QUESTIONS)]
    res = train(exs, config(base, tmp_path / "adapter", cpu=False, max_steps=20,
                            gradient_checkpointing=True, **kw))
    m = res.metrics
    assert m["steps"] == 20 and m["peak_gib"] > 0 and m["tokens_per_s"] > 0
    assert m["loss_curve"][-1] < m["loss_curve"][0] - 0.3, m["loss_curve"]
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), res.output_dir)
    assert any(p.abs().sum() > 0 for n, p in reloaded.named_parameters() if "lora_B" in n)
    return res


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_transformers_path_trains_on_gpu(tmp_path):
    res = _gpu_train(tmp_path, use_unsloth=False)
    assert res.metrics["backend"] == "transformers"


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_unsloth_path_trains_on_gpu(tmp_path):
    pytest.importorskip("unsloth")
    res = _gpu_train(tmp_path, use_unsloth=True)
    assert res.metrics["backend"] == "unsloth"


def test_report_to_goes_through_to_trl():
    """--report-to reaches TRL's config (default: nowhere); an unknown target is refused."""
    from trainer.config import TrainConfig
    from trainer.sft import sft_config

    assert sft_config(TrainConfig(), cuda=False, output_dir="x").report_to in ([], "none", ["none"])
    assert sft_config(TrainConfig(report_to="tensorboard"), cuda=False,
                      output_dir="x").report_to == ["tensorboard"]
    with pytest.raises(ValueError, match="report_to"):
        TrainConfig(report_to="mlflow")


@pytest.mark.parametrize("avx512_bf16, amx, expected", [
    (False, False, False), (True, False, True), (False, True, True)])
def test_auto_bf16_on_cpu_only_where_the_cpu_computes_it(monkeypatch, avx512_bf16, amx, expected):
    # Emulated bf16 made CPU LoRA steps >15x slower than fp32 on an AVX2 CPU.
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert TrainConfig(base_model="m", output_dir="o").resolved_bf16(cuda=False) is expected
    # An explicit choice wins over the probe either way.
    assert TrainConfig(base_model="m", output_dir="o", bf16=True).resolved_bf16(cuda=False)
    assert not TrainConfig(base_model="m", output_dir="o", bf16=False).resolved_bf16(cuda=False)
