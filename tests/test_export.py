"""Export (trainer/export.py), round-tripped: the merged model loads with plain transformers
and gives the logits of base + adapter; the dataset folder loads back with `datasets`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import cli_env, run_cli
from tests.improve_fixture import shared_improve_run

pytestmark = pytest.mark.slow  # the shared improve run trains two adapters


@pytest.fixture(scope="module")
def improve(tmp_path_factory):
    return shared_improve_run(tmp_path_factory)


def test_export_model_is_the_base_with_the_adapter_folded_in(improve, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    res = run_cli(["--db", str(improve.db), "export", "model", "--iteration", "1", "--out", str(out)],
                  cli_env(tmp_path), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert not list(out.glob("adapter_*")), "an adapter file was left in the merged model"
    merged = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert type(merged).__name__ == "LlamaForCausalLM"
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert tok.chat_template and "start_header_id" in tok.chat_template
    adapter = improve.workdir / "fixture-improve" / "it1" / "adapter"
    base = AutoModelForCausalLM.from_pretrained(improve.model, local_files_only=True)
    reference = PeftModel.from_pretrained(base, adapter)
    ids = tok.apply_chat_template([{"role": "user", "content": "Who founded Acme?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        want = reference(**ids).logits
        got = merged(**ids).logits
        plain = AutoModelForCausalLM.from_pretrained(improve.model, local_files_only=True)(**ids).logits
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert not torch.allclose(got, plain, atol=1e-4), "the adapter changed nothing: a weak test"
    lineage = json.loads((out / "restreact_export.json").read_text())
    assert lineage["model_version"] == "fixture-improve:it1" and lineage["adapter"] == str(adapter)


def test_export_model_of_the_baseline_is_the_base_as_is(improve, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "base"
    res = run_cli(["--db", str(improve.db), "export", "model", "--iteration", "0", "--out", str(out)],
                  cli_env(tmp_path), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    a = AutoModelForCausalLM.from_pretrained(out).state_dict()
    b = AutoModelForCausalLM.from_pretrained(improve.model).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_model_bad_input_is_one_line(improve, tmp_path):
    env = cli_env(tmp_path)
    res = run_cli(["--db", str(improve.db), "export", "model", "--iteration", "7", "--out",
                   str(tmp_path / "m")], env)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [
        "error: improve run fixture-improve has no iteration 7 (it has 0, 1, 2)"]
    foreign = tmp_path / "taken"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    res = run_cli(["--db", str(improve.db), "export", "model", "--out", str(foreign)], env)
    assert res.returncode != 0 and "is not an earlier export" in res.stderr
    assert (foreign / "notes.txt").read_text() == "mine"


def test_export_data_round_trips_through_datasets(improve, tmp_path):
    from datasets import load_from_disk

    from store.api import Store

    out = tmp_path / "data"
    res = run_cli(["--db", str(improve.db), "export", "data", "--run", improve.name, "--out", str(out)],
                  cli_env(tmp_path), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    ds = load_from_disk(str(out))
    assert set(ds) == {"steps", "sft"}
    store = Store(str(improve.db))
    # steps: every ranked grow step once, with the ranking the store holds
    ranked = {}
    for it in (1, 2):
        grow = store.get_run(f"{improve.name}:grow:{it}")
        for s in store.steps_of_run(grow.id, min_samples=2):
            for r in s.rankings:
                ranked[s.id] = (s.trajectory_id, r.best_index, list(r.bad), [x.text for x in s.samples])
    assert len(ds["steps"]) == len(ranked) > 0
    for row in ds["steps"]:
        assert (row["trajectory_id"], row["best_index"], row["bad"], row["samples"]) == ranked[row["step_id"]]
    # sft: exactly the examples the loop's last build trained on (all iterations kept)
    built = [json.loads(line) for line in
             (improve.workdir / "fixture-improve" / "it2" / "examples.jsonl").read_text().splitlines()]
    got = {r["step_id"]: (r["prompt"], r["completion"]) for r in ds["sft"]}
    assert got == {e["step_id"]: (e["prompt"], e["completion"]) for e in built}
    assert all(r["trajectory_id"] and r["judge"] == "rules" for r in ds["sft"])
    # and the same rows as JSONL
    lines = (out / "jsonl" / "sft.jsonl").read_text().splitlines()
    assert [json.loads(x)["step_id"] for x in lines] == ds["sft"]["step_id"]
    assert len((out / "jsonl" / "steps.jsonl").read_text().splitlines()) == len(ds["steps"])


def test_export_data_of_an_unranked_run_says_what_to_do(tmp_path):
    from store.api import Store
    from tests.conftest import write_trajectory

    db = tmp_path / "s.db"
    write_trajectory(Store(str(db)), run_name="plain")
    res = run_cli(["--db", str(db), "export", "data", "--run", "plain", "--out", str(tmp_path / "d")],
                  cli_env(tmp_path))
    from reward.ranker import prompt_version

    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [
        f"error: run plain has no steps ranked by rules ({prompt_version('rules')}): "
        "run `rank --run plain` first"]
    assert not Path(tmp_path / "d").exists()
