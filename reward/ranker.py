"""The ranker: a judge orders each step's sampled alternatives, and the store keeps it.

A judge is either an LLM (any backend: local, OpenAI-compatible, replay) given the
versioned prompt of `reward.prompts`, or the rule judge of `reward.rules` (judge name
"rules"). Only steps with at least two samples are ranked: with one there is nothing to
choose. A reply that cannot be parsed is stored as "unparseable" with its raw text — the
trainer then leaves the step out (or falls back to the rollout's choice), it never guesses.

`rank_run` is resumable: a step this judge already ranked under the same prompt version
is skipped, so re-running after a crash or a Ctrl-C only does what is left.
"""

from __future__ import annotations

from typing import Any, Callable

from agent.llm.base import LLMError
from reward.evidence_judge import EVIDENCE_PROMPT_VERSION, is_evidence, judge_evidence
from reward.llm_judge import is_strict, is_yesno, judge_yesno, version_of
from reward.prompts import RANK_PROMPT_VERSION, render_rank_prompt
from reward.rules import RULES_VERSION, judge_step
from reward.verdicts import RankingVerdict, format_ranking_reply, parse_ranking
from store.records import GenRequest, Generation

RULES_JUDGE = "rules"
JUDGE_MAX_NEW_TOKENS = 512
MAX_CONSECUTIVE_ERRORS = 3  # a judge failing this often in a row is down: stop, resume later


def prompt_version(judge_name: str) -> str:
    """The version rankings of this judge are stored under (and looked up by)."""
    if judge_name == RULES_JUDGE:
        return RULES_VERSION
    if is_evidence(judge_name):
        return EVIDENCE_PROMPT_VERSION
    return version_of(judge_name) if is_yesno(judge_name) else RANK_PROMPT_VERSION


def rank_request(step: Any) -> GenRequest:
    """The judge call for one step (a store StepRow or an agent Step): greedy, one reply."""
    prompt = render_rank_prompt(step.prompt, [s.text for s in step.samples])
    return GenRequest(prompt=prompt, n=1, temperature=0.0,
                      max_new_tokens=JUDGE_MAX_NEW_TOKENS, purpose="rank")


def judge(llm, step: Any, judge_name: str) -> tuple[RankingVerdict, Generation | None, GenRequest | None]:
    """Rank one step; also return the LLM call (None for the rule judge) for the logs.

    LLMError from the backend propagates: a judge that did not answer is not a verdict.
    """
    if judge_name == RULES_JUDGE:
        verdict = judge_step(step.kind, step.prompt, step.samples)
        if verdict.ok:
            verdict.raw = format_ranking_reply(verdict)
        return verdict, None, None
    if is_evidence(judge_name):  # scored by log-probabilities: no generation to log
        verdict = judge_evidence(llm, step.kind, step.prompt, step.samples)
        verdict.raw = verdict.explanation
        return verdict, None, None
    if is_yesno(judge_name):
        verdict = judge_yesno(llm, step.kind, step.prompt, step.samples,
                              strict=is_strict(judge_name))
        verdict.raw = verdict.explanation
        return verdict, None, None
    request = rank_request(step)
    generation = llm.generate(request)
    reply = generation.completions[0].text if generation.completions else ""
    return parse_ranking(reply, len(step.samples)), generation, request


def rank_step(llm, step: Any, judge_name: str) -> RankingVerdict:
    """The judge's verdict on one step's alternatives (0-based indices)."""
    return judge(llm, step, judge_name)[0]


def rank_run(store, run_id: int, llm, judge_name: str,
             progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Rank every unranked step with ≥ 2 samples of the run's finished trajectories.

    Returns counts: steps (candidates), skipped (already ranked), ok, unparseable,
    errors (judge calls that failed; those steps stay unranked for the next pass).
    `progress(done, total)` is called after each candidate step.
    """
    version = prompt_version(judge_name)
    steps = store.steps_of_run(run_id, status="finished", min_samples=2)
    done_ids = store.ranked_step_ids(judge_name, version)
    counts = {"steps": len(steps), "skipped": 0, "ok": 0, "unparseable": 0, "errors": 0}
    consecutive_errors = 0
    for n, step in enumerate(steps, start=1):
        if step.id in done_ids:
            counts["skipped"] += 1
        else:
            try:
                verdict, generation, request = judge(llm, step, judge_name)
            except LLMError:
                counts["errors"] += 1
                consecutive_errors += 1
                if consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
                    raise
            else:
                consecutive_errors = 0
                _store(store, step, judge_name, version, verdict, generation, request)
                counts["ok" if verdict.ok else "unparseable"] += 1
        if progress is not None:
            progress(n, len(steps))
    return counts


def _store(store, step, judge_name, version, verdict: RankingVerdict,
           generation: Generation | None, request: GenRequest | None) -> None:
    if generation is not None:
        store.log_llm_call(generation, request, trajectory_id=step.trajectory_id,
                           step_id=step.id, purpose="rank")
    store.add_ranking(step.id, judge_name, version,
                      status="ok" if verdict.ok else "unparseable",
                      best_index=verdict.best, order=verdict.order, bad=verdict.bad,
                      explanation=verdict.explanation if verdict.ok else verdict.error,
                      raw=verdict.raw)
