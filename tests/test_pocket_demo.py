"""`pocket demo`: its questions are drawn by a seed, and `--compare` answers the same ones with
the warm start and with a LoRA adapter, side by side. The shipped pocket model, a real LoRA
(random, not trained: these tests check the wiring, not that an adapter helps), a real SQLite
store, the CLI as a subprocess."""

from __future__ import annotations

import re
import sqlite3

import pytest

from agent.worlds import get_world
from tests.harness import cli_env, run_cli

MODEL_DIR = get_world("pocket").model_dir
pytestmark = pytest.mark.skipif(not (MODEL_DIR / "config.json").is_file(),
                                reason="the pocket model is not in data/pocket/model")


def test_demo_questions_are_drawn_by_the_seed(tmp_path):
    import cli
    from store.api import Store

    store = Store(str(tmp_path / "q.db"))
    first = [q.id for q in cli.demo_questions(store, "test", 5, 0)]
    assert first == [q.id for q in cli.demo_questions(store, "test", 5, 0)]
    assert first != [q.id for q in cli.demo_questions(store, "test", 5, 1)]
    in_order = [q.id for q in store.questions(get_world("pocket").question_set, split="test", limit=5)]
    assert first != in_order  # drawn, not the first rows of the split
    assert len(set(first)) == 5


def small_adapter(path):
    """A LoRA on the pocket model with small random weights: its answers come from a
    different model, mostly still well-formed."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(MODEL_DIR, local_files_only=True, dtype=torch.float32)
    torch.manual_seed(0)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.mul_(0.05)
    lora.save_pretrained(path)
    return path


def test_compare_answers_the_same_questions_with_both_models(tmp_path):
    from reward.autoeval import exact_match

    adapter = small_adapter(tmp_path / "tuned")
    db = tmp_path / "demo.db"
    done = run_cli(["--db", str(db), "pocket", "demo", "-n", "1", "--seed", "3",
                    "--compare", str(adapter)], cli_env(tmp_path))
    assert done.returncode in (0, 2), done.stderr  # 2: a trajectory did not finish
    assert "warm start" in done.stdout and "drawn with seed 3" in done.stdout
    counts = re.search(r"exact match: warm start (\d)/1, .*tuned (\d)/1", done.stdout.replace("\n", " "))
    assert counts, done.stdout

    con = sqlite3.connect(db)
    rows = con.execute("SELECT t.id, t.question, t.final_answer, q.answer FROM trajectories t "
                       "JOIN questions q ON q.text = t.question ORDER BY t.id").fetchall()
    assert len(rows) == 2 and rows[0][1] == rows[1][1]  # one question, asked of both models
    for (tid, _, final, ref), shown in zip(rows, counts.groups()):
        assert int(shown) == exact_match(final or "", ref)
    models = [{m for (m,) in con.execute("SELECT DISTINCT model FROM llm_calls WHERE trajectory_id = ?",
                                         (tid,))} for tid, *_ in rows]
    assert models[0] and models[1] and models[0] != models[1]
    assert all(m.endswith("tuned") for m in models[1]) and not any(m.endswith("tuned") for m in models[0])


def test_compare_with_a_missing_adapter_is_one_line(tmp_path):
    done = run_cli(["--db", str(tmp_path / "demo.db"), "pocket", "demo", "--compare",
                    str(tmp_path / "nowhere")], cli_env(tmp_path))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "adapter not found" in lines[0], done.stderr


def test_the_shipped_improved_adapter_is_the_one_the_results_file_measured():
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    root = Path(__file__).resolve().parents[1]
    shipped = root / "data" / "pocket" / "improved"
    assert json.loads((shipped / "adapter_config.json").read_text())["base_model_name_or_path"] \
        == "data/pocket/model"
    trained = json.loads((shipped / "restreact_train.json").read_text())["metrics"]
    result = json.loads((root / "benchmarks" / "results" / "pocket_cpu_improve.json").read_text())
    it1 = next(i for i in result["iterations"] if i["iteration"] == 1)
    assert (trained["examples"], trained["train_loss"]) == (it1["examples"], it1["train_loss"])
    assert it1["test_mean"] > result["iterations"][0]["test_mean"]  # the gain the README cites
    weights = load_file(shipped / "adapter_model.safetensors")
    assert any(float(w.abs().max()) > 0 for k, w in weights.items() if "lora_B" in k)  # trained
