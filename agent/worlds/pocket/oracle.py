"""The pocket world's oracle as a grader of sampled steps.

A pocket world knows the right action for every prompt the agent can see: the error-free
scripted reader reads the prompt back and acts. That makes any stored step set (the K sampled
outputs of one step) gradable: a sample is correct when its parsed action equals the oracle's,
thoughts aside. Two things use these labels, both on worlds the loop is not measured on: the
judge measurement (benchmarks/judge_agreement.py) and the judge's warm start
(trainer/judge_warmstart.py). The improve loop itself never sees them.
"""

from __future__ import annotations

import json
from pathlib import Path


def action_key(kind: str, text: str):
    """What makes two outputs the same action: its type and fields, thoughts left out."""
    from agent.parsing import parse_action

    action, _ = parse_action(kind, text)
    if action is None:
        return None
    fields = {k: v for k, v in vars(action).items() if k != "thoughts"}
    return type(action).__name__, json.dumps(fields, sort_keys=True, default=str)


def labelled_sets(store, run_name: str, world_dir: Path, limit: int = 0) -> list[dict]:
    """The run's step sets ({step, kind, correct: [bool per sample]}), graded by the oracle."""
    from agent.worlds.pocket.policy import ScriptedPolicy
    from store.records import GenRequest

    run = store.get_run(run_name)
    if run is None:
        raise ValueError(f"no run named {run_name!r} in this store")
    oracle = ScriptedPolicy(world_dir, error_rate=0.0, seed=0)
    sets = []
    for step in store.steps_of_run(run.id, status="finished", min_samples=2):
        try:
            right = oracle.generate(GenRequest(prompt=step.prompt)).completions[0].text
        except ValueError:  # a prompt the reader cannot read back
            continue
        want = action_key(step.kind, right)
        texts = [s.text for s in step.samples]
        sets.append({"step": step, "kind": step.kind,
                     "correct": [action_key(step.kind, t) == want for t in texts]})
        if limit and len(sets) >= limit:
            break
    return sets
