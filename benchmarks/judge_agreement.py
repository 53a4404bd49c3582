"""How often does a judge pick a correct step? Judges measured against the pocket world's oracle.

Reads a store holding sampled trajectories (K >= 2 samples a step) of one pocket world. Every
sample is graded by the world's oracle (agent/worlds/pocket/oracle.py). Each judge
then ranks the same step sets, and we count how often its pick is correct, beside a random
pick (the share of correct samples) and the best possible pick (some sample is correct).
Judges: `rules`, `yesno:MODEL` (log P(Yes) - log P(No), reward/llm_judge.py), `cite:MODEL`
(how much the cited evidence explains a summary or an answer, reward/evidence_judge.py),
`rank:MODEL` (the written ranking prompt of reward/prompts.py, greedy, parsed) and
`stored:JUDGE` (the rankings JUDGE wrote during an improve run's rank stage, read back: the
oracle grades, after the fact, what the loop trained on).

    python benchmarks/judge_agreement.py --db D --run RUN --world-seed S \
        --judge rules --judge yesno:smollm2 --judge rank:smollm2 --out judges.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True)
    p.add_argument("--run", required=True, help="name of the collect run whose steps are judged")
    p.add_argument("--world-seed", type=int, required=True)
    p.add_argument("--judge", action="append", default=[])
    p.add_argument("--limit", type=int, default=0, help="at most this many step sets (0 = all)")
    p.add_argument("--rank-limit", type=int, default=100,
                   help="rank:MODEL judges write a reply per set: judge only the first N sets")
    p.add_argument("--collect-model", default="", help="first collect --collect-questions train "
                   "questions of the world with this policy (K = --samples), as run --run")
    p.add_argument("--collect-questions", type=int, default=150)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--unfinished", action="store_true", help="also judge the steps of "
                   "trajectories stopped part-way (a collection cut short)")
    p.add_argument("--out", default="")
    return p.parse_args(argv)


STORED = "stored:"  # `stored:JUDGE`: the rankings JUDGE already wrote into the store (no model)


def stored_verdict(step, judge_name: str):
    """The ranking the trainer would read for this step (trainer/examples.py `ranking_of`):
    the newest one by `judge_name` under its current prompt version. Not ok (or none): a
    failed verdict."""
    from types import SimpleNamespace

    from reward.ranker import prompt_version
    from trainer.examples import ranking_of

    r = ranking_of(step, judge_name, prompt_version(judge_name))
    best = None if r is None or r.status != "ok" else (
        r.best_index if r.best_index is not None else (r.order[0] if r.order else None))
    return SimpleNamespace(ok=best is not None, best=best, bad=list(r.bad or []) if r else [])


def verdict_of(judge: str, llm, s: dict):
    from reward.ranker import judge as run_judge

    if judge.startswith(STORED):
        return stored_verdict(s["step"], judge[len(STORED):])
    name = "rules" if judge == "rules" else judge.replace("rank:", "", 1) if judge.startswith("rank:") else judge
    return run_judge(llm, s["step"], name)[0]


def measure(judge: str, sets: list[dict], rank_limit: int) -> dict:
    from agent.setup import make_judge

    llm = None if judge == "rules" or judge.startswith(STORED) else make_judge(judge.replace("rank:", "", 1) if judge.startswith("rank:") else judge)
    if judge.startswith("rank:"):
        sets = sets[:rank_limit]
    t0 = time.perf_counter()
    per_kind = defaultdict(lambda: {"sets": 0, "parsed": 0, "pick_correct": 0, "kept": 0,
                                    "kept_correct": 0, "mixed": 0, "mixed_pick_correct": 0,
                                    "trained": 0, "trained_correct": 0})
    for s in sets:
        v = verdict_of(judge, llm, s)
        row = per_kind[s["kind"]]
        row["sets"] += 1
        mixed = any(s["correct"]) and not all(s["correct"])
        row["mixed"] += mixed
        if not v.ok:
            continue
        row["parsed"] += 1
        good = s["correct"][v.best]
        row["pick_correct"] += good
        if v.best not in set(v.bad):  # the trainer leaves a step out when its pick is bad
            row["trained"] += 1
            row["trained_correct"] += good
        row["mixed_pick_correct"] += good and mixed
        kept = [i for i in range(len(s["correct"])) if i not in set(v.bad)]
        row["kept"] += len(kept)
        row["kept_correct"] += sum(s["correct"][i] for i in kept)
    if llm is not None and hasattr(llm, "close"):
        llm.close()  # the next judge loads its own model
    return {"judge": judge, "by_kind": dict(per_kind), **_totals(per_kind),
            "seconds": round(time.perf_counter() - t0, 1)}


def baselines(sets: list[dict]) -> dict:
    """A random pick's expected accuracy, and the best any judge could do."""
    rnd = sum(sum(s["correct"]) / len(s["correct"]) for s in sets) / max(len(sets), 1)
    mixed = [s for s in sets if any(s["correct"]) and not all(s["correct"])]
    rnd_mixed = sum(sum(s["correct"]) / len(s["correct"]) for s in mixed) / max(len(mixed), 1)
    return {"sets": len(sets), "mixed_sets": len(mixed),
            "random_pick_correct": round(rnd, 4), "random_mixed_pick_correct": round(rnd_mixed, 4),
            "best_possible": round(sum(any(s["correct"]) for s in sets) / max(len(sets), 1), 4),
            "samples_correct": round(sum(sum(s["correct"]) for s in sets)
                                     / max(sum(len(s["correct"]) for s in sets), 1), 4)}


def _totals(per_kind) -> dict:
    t = defaultdict(int)
    for row in per_kind.values():
        for k, v in row.items():
            t[k] += v
    return {"sets": t["sets"], "parsed": t["parsed"],
            "pick_correct": round(t["pick_correct"] / max(t["sets"], 1), 4),
            "mixed_pick_correct": round(t["mixed_pick_correct"] / max(t["mixed"], 1), 4),
            "kept_precision": round(t["kept_correct"] / max(t["kept"], 1), 4),
            "kept": t["kept"], "kept_correct": t["kept_correct"],
            # the steps the trainer keeps (pick not marked bad), and how often that pick is right
            "trained": t["trained"],
            "trained_precision": round(t["trained_correct"] / max(t["trained"], 1), 4)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    from agent.worlds.pocket.assets import pocket_assets
    from benchmarks.provenance import commit
    from store.api import Store

    from agent.worlds.pocket.oracle import labelled_sets
    from reward.evidence_judge import is_evidence
    from reward.llm_judge import is_yesno
    from trainer.judge_warmstart import sample_steps

    store = Store(args.db)
    if args.collect_model:  # the policy's sampled steps on the world's training questions
        sample_steps(store, args.world_seed, args.collect_model, args.run,
                     args.collect_questions, samples=args.samples)
    try:
        sets = labelled_sets(store, args.run, pocket_assets(args.world_seed).world_dir, args.limit,
                             finished_only=not args.unfinished)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    from benchmarks.pocket_improve import _card, _versions

    result = {"benchmark": "judge_agreement",
              "provenance": {"commit": commit(), "card": _card(), "versions": _versions(),
                             "command": " ".join(sys.argv)},
              "run": args.run, "world_seed": args.world_seed, **baselines(sets), "judges": []}
    for judge in args.judge:  # the file is rewritten after each judge: a time limit keeps the rest
        result["judges"].append(measure(judge, sets, args.rank_limit))
        print(json.dumps({k: v for k, v in result["judges"][-1].items() if k != "by_kind"}), flush=True)
        yesno = [j for j in result["judges"] if is_yesno(j["judge"]) or is_evidence(j["judge"])]
        result["best_llm_judge"] = max(yesno, key=lambda j: j["pick_correct"])["judge"] if yesno else None
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
