"""What an improve run did, iteration by iteration, read back from the store.

One source for everything that looks back at a loop: the HTML report page and the PNG
(trainer/report.py), and the per-iteration scalars of experiment tracking
(trainer/tracking.py). Nothing here writes.

- accuracy per iteration on every evaluated split: the loop's own held-out evaluation
  (runs `NAME:eval:IT`, on the run's eval split), any other evaluation filed under the run
  the same way (`NAME:test:IT`, as benchmarks/pocket_improve.py does), and the grow
  rollouts on the training split scored against their references (`train`; for the report
  only — training never reads a reference). Mean and spread over the runs per question.
- the judge's keep-rate: of the grow steps it ranked, the share whose pick it kept.
- stage times and example counts, from the run's state (trainer/improve.py `mark`).
- flips: questions answered right at one evaluated iteration and wrong at the next, or
  the other way round.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from statistics import mean, pstdev
from typing import Optional

STAGES = ("grow", "rank", "build", "train", "evaluate", "promote")


@dataclass
class Accuracy:
    mean: float
    std: float  # population std over runs (0 with one run)
    questions: int
    runs: int


@dataclass
class IterationStats:
    iteration: int
    model_version: Optional[str] = None
    promoted: bool = False
    examples: Optional[int] = None
    train_loss: Optional[float] = None
    tokens_per_s: Optional[float] = None
    keep_rate: Optional[float] = None  # kept / ranked grow steps
    ranked_steps: Optional[int] = None
    kept_steps: Optional[int] = None
    accuracy: dict[str, Accuracy] = field(default_factory=dict)  # split -> accuracy
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds


@dataclass
class Flip:
    split: str
    question_id: int
    question: str
    reference: Optional[str]
    before: int  # iteration
    after: int
    direction: str  # "right->wrong" or "wrong->right"


def improve_run(store, name: Optional[str] = None):
    """The improve run called `name`, or the newest one; None when there is none."""
    runs = store.runs(kind="improve")
    if name:
        return next((r for r in runs if r.name == name or str(r.id) == str(name)), None)
    return runs[-1] if runs else None


# --- the runs an improve run filed under its name ------------------------------------------


def _sub_runs(store, run) -> dict[tuple[str, int], object]:
    """(label, iteration) -> run for every `NAME:LABEL:IT` run (grow, eval, test, ...)."""
    pat = re.compile(re.escape(run.name) + r":([^:]+):(\d+)$")
    out = {}
    for r in store.runs():
        m = pat.match(r.name)
        if m:
            out[(m.group(1), int(m.group(2)))] = r
    return out


def eval_runs(store, run) -> dict[str, dict[int, object]]:
    """split -> iteration -> evaluation run (the loop's own `eval` label is its eval split)."""
    eval_split = (run.config or {}).get("eval_split", "dev")
    out: dict[str, dict[int, object]] = {}
    for (label, it), r in _sub_runs(store, run).items():
        if r.kind == "eval":
            out.setdefault(eval_split if label == "eval" else label, {})[it] = r
    return out


def grow_runs(store, run) -> dict[int, object]:
    return {it: r for (label, it), r in _sub_runs(store, run).items() if label == "grow"}


# --- scores --------------------------------------------------------------------------------


def scores(store, eval_run) -> dict[int, dict[int, float]]:
    """question id -> run index -> exact match, from an evaluation run's stored scores."""
    out: dict[int, dict[int, float]] = {}
    for e in store.evaluations(eval_run.id):
        out.setdefault(e.question_id, {})[e.run_index] = e.exact
    return out


def grow_scores(store, grow_run, answers: dict[int, Optional[str]]) -> dict[int, dict[int, float]]:
    """The same for grow rollouts, scored here against the references (report only)."""
    from reward.autoeval import exact_match

    out: dict[int, dict[int, float]] = {}
    for t in store.trajectories(run_id=grow_run.id):
        ref = answers.get(t.question_id)
        if t.status == "running" or not ref:
            continue
        pred = t.final_answer or ""
        out.setdefault(t.question_id, {})[t.sample_index] = float(exact_match(pred, ref)) if pred else 0.0
    return out


def accuracy(per_question: dict[int, dict[int, float]]) -> Optional[Accuracy]:
    """Mean over questions per run index, then mean and spread over run indices."""
    if not per_question:
        return None
    runs = sorted({i for by_run in per_question.values() for i in by_run})
    per_run = [sum(by_run.get(i, 0.0) for by_run in per_question.values()) / len(per_question)
               for i in runs]
    return Accuracy(mean(per_run), pstdev(per_run) if len(per_run) > 1 else 0.0,
                    len(per_question), len(runs))


def _answers(store, run) -> dict[int, Optional[str]]:
    qset = (run.config or {}).get("question_set")
    return {q.id: q.answer for q in store.questions(qset)} if qset else {}


# --- the judge ------------------------------------------------------------------------------


def keep_counts(store, run, grow_run) -> tuple[int, int]:
    """(ranked, kept): grow steps the run's judge ranked, and those whose pick it kept."""
    from reward.ranker import prompt_version
    from trainer.examples import examples_from_steps

    judge = (run.config or {}).get("judge", "rules")
    version = prompt_version(judge)
    steps = store.steps_of_run(grow_run.id, status="finished", min_samples=2)
    ranked = [s for s in steps if any(r.judge == judge and r.prompt_version == version
                                      for r in s.rankings)]
    kept = examples_from_steps(ranked, judge, version)
    return len(ranked), len(kept)


# --- per iteration --------------------------------------------------------------------------


def iterations(store, run) -> list[IterationStats]:
    """One row per iteration the run has reached (0 = the baseline)."""
    state = store.get_run(run.id).state or {}
    versions = {mv.iteration: mv for mv in store.model_versions() if mv.run_id == run.id}
    evals, grows = eval_runs(store, run), grow_runs(store, run)
    answers = _answers(store, run) if grows else {}
    its = sorted(set(versions) | {it for by_it in evals.values() for it in by_it} | set(grows)
                 | {int(k[2:]) for k in state if k.startswith("it") and k[2:].isdigit()})
    rows = []
    for it in its:
        row = IterationStats(iteration=it)
        entry = state.get(f"it{it}", {})
        build = entry.get("build")
        row.examples = build.get("examples") if isinstance(build, dict) else None
        row.seconds = {s: v for s, v in (entry.get("seconds") or {}).items()}
        mv = versions.get(it)
        if mv is not None:
            train = (mv.metrics or {}).get("train") or {}
            row.model_version, row.promoted = mv.name, bool(mv.promoted)
            row.train_loss, row.tokens_per_s = train.get("train_loss"), train.get("tokens_per_s")
        for split, by_it in evals.items():
            if it in by_it:
                acc = accuracy(scores(store, by_it[it]))
                if acc is not None:
                    row.accuracy[split] = acc
        if it in grows:
            acc = accuracy(grow_scores(store, grows[it], answers))
            if acc is not None:
                row.accuracy["train"] = acc
            row.ranked_steps, row.kept_steps = keep_counts(store, run, grows[it])
            if row.ranked_steps:
                row.keep_rate = row.kept_steps / row.ranked_steps
        rows.append(row)
    return rows


# --- flips ----------------------------------------------------------------------------------


def _correct(by_run: dict[int, float]) -> bool:
    """Right when at least half of the question's runs answered it exactly."""
    return bool(by_run) and sum(by_run.values()) / len(by_run) >= 0.5


def flips(store, run) -> list[Flip]:
    """Questions whose correctness changed between consecutive evaluated iterations (on the
    training split: between consecutive grow runs that both had the question)."""
    texts = {}
    qset = (run.config or {}).get("question_set")
    if qset:
        texts = {q.id: (q.text, q.answer) for q in store.questions(qset)}
    out = []
    per_split = {split: {it: scores(store, r) for it, r in by_it.items()}
                 for split, by_it in eval_runs(store, run).items()}
    grows = grow_runs(store, run)
    if grows:  # a training question grown again in a later iteration (the window wrapped)
        answers = {qid: ref for qid, (_, ref) in texts.items()}
        per_split["train"] = {it: grow_scores(store, r, answers) for it, r in grows.items()}
    for split, per_it in per_split.items():
        its = sorted(per_it)
        for before, after in zip(its, its[1:]):
            for qid in sorted(set(per_it[before]) & set(per_it[after])):
                was, now = _correct(per_it[before][qid]), _correct(per_it[after][qid])
                if was != now:
                    text, ref = texts.get(qid, ("", None))
                    out.append(Flip(split, qid, text, ref, before, after,
                                    "right->wrong" if was else "wrong->right"))
    return out


def question_trajectories(store, run, question_id: int) -> list[tuple[str, int, int]]:
    """(run label, iteration, trajectory id) of every trajectory of this question in the run."""
    out = []
    for (label, it), r in sorted(_sub_runs(store, run).items(), key=lambda kv: (kv[0][1], kv[0][0])):
        for t in store.trajectories(run_id=r.id, question_id=question_id):
            out.append((label, it, t.id))
    return out
