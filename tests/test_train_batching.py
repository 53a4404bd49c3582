"""Token-budget batches (TrainConfig.max_batch_tokens): the plan itself, in plain Python.

The trainer consuming these batches is tested on a real tiny Llama in test_sft.py.
"""

from __future__ import annotations

import random

import pytest

from trainer.batching import TokenBudgetBatchSampler, token_budget_batches
from trainer.config import TrainConfig


def lengths(n=200, seed=0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(5, 120) for _ in range(n)]


@pytest.mark.parametrize("budget,max_rows", [(120, 0), (500, 0), (500, 4), (4000, 16)])
def test_every_batch_fits_the_budget_and_the_row_cap(budget, max_rows):
    ls = lengths()
    for b in token_budget_batches(ls, budget, max_rows, seed=1):
        assert len(b) * max(ls[i] for i in b) <= budget
        assert max_rows == 0 or len(b) <= max_rows


def test_every_example_once_per_epoch_same_batches_new_order():
    ls = lengths()
    plans = [token_budget_batches(ls, 500, 8, seed=3, epoch=e) for e in range(3)]
    for plan in plans:
        assert sorted(i for b in plan for i in b) == list(range(len(ls)))
    # The grouping is fixed (the Trainer counts batches once), only the order moves.
    assert all(sorted(map(tuple, p)) == sorted(map(tuple, plans[0])) for p in plans)
    assert len({tuple(map(tuple, p)) for p in plans}) == 3


def test_deterministic_for_a_seed():
    ls = lengths()
    assert token_budget_batches(ls, 500, seed=7) == token_budget_batches(ls, 500, seed=7)
    assert token_budget_batches(ls, 500, seed=7) != token_budget_batches(ls, 500, seed=8)


def test_rows_of_similar_length_share_a_batch():
    ls = lengths()
    spans = sorted((min(ls[i] for i in b), max(ls[i] for i in b)) for b in token_budget_batches(ls, 500))
    # Batches are runs of the length-sorted examples: their length ranges do not interleave.
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(spans, spans[1:]))


def test_an_example_longer_than_the_budget_trains_alone():
    ls = [5, 100, 6, 7, 300, 8]
    plan = token_budget_batches(ls, 20, seed=0)
    assert [1] in plan and [4] in plan
    assert sorted(i for b in plan for i in b) == list(range(len(ls)))
    assert all(len(b) * max(ls[i] for i in b) <= 20 for b in plan if len(b) > 1)


def test_sampler_feeds_a_dataloader_and_deals_whole_batches_to_ranks():
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import DataLoader

    ls = lengths(60)
    s = TokenBudgetBatchSampler(ls, 400, max_rows=6, seed=2)
    s.set_epoch(1)
    plan = token_budget_batches(ls, 400, 6, seed=2, epoch=1)
    assert len(s) == len(plan) and list(s) == plan
    assert [b.tolist() for b in DataLoader(list(range(60)), batch_sampler=s)] == plan
    # Under DDP accelerate wraps it: with no batch_size, each rank gets whole, varied batches,
    # and as many as every other rank even when the plan does not divide evenly.
    n = 3 if len(plan) % 3 else 4
    assert len(plan) % n
    shards = [BatchSamplerShard(s, num_processes=n, process_index=r) for r in range(n)]
    ranks = [list(sh) for sh in shards]
    assert all(len(r) == len(sh) == len(ranks[0]) > 0 for r, sh in zip(ranks, shards))
    assert {tuple(b) for r in ranks for b in r} == {tuple(b) for b in plan}


def test_config_field():
    assert TrainConfig().max_batch_tokens == 0  # off by default: batches of per_device_batch rows
    assert "padded tokens" in TrainConfig.help()["max_batch_tokens"]
    assert TrainConfig.from_dict(TrainConfig(max_batch_tokens=8192).to_dict()).max_batch_tokens == 8192
    with pytest.raises(ValueError, match="max_batch_tokens"):
        TrainConfig(max_batch_tokens=-1)
    with pytest.raises(ValueError, match="positive"):
        token_budget_batches([3], 0)


@pytest.mark.parametrize("command", ["train", "improve"])
def test_cli_exposes_max_batch_tokens(command):
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    assert "--max-batch-tokens" in runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    bad = runner.invoke(app, [command, "--model", "m", "--max-batch-tokens", "-1"])
    assert bad.exit_code == 2 and "Invalid value for '--max-batch-tokens'" in bad.output  # before any work
