"""Token-budget batches: a cap on padded tokens per forward pass (TrainConfig.max_batch_tokens).

Peak activation memory follows the padded tokens of one forward pass (rows x longest row),
not the row count, so a fixed per_device_batch of long examples can overshoot a card that
the same number of short ones fits. Here rows of similar length are grouped (sorted by
length) and a batch closes before its rows x longest row would pass the budget or its rows
would pass `max_rows`. An example longer than the budget gets a batch of its own.

The batches are the same every epoch (only their order is reshuffled, from seed and epoch):
the Trainer counts the batches once to plan its steps, so that count must not change. One
function builds them for the trainer and for benchmarks/gpu_perf.py's raw loops, so the two
cannot drift apart. No torch import: the plan is plain Python.
"""

from __future__ import annotations

import random
from typing import Sequence


def token_budget_batches(lengths: Sequence[int], budget: int, max_rows: int = 0, seed: int = 0,
                         epoch: int = 0) -> list[list[int]]:
    """Dataset indices in batches with len(batch) * max(length) <= budget, in shuffled order.

    `max_rows` > 0 also caps the rows per batch (per_device_batch). Ties in length keep index
    order, so the grouping depends on the lengths alone; `seed` and `epoch` pick the order.
    """
    if budget <= 0:
        raise ValueError(f"budget must be positive, not {budget}")
    batches: list[list[int]] = []
    batch: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        # Ascending order: the newcomer is the batch's longest row.
        full = max_rows > 0 and len(batch) >= max_rows
        if batch and (full or (len(batch) + 1) * lengths[i] > budget):
            batches.append(batch)
            batch = []
        batch.append(i)  # an empty batch always takes one, however long
    if batch:
        batches.append(batch)
    random.Random(f"{seed}:{epoch}").shuffle(batches)  # str seeds are stable across runs
    return batches


class TokenBudgetBatchSampler:
    """A DataLoader `batch_sampler` over `token_budget_batches`, reshuffled by `set_epoch`.

    It has no `batch_size` attribute on purpose: accelerate's BatchSamplerShard then treats
    batches as variable-sized and deals whole batches to the ranks under DDP, every rank
    building the same plan from the same seed.
    """

    def __init__(self, lengths: Sequence[int], budget: int, max_rows: int = 0, seed: int = 0):
        self.lengths, self.budget, self.max_rows, self.seed = list(lengths), budget, max_rows, seed
        self.epoch = 0
        self._n = len(self._plan())

    def _plan(self) -> list[list[int]]:
        return token_budget_batches(self.lengths, self.budget, self.max_rows, self.seed, self.epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(self._plan())

    def __len__(self) -> int:
        return self._n
