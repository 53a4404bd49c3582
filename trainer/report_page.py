"""The improve report as one self-contained HTML page: open it from disk, no server, no network.

    python cli.py report --html report.html

The page carries its data as JSON and draws it with inline JS and SVG (report_page.html
beside this file): accuracy per iteration on every evaluated split (mean ± spread), the
judge's keep-rate, stage times and example counts per iteration, and the questions that
flipped between iterations. Clicking a flipped question lays its trajectories side by side
across iterations: each step's sampled alternatives, the judge's ranking, the pick, the
searches and the snippets the summaries cited.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from trainer import history

TEMPLATE = Path(__file__).with_name("report_page.html")
MAX_FLIPPED = 300  # questions whose trajectories the page carries (the page stays small)


def page_data(store, run) -> dict:
    """Everything the page shows, as JSON-ready data."""
    rows = history.iterations(store, run)
    flips = history.flips(store, run)
    questions: dict[int, dict] = {}
    trajectories: dict[int, dict] = {}
    for f in flips:
        if f.question_id in questions or len(questions) >= MAX_FLIPPED:
            continue
        questions[f.question_id] = {"text": f.question, "reference": f.reference,
                                    "trajectories": []}
        for label, it, tid in history.question_trajectories(store, run, f.question_id):
            questions[f.question_id]["trajectories"].append(
                {"label": label, "iteration": it, "id": tid})
            trajectories[tid] = _trajectory(store, tid, f.reference)
    cfg = run.config or {}
    return {
        "run": {"name": run.name, "id": run.id, "status": run.status,
                "base_model": cfg.get("base_model"), "judge": cfg.get("judge"),
                "question_set": cfg.get("question_set"), "eval_split": cfg.get("eval_split"),
                "iterations": cfg.get("iterations")},
        "stages": list(history.STAGES),
        "iterations": [asdict(r) for r in rows],
        "flips": [asdict(f) for f in flips],
        "questions": {str(k): v for k, v in questions.items()},
        "trajectories": {str(k): v for k, v in trajectories.items()},
    }


def _trajectory(store, tid: int, reference) -> dict:
    """A stored trajectory as the page draws it: each step's samples, rankings and searches.
    Prompts are left out (long, and `show --full` has them)."""
    from reward.autoeval import exact_match

    t = store.trajectory(tid)
    pred = t.final_answer or ""
    return {
        "id": t.id, "status": t.status, "final_answer": t.final_answer, "error": t.error,
        "exact": bool(pred and reference and exact_match(pred, reference)),
        "steps": [{"id": s.id, "idx": s.idx, "kind": s.kind, "status": s.status,
                   "action": s.action, "chosen_index": s.chosen_index,
                   "samples": [{"idx": x.idx, "text": x.text, "perplexity": x.perplexity,
                                "action": x.action, "parse_error": x.parse_error}
                               for x in s.samples],
                   "rankings": [{"judge": r.judge, "prompt_version": r.prompt_version,
                                 "status": r.status, "best_index": r.best_index,
                                 "order": list(r.order), "bad": list(r.bad),
                                 "explanation": r.explanation} for r in s.rankings]}
                  for s in t.steps],
        "searches": [{"step_id": c.step_id, "query": c.query, "results": list(c.results),
                      "error": c.error} for c in t.searches],
    }


def render(data: dict) -> str:
    """The page: the template with the data inlined where a script can read it."""
    blob = json.dumps(data, ensure_ascii=False, default=str)
    # Inside <script>, "</script" or "<!--" in a trajectory's text would end or upset the
    # element; "<" only occurs inside JSON strings, where \u003c is the same character.
    blob = blob.replace("<", "\\u003c")
    return TEMPLATE.read_text(encoding="utf-8").replace("/*__DATA__*/null", blob)


def write_html(store, run, out: str | Path) -> Path:
    data = page_data(store, run)
    if not data["iterations"]:
        raise ValueError(f"improve run {run.name} has no iterations yet")
    out = Path(out)
    out.write_text(render(data), encoding="utf-8")
    return out
