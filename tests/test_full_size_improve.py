"""benchmarks/full_size_improve.py at its tiny CPU size: one improve iteration end to end on a
real SQLite store, every stage of it in the results file with its wall time; the same
--db and --name resume instead of running again. The 4-bit path runs only on CUDA with
bitsandbytes; without them it refuses in one line and says so in its results file."""

from __future__ import annotations

import importlib.util
import json

import pytest

from benchmarks.full_size_improve import main, model_size
from trainer.improve import STAGES


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _args(tmp_path, *extra) -> list[str]:
    return ["--tiny", "--iterations", "1", "--grow-questions", "2", "--eval-questions", "1",
            "--db", str(tmp_path / "bench.db"), "--workdir", str(tmp_path / "runs"),
            "--model-dir", str(tmp_path / "model"), "--out", str(tmp_path / "out.json"), *extra]


@pytest.mark.slow
def test_tiny_iteration_records_every_stage_and_resumes(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from store.api import Store

    assert main(_args(tmp_path)) == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["complete"] and (result["path"], result["size"]) == ("bf16", "tiny")
    assert "commit" in result["provenance"] and result["provenance"]["card"]
    baseline, it1 = result["iterations"]
    assert set(baseline["stages"]) == {"evaluate"} and set(it1["stages"]) == set(STAGES)
    assert all(s["wall_s"] > 0 for s in it1["stages"].values()), it1["stages"]
    assert it1["examples"] > 0 and it1["example_tokens"]["examples"] == it1["examples"]
    assert it1["example_tokens"]["mean_prompt_tokens"] > 50  # the agent's prompts in real BPE tokens

    # The random model speaks the pocket tokenizer's ids and never ends a turn on its own.
    cfg = json.loads((tmp_path / "model" / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert cfg["vocab_size"] >= len(tok)
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == \
        (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    weights = load_file(tmp_path / "model" / "model.safetensors")
    assert not weights["lm_head.weight"][tok.eos_token_id].any()
    assert weights["lm_head.weight"][tok.bos_token_id].any()

    store = Store(str(tmp_path / "bench.db"))
    run = store.get_run("full-bf16-tiny")
    assert len(store.stage_stats(run.id)) == 1 + len(STAGES) == len(result["stage_attempts"])

    assert main(_args(tmp_path)) == 0  # resumed: nothing runs again
    again = json.loads((tmp_path / "out.json").read_text())
    assert len(store.stage_stats(run.id)) == 1 + len(STAGES)
    assert again["iterations"][1]["stages"] == it1["stages"]


def test_full_size_is_the_llama_3_8b_shape():
    from benchmarks.gpu_perf import llama_config

    cfg = llama_config(model_size(tiny=False, vocab_floor=6000))
    assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers,
            cfg.num_attention_heads, cfg.num_key_value_heads) == (128256, 4096, 14336, 32, 32, 8)
    assert not cfg.tie_word_embeddings
    assert model_size(tiny=True, vocab_floor=6000).vocab >= 6000


@pytest.mark.skipif(_cuda() and importlib.util.find_spec("bitsandbytes") is not None,
                    reason="checks the refusal where 4-bit cannot run")
def test_4bit_path_refuses_without_cuda_or_bitsandbytes(tmp_path, capsys):
    assert main(_args(tmp_path, "--4bit")) == 2
    assert capsys.readouterr().err.strip().startswith("error: the 4-bit path needs")
    assert "needs" in json.loads((tmp_path / "out.json").read_text())["skipped"]
    assert not (tmp_path / "bench.db").exists() and not (tmp_path / "model").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda() or importlib.util.find_spec("bitsandbytes") is None,
                    reason="needs CUDA and bitsandbytes")
def test_tiny_4bit_path_measures_gpu_memory(tmp_path):
    assert main(_args(tmp_path, "--4bit")) == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["complete"] and result["under_24gb"] is True
    stages = result["iterations"][1]["stages"]
    assert stages["train"]["peak_gpu_gib"] > 0 and stages["evaluate"]["peak_gpu_gib"] > 0
