"""Multi-process training on CPU: two gloo processes (torchrun, as `accelerate launch` does on
GPUs) train the same tiny Llama as one process with the same global batch, and end where it
ends: the same loss curve, the same tokens, one adapter saved by the main process alone.

The two-GPU (NCCL) run of this same path was not available on this machine; see
docs/SCALING.md for what was and was not run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tiny import build_tiny_model
from tests.harness import HANG_S
from trainer.config import TrainConfig
from trainer.examples import Example

COMPLETIONS = ['Search(query="founder of Acme", thoughts="find the founder")',
               'Answer(thoughts="done", answer="Ada [link_id=1]")',
               'SelectLink(summary="According to [link_id=1] Acme was founded by Ada.", '
               'thoughts="ok", selected_link_ids=[1])']


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture(scope="module")
def examples(base) -> list[Example]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"Question {i}: who founded Acme?"}],
                                       add_generation_prompt=True, tokenize=False) for i in range(16)]
    return [Example(i, p, COMPLETIONS[i % len(COMPLETIONS)]) for i, p in enumerate(prompts)]


def config(base, out, per_device_batch: int) -> TrainConfig:
    # Random order, not length-grouped: the grouping works per device batch, so it would
    # order the data differently for 1×2 and 2×1. Checkpointing stays on: it is the
    # default, and DDP must cope with it.
    return TrainConfig(base_model=str(base), output_dir=str(out), max_steps=8,
                       per_device_batch=per_device_batch, grad_accum=1, learning_rate=5e-3,
                       warmup_steps=1, cpu=True, use_unsloth=False, group_by_length=False)


def adapter_tensors(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(base, examples, tmp_path):
    from trainer.distributed import launch_train
    from trainer.sft import MARKER, train

    one = train(examples, config(base, tmp_path / "one", per_device_batch=2))
    two = launch_train(examples, config(base, tmp_path / "two", per_device_batch=1), processes=2,
                       cpu=True, timeout=HANG_S)

    assert one.metrics["processes"] == 1 and two.metrics["processes"] == 2
    assert two.metrics["steps"] == one.metrics["steps"] == 8
    # Every rank's tokens are counted once: the same data went through both runs.
    assert two.metrics["tokens"] == one.metrics["tokens"] > 0
    a, b = one.metrics["loss_curve"], two.metrics["loss_curve"]
    assert len(a) == len(b) == 8
    # A reduction in another order (and bf16 autocast where the CPU has it): close, not bit-equal.
    assert max(abs(x - y) for x, y in zip(a, b)) < 0.02, (a, b)
    assert a[-1] < a[0]  # and it did learn something

    # One adapter, written whole by the main process: no half-written sibling left behind.
    out = Path(two.output_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    assert (out / "adapter_model.safetensors").is_file()
    saved = json.loads((out / MARKER).read_text())
    assert saved["metrics"]["processes"] == 2
    # ... and it holds the same weights the single process learned.
    wa, wb = adapter_tensors(Path(one.output_dir)), adapter_tensors(out)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max().item() < 0.02 * (1 + wa[k].abs().max().item()), k


@pytest.mark.slow
def test_launch_failure_is_one_line(base, examples, tmp_path):
    """A rank that cannot load its model fails the launch with the rank's own message."""
    from trainer.distributed import launch_train
    from trainer.sft import TrainError

    cfg = config(tmp_path / "no-such-model", tmp_path / "out", per_device_batch=1)
    with pytest.raises(TrainError) as e:
        launch_train(examples, cfg, processes=2, cpu=True, timeout=HANG_S)
    assert "cannot load base model" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_examples_round_trip_and_bad_file(tmp_path, examples):
    from trainer.distributed import load_examples, save_examples

    path = save_examples(examples, tmp_path / "ex.jsonl")
    assert load_examples(path) == examples
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_examples(tmp_path / "bad.jsonl")


def test_launch_commands():
    from trainer.distributed import launch_command

    gpu = launch_command("e.jsonl", "c.json", 4, cpu=False, port=29999)
    assert gpu[1:4] == ["-m", "accelerate.commands.launch", "--multi_gpu"]
    assert gpu[gpu.index("--num_processes") + 1] == "4"
    assert gpu[gpu.index("-m", 3) + 1] == "trainer.distributed"
    cpu = launch_command("e.jsonl", "c.json", 2, cpu=True, port=29999)
    assert cpu[1:3] == ["-m", "torch.distributed.run"]
    assert cpu[cpu.index("--nproc_per_node") + 1] == "2"
