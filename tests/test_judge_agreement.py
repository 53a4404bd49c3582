"""The judge measurement reads rankings back from the store: `stored:JUDGE` must count what
JUDGE's rank stage wrote exactly as judging the same sets afresh does."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def test_stored_rankings_grade_like_a_fresh_judge(tmp_path):
    from agent.worlds.pocket.assets import DEMO_SEED, pocket_assets
    from agent.worlds.pocket.oracle import labelled_sets
    from benchmarks.judge_agreement import baselines, measure
    from reward.ranker import rank_run
    from store.api import Store
    from trainer.judge_warmstart import sample_steps

    store = Store(str(tmp_path / "j.db"))
    sample_steps(store, DEMO_SEED, "scripted:pocket:0.5", "sets", questions=4, samples=3,
                 concurrency=2)
    run = store.get_run("sets")
    counts = rank_run(store, run.id, None, "rules")
    assert counts["ok"] > 0 and counts["unparseable"] == 0
    sets = labelled_sets(store, "sets", pocket_assets(DEMO_SEED).world_dir)
    assert len(sets) == counts["ok"]
    base = baselines(sets)
    assert 0 < base["samples_correct"] < 1  # a reader at 50 % mistakes: mixed sets to grade
    fresh, stored = measure("rules", sets, rank_limit=0), measure("stored:rules", sets, rank_limit=0)
    for key in ("sets", "parsed", "pick_correct", "mixed_pick_correct", "kept", "kept_correct"):
        assert stored[key] == fresh[key], key
    assert measure("stored:yesno:nobody", sets, rank_limit=0)["parsed"] == 0  # never ranked


def test_the_oracle_passes_error_free_samples_and_a_missing_run_is_an_error(tmp_path):
    from types import SimpleNamespace

    import pytest

    from store.records import GenRequest

    from agent.worlds.pocket.assets import DEMO_SEED, pocket_assets
    from agent.worlds.pocket.oracle import labelled_sets
    from store.api import Store
    from trainer.judge_warmstart import sample_steps

    store = Store(str(tmp_path / "o.db"))
    sample_steps(store, DEMO_SEED, "scripted:pocket:0", "clean", questions=3, samples=2,
                 concurrency=2)
    world = pocket_assets(DEMO_SEED).world_dir
    sets = labelled_sets(store, "clean", world)
    # The reader's first sample is error-free; later ones take extra mistakes on purpose
    # (agent/worlds/pocket/policy.py), and the oracle must tell them apart.
    assert sets and all(s["correct"][0] for s in sets)
    assert any(not s["correct"][1] for s in sets)
    # Either of two equally good first queries is correct: the reader's draws differ on some.
    from agent.worlds.pocket.oracle import ORACLE_DRAWS, right_actions
    from agent.worlds.pocket.policy import ScriptedPolicy

    oracles = [ScriptedPolicy(world, error_rate=0.0, seed=s) for s in range(ORACLE_DRAWS)]
    choices = [right_actions(oracles, s["kind"], s["step"].prompt) for s in sets if s["kind"] == "decide"]
    assert any(len(c) == 2 for c in choices) and all(len(c) <= 2 for c in choices)
    # And labelled_sets grades both as correct, beside a vague query it grades wrong.
    step = next(s["step"] for s in sets if s["kind"] == "decide"
                and len(right_actions(oracles, "decide", s["step"].prompt)) == 2)
    both = sorted({o.generate(GenRequest(prompt=step.prompt)).completions[0].text for o in oracles})
    assert len({t.split("thoughts=")[0] for t in both}) == 2
    texts = [t.split("thoughts=")[0] for t in both][:2]
    samples = [SimpleNamespace(text=t + 'thoughts="x")') for t in texts] + [
        SimpleNamespace(text='Search(query="zz", thoughts="x")')]
    fake = SimpleNamespace(get_run=lambda name: SimpleNamespace(id=1),
                           steps_of_run=lambda *a, **k: [SimpleNamespace(
                               prompt=step.prompt, kind="decide", samples=samples)])
    assert labelled_sets(fake, "any", world)[0]["correct"] == [True, True, False]
    with pytest.raises(ValueError, match="no run named 'typo'"):
        labelled_sets(store, "typo", world)
    assert store.get_run("typo") is None  # asking created nothing
