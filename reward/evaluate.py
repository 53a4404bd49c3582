"""Evaluation: run the agent on questions with reference answers and score its answers.

Scores per answer: normalised exact match, token F1 and (optionally) the Check_Answer LLM
judge. With several runs per question the accuracy is computed per run and reported as
mean ± std over runs, as the paper does. Resumable: finished (question, run) pairs of an
evaluation run are not asked again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from agent.collect import Item, collect
from agent.graph import Agent


@dataclass
class EvalSummary:
    questions: int
    runs: int
    exact_mean: float
    exact_std: float
    f1_mean: float
    judge_mean: Optional[float] = None
    judge_std: Optional[float] = None
    per_run_exact: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def evaluate(agent: Agent, run_id: int, questions: list, runs: int = 1, concurrency: int = 4,
             judge=None, model: str | None = None, model_version_id: int | None = None,
             on_done: Callable | None = None) -> EvalSummary:
    """Run and score every (question, run) pair, then summarise the whole evaluation run."""
    store = agent.store
    items = [Item(q.id, q.text, r) for r in range(runs) for q in questions]
    collect(agent, run_id, items, concurrency=concurrency, model=model,
            model_version_id=model_version_id, on_done=on_done)
    score_run(store, run_id, questions, judge=judge, model_version_id=model_version_id)
    return summarize(store, run_id, len(questions), runs)


def score_run(store, run_id: int, questions: list, judge=None,
              model_version_id: int | None = None) -> None:
    from reward.autoeval import exact_match, judge_answer, token_f1

    by_id = {q.id: q for q in questions}
    done = {(e.question_id, e.run_index) for e in store.evaluations(run_id)}
    for t in store.trajectories(run_id=run_id):
        q = by_id.get(t.question_id)
        if q is None or t.status in ("running", "interrupted") or (t.question_id, t.sample_index) in done:
            continue
        pred = t.final_answer or ""
        ref = q.answer or ""
        verdict = (judge_answer(judge, q.text, pred, ref, store=store, trajectory_id=t.id)
                   if judge is not None and pred else None)
        store.add_evaluation(run_id, q.id, t.sample_index, pred, ref,
                             float(exact_match(pred, ref)) if pred else 0.0,
                             float(token_f1(pred, ref)) if pred else 0.0,
                             judge_verdict=verdict, trajectory_id=t.id,
                             model_version_id=model_version_id)


def summarize(store, run_id: int, n_questions: int, runs: int) -> EvalSummary:
    from statistics import mean, pstdev

    evals = store.evaluations(run_id)
    per_run, per_run_judge, f1 = [], [], []
    for r in range(runs):
        rows = [e for e in evals if e.run_index == r]
        # A question with no evaluation row (its trajectory failed) scores 0.
        per_run.append(sum(e.exact for e in rows) / max(n_questions, 1))
        f1.append(sum(e.f1 for e in rows) / max(n_questions, 1))
        judged = [e.judge_verdict for e in rows if e.judge_verdict is not None]
        if judged:
            per_run_judge.append(sum(judged) / max(n_questions, 1))
    return EvalSummary(
        questions=n_questions, runs=runs, exact_mean=mean(per_run) if per_run else 0.0,
        exact_std=pstdev(per_run) if len(per_run) > 1 else 0.0,
        f1_mean=mean(f1) if f1 else 0.0,
        judge_mean=mean(per_run_judge) if per_run_judge else None,
        judge_std=pstdev(per_run_judge) if len(per_run_judge) > 1 else None,
        per_run_exact=per_run)
