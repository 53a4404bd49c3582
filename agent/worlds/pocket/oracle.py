"""The pocket world's oracle as a grader of sampled steps.

A pocket world knows the right actions for every prompt the agent can see: the error-free
scripted reader reads the prompt back and acts. That makes any stored step set (the K sampled
outputs of one step) gradable: a sample is correct when its parsed action is one the oracle
takes, thoughts aside. Two things use these labels, both on worlds the loop is not measured on: the
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


# The error-free reader still makes free choices: which of two equally good queries it tries
# first ("Pokuia" or "Pokuia capital"), and the wording of its thoughts. Any of its draws is a
# correct step, so a sample is graded against the actions of this many draws, not one: with a
# single draw, half the correct queries would be counted wrong. With 32, the chance that a
# prompt's two first queries are not both drawn is 2 in 2^32; the reader is a script, so
# the draws cost next to nothing.
ORACLE_DRAWS = 32


def right_actions(oracles, kind: str, prompt: str) -> set:
    """The action keys the error-free reader takes for this prompt over its draws."""
    from store.records import GenRequest

    return {action_key(kind, o.generate(GenRequest(prompt=prompt)).completions[0].text)
            for o in oracles}


def labelled_sets(store, run_name: str, world_dir: Path, limit: int = 0,
                  finished_only: bool = True) -> list[dict]:
    """The run's step sets ({step, kind, correct: [bool per sample]}), graded by the oracle.
    `finished_only=False` also reads the steps of trajectories stopped part-way: each stored
    step is whole, whatever came after it."""
    from agent.worlds.pocket.policy import ScriptedPolicy

    run = store.get_run(run_name)
    if run is None:
        raise ValueError(f"no run named {run_name!r} in this store")
    oracles = [ScriptedPolicy(world_dir, error_rate=0.0, seed=s) for s in range(ORACLE_DRAWS)]
    sets = []
    status = "finished" if finished_only else None
    for step in store.steps_of_run(run.id, status=status, min_samples=2):
        try:
            want = right_actions(oracles, step.kind, step.prompt)
        except ValueError:  # a prompt the reader cannot read back
            continue
        texts = [s.text for s in step.samples]
        sets.append({"step": step, "kind": step.kind,
                     "correct": [action_key(step.kind, t) in want for t in texts]})
        if limit and len(sets) >= limit:
            break
    return sets
