"""Host-side cost of the prefix cache on the agent's trajectory workload (no model, no GPU).

The graph engine looks every prompt up in its PrefixCache and stores each batch's prompts and
outputs afterwards (agent/llm/graph_engine.py, `_remember`); all of that is Python on the
host, between GPU batches. This replays benchmarks/trajectory_bench.py's trajectories (web
sizes, 600 -> 3,000 prompt tokens over 6 steps, K = 4) through the cache in lock step, with
placeholder KV tensors of 2 bytes a token and the budget in tokens of the card's (8 GiB of
Llama-3-8B's or SmolLM2's KV), so the cache fills, evicts and refills as on the card. Beside
it, in the same run, the same cache with the eviction it had before: a walk of the whole trie
for every victim.

    python benchmarks/prefix_cache_host.py --concurrency 32 128 --repeats 3 --out F
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.llm.prefix_cache import PrefixCache  # noqa: E402


# KV bytes a token in bf16: layers x 2 x KV heads x head dim x 2.
TOKEN_BYTES = {"llama3-8b": 32 * 2 * 8 * 128 * 2, "smollm2-135m": 30 * 2 * 3 * 64 * 2}


class WalkPerVictim(PrefixCache):
    """The baseline: each evicted leaf found by walking every node."""

    def evict(self, need_bytes: int) -> int:
        freed = 0
        while freed < need_bytes:
            victim = None
            for node in self._nodes():
                if self._kv_leaf(node) and (victim is None or node.used < victim.used):
                    victim = node
            if victim is None:
                break
            freed += victim.nbytes()
            self.stats["evicted_tokens"] += len(victim.tokens)
            self._drop_kv(victim)
        return freed


def replay(cache: PrefixCache, trajs, outputs) -> float:
    """Seconds of cache work for the whole workload: per step, every trajectory's lookup, then
    its prompt and its K prompt + output sequences stored, as the engine does."""
    import torch

    kv = lambda a, b: torch.empty(1, 1, 1, b - a, 1, dtype=torch.float16)  # noqa: E731
    t0 = time.perf_counter()
    for i in range(len(trajs[0])):
        for t in trajs:
            cache.match(t[i].ids, limit=len(t[i].ids) - 1)
        for j, t in enumerate(trajs):
            cache.insert(t[i].ids, kv)
            for out in outputs[j][i]:
                cache.insert(t[i].ids + out, kv)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    import platform

    import torch

    from benchmarks.provenance import commit
    from benchmarks.trajectory_bench import trajectories

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default=str(ROOT / "benchmarks/workloads/trajectory_pocket.json"))
    p.add_argument("--concurrency", type=int, nargs="+", default=[32, 128])
    p.add_argument("--budget-gib", type=float, default=8.0, help="the cache budget on the card")
    p.add_argument("--model", nargs="+", default=["llama3-8b", "smollm2-135m"], choices=sorted(TOKEN_BYTES),
                   help="whose KV bytes a token size the budget in tokens")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    shape = json.loads(Path(args.workload).read_text())["scaled"]
    rows = []
    for model, conc in [(m, c) for m in args.model for c in args.concurrency]:
        budget_tokens = int(args.budget_gib * 2**30 / TOKEN_BYTES[model])
        trajs = trajectories(shape, conc, 49152, seed=0)
        rng = random.Random(1)
        outputs = [[[[rng.randrange(1, 49000) for _ in range(s.new)] for _ in range(s.k)] for s in t]
                   for t in trajs]
        for name, cls in (("walk per victim (before)", WalkPerVictim), ("one walk + heap", PrefixCache)):
            times, stats = [], None
            for _ in range(args.repeats):
                cache = cls(budget_tokens * 2)
                times.append(replay(cache, trajs, outputs))
                stats = cache.stats
            rows.append({"model": model, "budget_tokens": budget_tokens, "concurrency": conc,
                         "eviction": name, "host_s_median": round(statistics.median(times), 3),
                         "host_s_min": round(min(times), 3), "host_s_max": round(max(times), 3), **stats})
            print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "prefix_cache_host", "provenance": {
        "commit": commit(), "card": f"CPU ({platform.machine()}), host side only",
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "command": " ".join(["python", "benchmarks/prefix_cache_host.py", *(argv or sys.argv[1:])])}, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
