"""A prompt-based judge for models too small to write a ranking: yes/no log-probabilities.

The paper's ranker writes `Explanation / Answer / Ranking`; a 135 M-parameter instruct model
cannot (docs/BENCHMARKS.md measures how often it parses). What a small model can do is read
one candidate at a time and say Yes or No. This judge asks, for each of a step's K outputs,
whether it is correct and supported by what the agent could see, and scores it by
log P(Yes) - log P(No) from one forward pass (no sampling, nothing to parse). The order is
by score; a candidate is bad when it is not a well-formed call of the step's kind (the
rubric's "anything empty or malformed is bad", which needs no model), or when its score is
below zero and it is not the best well-formed one. A small judge's scores are a ranking, not a
calibrated verdict: SmolLM2 says No to nearly every decide, summarize and answer step
(docs/BENCHMARKS.md section 6), so an absolute threshold alone would keep none of them. Any backend with `score_pairs([(prompt, continuation), ...])` can judge (HFBackend has it).

A judge trained to answer this very question (trainer/judge_warmstart.py) is calibrated: its
sign means something. `yesno-strict:MODEL` trusts it, and marks bad every candidate scored
below zero, the best one included, so a step where the judge believes no candidate leaves
the training data, as it does under the rule judge.

Judge specs: `yesno:MODEL` (e.g. `yesno:smollm2`), stored under YESNO_PROMPT_VERSION;
`yesno-strict:MODEL`, under YESNO_STRICT_VERSION.
"""

from __future__ import annotations

from reward.verdicts import RankingVerdict, failed

YESNO_PROMPT_VERSION = "yesno-v2"  # v2: the best well-formed candidate is kept
YESNO_PREFIX = "yesno:"
YESNO_STRICT_VERSION = "yesno-strict-v1"  # the same prompt; a candidate scored below zero is bad
YESNO_STRICT_PREFIX = "yesno-strict:"

YESNO_INSTRUCTIONS = """\
You check one step of a question-answering agent that searches a small encyclopedia.
Below is everything the agent could see, then one output it wrote for this step."""

YESNO_QUESTION = """\
Is this output a correct next step? Answer Yes only if every name, place and year it states
is copied exactly from the search results or earlier summaries it cites, and it does what
the step asks. Otherwise answer No."""


def is_yesno(judge_name: str) -> bool:
    return judge_name.startswith((YESNO_PREFIX, YESNO_STRICT_PREFIX))


def is_strict(judge_name: str) -> bool:
    return judge_name.startswith(YESNO_STRICT_PREFIX)


def version_of(judge_name: str) -> str:
    return YESNO_STRICT_VERSION if is_strict(judge_name) else YESNO_PROMPT_VERSION


def model_of(judge_name: str) -> str:
    """The model spec behind a `yesno:MODEL` or `yesno-strict:MODEL` judge name."""
    return judge_name.split(":", 1)[1]


def render_yesno_prompt(step_prompt: str, output: str) -> str:
    return "\n".join([YESNO_INSTRUCTIONS, "", "=== WHAT THE AGENT SAW ===", step_prompt, "",
                      "=== ITS OUTPUT ===", output, "", YESNO_QUESTION])


def yesno_scores(llm, step_prompt: str, outputs: list[str]) -> list[float]:
    """log P(Yes) - log P(No) for each output."""
    pairs = [(render_yesno_prompt(step_prompt, out), word) for out in outputs
             for word in ("Yes", "No")]
    lp = llm.score_pairs(pairs)
    return [lp[2 * i] - lp[2 * i + 1] for i in range(len(outputs))]


def judge_yesno(llm, kind: str, step_prompt: str, samples, strict: bool = False) -> RankingVerdict:
    """Rank a step's samples by the model's yes/no scores (0-based indices); `strict` marks
    every candidate scored below zero bad, the best one too."""
    from agent.parsing import parse_action

    texts = [getattr(s, "text", s) for s in samples]
    if not texts:
        return failed("no samples to rank")
    scores = yesno_scores(llm, step_prompt, texts)
    malformed = [parse_action(kind, t)[0] is None for t in texts]
    return verdict_of_scores(scores, malformed, strict, "yes-no")


def verdict_of_scores(scores: list[float], malformed: list[bool], strict: bool,
                      label: str) -> RankingVerdict:
    """Order by score, malformed last; malformed is bad, and so is a candidate scored below
    zero unless it is the best well-formed one (`strict`: even then)."""
    keys = sorted(range(len(scores)), key=lambda i: (malformed[i], -scores[i], i))
    top = keys[0] if not malformed[keys[0]] else None
    bad = [i for i in range(len(scores))
           if malformed[i] or (scores[i] < 0 and (strict or i != top))]
    explanation = "; ".join(f"#{i + 1}: {scores[i]:+.2f}" + (" malformed" if malformed[i] else "")
                            for i in range(len(scores)))
    verdict = RankingVerdict(ok=True, best=keys[0], order=keys, bad=bad,
                             explanation=f"{label} scores {explanation}")
    verdict.scores = scores  # for measurement; not stored
    return verdict
