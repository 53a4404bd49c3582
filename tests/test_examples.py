"""Training examples: ranked steps from a real SQLite store, Alpaca files, tokenization."""

from __future__ import annotations

import json

import pytest

from store.records import Sample, Search, Step
from store.api import Store
from trainer.examples import (Example, alpaca_prompt, clean_trajectories, examples_from_steps, load_alpaca, tokenize_example,
                              tokenize_examples)

JUDGE, V1 = "rule", "v1"


@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory):
    """The tiny Llama-3-style tokenizer (chat template, BOS, <|eot_id|> as EOS)."""
    from tests.tiny import build_tokenizer

    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def _sample(text: str, ok: bool = True, logprob: float = -1.0) -> Sample:
    action = Search(query=text, thoughts="t") if ok else None
    return Sample(text=text, n_tokens=4, logprob=logprob, action=action,
                  parse_error=None if ok else "no action")


def _step(i: int, samples: list[Sample], chosen: int | None) -> Step:
    return Step(kind="decide", prompt=f"<|begin_of_text|>prompt {i}", samples=samples,
                chosen=chosen, index=i)


@pytest.fixture
def ranked(tmp_path):
    """A finished trajectory with one step per ranking situation, and a failed one."""
    store = Store(str(tmp_path / "t.db"))
    run = store.get_or_create_run("grow", "collect")
    claim = store.claim(run.id, None, "Who founded Acme?")
    ids = {}

    def add(name, i, samples, chosen, **ranking):
        ids[name] = store.add_step(claim.trajectory_id, _step(i, samples, chosen))
        if ranking:
            store.add_ranking(ids[name], ranking.pop("judge", JUDGE),
                              ranking.pop("version", V1), **ranking)

    three = lambda p: [_sample(f"{p}0"), _sample(f"{p}1"), _sample(f"{p}2")]  # noqa: E731
    add("best", 0, three("a"), 0, status="ok", best_index=2, order=[2, 0, 1])
    add("bad", 1, three("b"), 0, status="ok", best_index=1, order=[1, 0, 2], bad=[1, 2])
    add("unranked", 2, three("c"), 1)
    add("unparsed_best", 3, [_sample("d0"), _sample("d1", ok=False)], 0,
        status="ok", best_index=1, order=[1, 0])
    add("judge_failed", 4, three("e"), 2, status="unparseable")
    add("other_judge", 5, three("f"), 0, judge="llama", status="ok", best_index=1, order=[1, 0, 2])
    add("old_version", 6, three("g"), 0, version="v0", status="ok", best_index=2, order=[2, 1, 0])
    add("order_only", 7, three("h"), 0, status="ok", order=[1, 2, 0])
    store.finish_trajectory(claim.trajectory_id, "finished", answer="Ada")

    failed = store.claim(run.id, None, "Who failed?", sample_index=1)
    ids["failed"] = store.add_step(failed.trajectory_id, _step(0, three("z"), 0))
    store.add_ranking(ids["failed"], JUDGE, V1, "ok", best_index=1, order=[1, 0, 2])
    store.finish_trajectory(failed.trajectory_id, "failed", error="boom")

    steps = store.steps_of_run(run.id, status="finished")
    store.close()
    return steps, ids


def _by_step(examples: list[Example]) -> dict[int, str]:
    return {ex.step_id: ex.completion for ex in examples}


def test_ranked_best_is_the_completion_and_bad_or_unparsed_steps_are_dropped(ranked):
    steps, ids = ranked
    got = _by_step(examples_from_steps(steps, JUDGE, V1))
    assert got == {ids["best"]: "a2", ids["order_only"]: "h1"}
    ex = next(e for e in examples_from_steps(steps, JUDGE, V1) if e.step_id == ids["best"])
    assert ex.prompt == "<|begin_of_text|>prompt 0"  # verbatim stored prompt
    assert ids["failed"] not in got  # failed trajectories never reach training


def test_drop_bad_off_keeps_a_best_judged_bad(ranked):
    steps, ids = ranked
    got = _by_step(examples_from_steps(steps, JUDGE, V1, drop_bad=False))
    assert got[ids["bad"]] == "b1"


def test_unranked_steps_use_the_chosen_sample_when_asked(ranked):
    steps, ids = ranked
    got = _by_step(examples_from_steps(steps, JUDGE, V1, use_unranked=True))
    # unranked, judge unparseable, other judge, other prompt version: all fall back to chosen
    assert got[ids["unranked"]] == "c1"
    assert got[ids["judge_failed"]] == "e2"
    assert got[ids["other_judge"]] == "f0"
    assert got[ids["old_version"]] == "g0"
    assert got[ids["best"]] == "a2" and ids["bad"] not in got


def test_prompt_version_none_accepts_any_version_and_judge_none_means_chosen(ranked):
    steps, ids = ranked
    assert _by_step(examples_from_steps(steps, JUDGE, None))[ids["old_version"]] == "g2"
    chosen = _by_step(examples_from_steps(steps, None, None))
    assert chosen[ids["best"]] == "a0" and chosen[ids["bad"]] == "b0"
    assert chosen[ids["unparsed_best"]] == "d0"


def test_a_step_appears_at_most_once(ranked):
    steps, _ = ranked
    examples = examples_from_steps(list(steps) + list(steps), None, None)
    assert len(examples) == len({e.step_id for e in examples}) == len(steps)


# --- clean trajectories ------------------------------------------------------------------


@pytest.fixture
def paths(tmp_path):
    """Three finished trajectories: every taken step judged good; one taken step judged bad
    (its best alternative is good); one step the judge never ranked."""
    store = Store(str(tmp_path / "t.db"))
    run = store.get_or_create_run("grow", "collect")
    tids, step_ids = {}, {}
    three = lambda p: [_sample(f"{p}0"), _sample(f"{p}1"), _sample(f"{p}2")]  # noqa: E731
    plans = {"good": [(0, [2]), (1, [])],  # (chosen index, bad indices) per step
             "took_bad": [(0, []), (1, [1, 2])],
             "unranked": [(0, []), (0, None)]}
    for n, (name, plan) in enumerate(plans.items()):
        claim = store.claim(run.id, None, f"question {name}", sample_index=n)
        tids[name] = claim.trajectory_id
        for i, (chosen, bad) in enumerate(plan):
            sid = store.add_step(claim.trajectory_id, _step(i, three(f"{name}{i}-"), chosen))
            step_ids[(name, i)] = sid
            if bad is not None:
                best = max(j for j in range(3) if j not in bad)
                store.add_ranking(sid, JUDGE, V1, "ok", best_index=best,
                                  order=[best] + [j for j in range(3) if j != best], bad=bad)
        store.finish_trajectory(claim.trajectory_id, "finished", answer="x")
    steps = store.steps_of_run(run.id, status="finished")
    store.close()
    return steps, tids, step_ids


def test_a_clean_trajectory_is_one_whose_every_taken_step_the_judge_passes(paths):
    steps, tids, _ = paths
    assert clean_trajectories(steps, JUDGE, V1) == {tids["good"]}
    assert clean_trajectories(steps, JUDGE, "another version") == set()  # nothing verified


def test_clean_only_trains_on_the_clean_trajectories_steps_alone(paths):
    steps, _, ids = paths
    every = _by_step(examples_from_steps(steps, JUDGE, V1))
    clean = _by_step(examples_from_steps(steps, JUDGE, V1, clean_only=True))
    # the per-step pick still applies inside a clean trajectory: its best, not its taken sample
    assert clean == {ids[("good", 0)]: "good0-1", ids[("good", 1)]: "good1-2"}
    assert ids[("took_bad", 1)] in every and ids[("took_bad", 1)] not in clean
    with pytest.raises(ValueError, match="needs a judge"):
        examples_from_steps(steps, None, None, clean_only=True)


# --- Alpaca ----------------------------------------------------------------------------


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


ROWS = [{"instruction": "Classify the sentiment.", "input": "I love it", "output": "positive"},
        {"instruction": "Say hi.", "input": "", "output": "hi"}]


def test_alpaca_jsonl_and_json_list_give_the_same_examples(tmp_path):
    a = load_alpaca(_write_jsonl(tmp_path / "a.jsonl", ROWS))
    (tmp_path / "b.json").write_text(json.dumps(ROWS))
    b = load_alpaca(tmp_path / "b.json")
    assert a == b
    assert a[0] == Example(None, "### Instruction:\nClassify the sentiment.\n\n### Input:\nI love it\n\n"
                                 "### Response:\n", "positive")
    assert "### Input" not in a[1].prompt


def test_alpaca_uses_the_chat_template_when_the_tokenizer_has_one(tmp_path, tiny_tok):
    ex = load_alpaca(_write_jsonl(tmp_path / "a.jsonl", ROWS), tiny_tok)[0]
    assert ex.prompt == tiny_tok.apply_chat_template(
        [{"role": "user", "content": "Classify the sentiment.\n\nI love it"}],
        add_generation_prompt=True, tokenize=False)
    assert ex.prompt.startswith(tiny_tok.bos_token)


def test_alpaca_plain_prompt_starts_with_bos_for_a_base_tokenizer(tiny_tok):
    tpl, tiny_tok.chat_template = tiny_tok.chat_template, None
    try:
        assert alpaca_prompt("Say hi.", "", tiny_tok) == tiny_tok.bos_token + "### Instruction:\nSay hi.\n\n### Response:\n"
    finally:
        tiny_tok.chat_template = tpl


@pytest.mark.parametrize("body, where, what", [
    ('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": \n', ":2:", "invalid JSON"),
    ('{"instruction": "a", "output": "b"}\n\n{"instruction": "a"}\n', ":3:", "missing field(s) output"),
    ('["just a string"]', "item 1", "expected an object"),
    ('{"instruction": "a", "output": 3}\n', ":1:", "must be strings"),
    ("", "", "no Alpaca records"),
])
def test_malformed_alpaca_file_is_one_line_naming_file_and_line(tmp_path, body, where, what):
    path = tmp_path / "bad.jsonl"
    path.write_text(body)
    with pytest.raises(ValueError) as err:
        load_alpaca(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and where in msg and what in msg


def test_missing_alpaca_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="Alpaca file not found: .*nope.jsonl"):
        load_alpaca(tmp_path / "nope.jsonl")


# --- tokenization ----------------------------------------------------------------------


def test_tokenize_concatenates_rollout_prompt_ids_and_completion_ids_plus_eos(tiny_tok):
    prompt = tiny_tok.apply_chat_template([{"role": "user", "content": "Who founded Acme?"}],
                                          add_generation_prompt=True, tokenize=False)
    completion = 'Search(query="founder of Acme", thoughts="find the founder")'
    row = tokenize_example(tiny_tok, Example(1, prompt, completion), max_length=512)
    p = tiny_tok(prompt, add_special_tokens=False)["input_ids"]
    c = tiny_tok(completion, add_special_tokens=False)["input_ids"]
    assert row["input_ids"] == p + c + [tiny_tok.eos_token_id]
    assert row["completion_mask"] == [0] * len(p) + [1] * (len(c) + 1)
    assert p[0] == tiny_tok.bos_token_id and p.count(tiny_tok.bos_token_id) == 1


def test_tokenize_does_not_double_an_eos_already_in_the_completion(tiny_tok):
    row = tokenize_example(tiny_tok, Example(1, "x", "Terminate" + tiny_tok.eos_token), 64)
    assert row["input_ids"][-1] == tiny_tok.eos_token_id != row["input_ids"][-2]


def test_too_long_examples_lose_the_left_of_the_prompt_not_the_completion(tiny_tok):
    prompt, completion = "The quick brown fox jumps. " * 20, "Answer(thoughts=\"done\")"
    full = tokenize_example(tiny_tok, Example(1, prompt, completion), 10_000)
    cut = tokenize_example(tiny_tok, Example(1, prompt, completion), 30)
    n_c = sum(full["completion_mask"])
    assert len(cut["input_ids"]) == 30
    assert cut["input_ids"] == full["input_ids"][-30:]
    assert sum(cut["completion_mask"]) == n_c
    tiny = tokenize_example(tiny_tok, Example(1, prompt, completion), 3)
    assert tiny["completion_mask"] == [1, 1, 1]


@pytest.mark.parametrize("max_length", [3, 30, 10_000])
def test_batched_tokenization_gives_the_rows_of_one_call_per_example(tiny_tok, max_length):
    examples = [Example(i, "The quick brown fox jumps. " * i, f'Answer(thoughts="{i}", answer="x")')
                for i in range(7)]
    examples.append(Example(7, "x", "Terminate" + tiny_tok.eos_token))  # EOS already there
    want = [tokenize_example(tiny_tok, ex, max_length) for ex in examples]
    assert tokenize_examples(tiny_tok, examples, max_length, chunk=3) == want  # chunks join up

