"""The pocket warm start (`cli.py pocket pretrain`), at toy size on the CPU: seed data through
the real graph, a tokenizer, a fresh Llama, training; then continuing that model on new worlds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.config import TrainConfig
from trainer.pocket import PocketConfig, pretrain
from trainer.sft import weights_dtype

TOY = dict(worlds=2, questions_per_world=3, vocab_size=600, hidden=32, layers=1, heads=2,
           kv_heads=1, max_length=512, epochs=0.3, batch=8, workers=1)


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    out = tmp_path_factory.mktemp("pocket") / "fresh"
    metrics = pretrain(PocketConfig(**TOY), out, log=lambda *_: None)
    return out, metrics


def test_a_fresh_warm_start_writes_a_loadable_chat_model(fresh):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, metrics = fresh
    assert metrics["seed_steps"] > 10 and metrics["documents"] > 100
    assert metrics["steps"] >= 1 and metrics["tokens"] > 0
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) <= 600 and tok.chat_template  # trained on the worlds, Llama-3 layout
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.hidden_size == 32 and str(model.dtype) == "torch.bfloat16"
    assert json.loads((out / "pocket_pretrain.json").read_text())["config"]["worlds"] == 2


def test_init_from_continues_the_model_and_keeps_its_tokenizer(fresh, tmp_path):
    base, _ = fresh
    out = tmp_path / "continued"
    metrics = pretrain(PocketConfig(**TOY, init_from=str(base), seed=1), out, log=lambda *_: None)
    assert metrics["config"]["init_from"] == str(base)
    assert (out / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()
    before, after = _weights(base), _weights(out)
    assert before.keys() == after.keys()
    assert any(not before[k].equal(after[k]) for k in before), "training changed no weight"


def test_completion_loss_continues_on_the_steps_outputs_only(fresh, tmp_path):
    # A stage of the shipped model's warm start: no documents, loss on what each step wrote.
    base, _ = fresh
    out = tmp_path / "outputs-only"
    metrics = pretrain(PocketConfig(**TOY, init_from=str(base), seed=2, loss="completion",
                                    doc_fraction=0.0), out, log=lambda *_: None)
    assert metrics["examples"] == metrics["seed_steps"]  # no document examples mixed in
    assert json.loads((out / "restreact_train.json").read_text())["config"]["loss"] == "completion"
    before, after = _weights(base), _weights(out)
    assert any(not before[k].equal(after[k]) for k in before), "training changed no weight"


def test_full_fine_tuning_keeps_fp32_weights_on_a_gpu():
    # Pure-bf16 weights round late AdamW updates away; LoRA's frozen base may stay bf16.
    full = TrainConfig(base_model="m", output_dir="o", method="full", bf16=True)
    lora = TrainConfig(base_model="m", output_dir="o", method="lora", bf16=True)
    assert weights_dtype(full, cuda=True) == "float32"
    assert weights_dtype(lora, cuda=True) == "bfloat16"
    assert weights_dtype(lora, cuda=False) == "float32"


def test_split_digits_gives_one_token_per_digit(tmp_path):
    from trainer.pocket import train_tokenizer

    texts = [f"Acme was founded in {1900 + i % 50}. It is based in Leromar." for i in range(400)]
    whole = train_tokenizer(texts, 400, tmp_path / "whole")
    split = train_tokenizer(texts, 400, tmp_path / "split", split_digits=True)
    year = " founded in 1923."
    pieces = [split.decode([i]) for i in split(year, add_special_tokens=False)["input_ids"]]
    assert ["1", "9", "2", "3"] == [p for p in pieces if p.strip().isdigit()]
    assert split.decode(split(year, add_special_tokens=False)["input_ids"]) == year
    # Without it a frequent year is one token: the model must learn to copy each year apart.
    assert any(whole.decode([i]).strip() == "1923" for i in whole(year, add_special_tokens=False)["input_ids"])


def test_untie_and_reinit_years_reshape_the_start_before_training(tmp_path):
    # The year-cap variants: an own output matrix, and year rows re-drawn apart from each other.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.pocket import reshape_start

    shipped = str(Path(__file__).resolve().parents[1] / "data" / "pocket" / "model")
    tok = AutoTokenizer.from_pretrained(shipped)
    years = [i for t, i in tok.get_vocab().items() if t in ("Ġ1926", "Ġ1981", "Ġ2020")]
    assert len(years) == 3
    cfg = PocketConfig(init_from=shipped, untie=True, reinit_years=True, seed=4)
    out = reshape_start(cfg, tmp_path / "start")
    base = AutoModelForCausalLM.from_pretrained(shipped)
    new = AutoModelForCausalLM.from_pretrained(out)
    assert not new.config.tie_word_embeddings
    emb, head = new.get_input_embeddings().weight, new.get_output_embeddings().weight
    assert emb.data_ptr() != head.data_ptr() and emb[years].equal(head[years])
    old = base.get_input_embeddings().weight
    assert not emb[years].equal(old[years].float())
    assert emb[:100].equal(old[:100].float())  # every other token keeps its row

    def mean_cos(x):
        x = x / x.norm(dim=-1, keepdim=True)
        return ((x @ x.T).sum() - len(x)) / (len(x) * (len(x) - 1))

    assert mean_cos(emb[years]) < mean_cos(old[years].float())


def test_year_boost_repeats_only_summaries_that_state_a_year():
    from trainer.pocket import repeats

    said = {"kind": "summarize", "completion": 'SelectLink(summary="X was born in Y in 1926.")'}
    plain = {"kind": "summarize", "completion": 'SelectLink(summary="X works for Z.")'}
    other = {"kind": "answer", "completion": 'Answer(answer="1926")'}
    assert [repeats(s, 3) for s in (said, plain, other)] == [3, 1, 1]
    assert repeats(said, 1) == 1
    # with answers among the boosted kinds, an answer that states a year repeats too
    assert [repeats(s, 3, ("summarize", "answer")) for s in (said, plain, other)] == [3, 1, 3]


def test_untie_without_init_from_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    out = tmp_path / "m"
    res = CliRunner().invoke(app, ["pocket", "pretrain", "--out", str(out), "--untie"])
    assert res.exit_code != 0 and "--init-from" in res.output and not out.exists()


def test_mistake_weights_reach_the_seed_policy():
    """Weights of 0 on every step kind make even error_rate 1 write the error-free seed steps,
    and raising one kind's weight changes the seed steps."""
    from agent.worlds.pocket.policy import KIND_WEIGHT
    from trainer.pocket import world_steps

    clean, _ = world_steps(100_005, PocketConfig(error_rate=0.0))
    silenced, _ = world_steps(100_005, PocketConfig(error_rate=1.0,
                                                    mistake_weights=dict.fromkeys(KIND_WEIGHT, 0.0)))
    assert silenced == clean
    sloppy, _ = world_steps(100_005, PocketConfig(error_rate=0.5, mistake_weights={"summarize": 2.0}))
    base, _ = world_steps(100_005, PocketConfig(error_rate=0.5))
    assert sloppy != base and len(sloppy) > 50
