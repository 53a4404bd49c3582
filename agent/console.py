"""Rich views of what the store holds: a trajectory as a tree, LLM calls as panels, and
the same data as plain JSON for `--json`.

The tree functions accept stored rows (`store.models.StepRow`, `SearchCallRow`) and the
live objects of `store.records` (`Step`, `SearchCall`) alike, so `show` and `ask`'s live
view draw a step the same way. Everything a model or a web page wrote is put in `Text`
objects, never parsed as rich markup: citations like "[link_id=1]" must print as they are.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterable

from rich.console import Group
from rich.panel import Panel
from rich.text import Text
from rich.tree import Tree

PREVIEW = 240  # characters of a prompt, response or sample shown unless --full

_STATUS_STYLE = {"finished": "green", "failed": "red", "running": "yellow", "interrupted": "yellow"}


def clip(text: str | None, full: bool = False, limit: int = PREVIEW, tail: bool = False) -> str:
    """The text, or its first (or last) `limit` characters marked with an ellipsis."""
    text = text or ""
    if full or len(text) <= limit:
        return text
    return "…" + text[-limit:] if tail else text[:limit] + "…"


def _one_line(text: str | None, full: bool) -> str:
    return clip(" ".join((text or "").split()), full, limit=160)


# --- a trajectory ---------------------------------------------------------------------


def render_trajectory(t, full: bool = False) -> Tree:
    """One stored trajectory (steps, samples, rankings and searches loaded) as a tree."""
    style = _STATUS_STYLE.get(t.status, "white")
    head = Text.assemble((f"trajectory {t.id}", "bold"), "  ", (t.status, style),
                         (f"  run {t.run_id} · sample {t.sample_index}", "dim"),
                         (f" · model {t.model}" if t.model else "", "dim"))
    tree = Tree(head)
    tree.add(Text.assemble(("question  ", "bold"), t.question))
    by_step: dict[int | None, list] = {}
    for call in t.searches:
        by_step.setdefault(call.step_id, []).append(call)
    for step in t.steps:
        node = render_step(step, full=full)
        for call in by_step.pop(step.id, []):
            node.add(render_search(call, full=full))
        tree.add(node)
    for call in (c for calls in by_step.values() for c in calls):  # searches made outside a step
        tree.add(render_search(call, full=full))
    _add_outcome(tree, t)
    return tree


def _add_outcome(tree: Tree, t) -> None:
    if t.error:
        tree.add(Text.assemble(("error  ", "bold red"), t.error))
    if t.answer and t.answer != t.final_answer:
        tree.add(Text.assemble(("first answer  ", "bold"), t.answer, (" (revised by a self-check)", "dim")))
    if t.final_answer:
        tree.add(Text.assemble(("final answer  ", "bold green"), t.final_answer))
    elif t.status == "running":
        tree.add(Text("no answer yet (still running, or its collector stopped)", style="dim"))
    elif t.status == "interrupted":
        tree.add(Text("no answer yet (interrupted; re-running the command resumes it)", style="dim"))


def render_step(step, full: bool = False) -> Tree:
    """A step: its kind, the chosen sample marked, every sample with perplexity and parse error."""
    chosen = _chosen(step)
    idx = getattr(step, "idx", getattr(step, "index", 0))
    tokens = f"{step.prompt_tokens}+{step.completion_tokens} tokens · {step.latency_s:.2f} s"
    label = Text.assemble((f"step {idx} ", "bold"), (step.kind, "bold magenta"),
                          f"  {len(step.samples)} sample(s)",
                          ("" if chosen is not None else "  no parseable sample", "red"),
                          (f"  attempt {step.attempt + 1}" if step.attempt else "", "yellow"),
                          (f"  · {tokens}", "dim"))
    node = Tree(label)
    if full:
        node.add(Text.assemble(("prompt\n", "dim bold"), (step.prompt, "dim")))
    for i, sample in enumerate(step.samples):
        node.add(_sample_line(i, sample, i == chosen, full))
    for r in getattr(step, "rankings", None) or []:
        node.add(render_ranking(r))
    return node


def _chosen(step) -> int | None:
    return step.chosen_index if hasattr(step, "chosen_index") else step.chosen


def _sample_line(i: int, sample, chosen: bool, full: bool) -> Text:
    ppl = sample.perplexity
    line = Text.assemble(("✔ " if chosen else "  ", "bold green"), (f"#{i + 1}", "bold" if chosen else ""),
                         (f"  ppl {ppl:.3g}" if ppl is not None else "  ppl –", "cyan"), "  ",
                         _one_line(sample.text, full))
    if sample.parse_error:
        line.append(f"\n      ✗ {sample.parse_error}", style="red")
    return line


def render_ranking(r) -> Text:
    """A ranking, with sample numbers 1-based as the judge saw them (Model Output #1 …)."""
    order = " > ".join(f"#{i + 1}" for i in r.order) or "–"
    best = f"best #{r.best_index + 1}" if r.best_index is not None else "no best"
    bad = f" · bad {', '.join(f'#{i + 1}' for i in r.bad)}" if r.bad else ""
    line = Text.assemble(("ranked ", "bold blue"), f"by {r.judge} ({r.prompt_version}) ",
                         (r.status, "green" if r.status == "ok" else "red"), f": {best} · {order}{bad}")
    if r.explanation:
        line.append(f"\n      {_one_line(r.explanation, False)}", style="dim")
    return line


def render_search(call, full: bool = False) -> Tree:
    """A search call with its results: link id, title, url and snippet."""
    label = Text.assemble(("search ", "bold cyan"), repr(call.query), (f"  {call.backend}", "dim"),
                          (f" · {len(call.results)} result(s) · {call.latency_s:.2f} s", "dim"))
    node = Tree(label)
    if call.error:
        node.add(Text(f"failed: {call.error}", style="red"))
    for r in call.results:
        r = r if isinstance(r, dict) else r.to_dict()
        node.add(Text.assemble((f"[{r['link_id']}] ", "bold"), r["title"], ("  " + r["url"], "blue underline"),
                               "\n", (_one_line(r["snippet"], full), "dim")))
    return node


# --- LLM calls ------------------------------------------------------------------------


def render_llm_calls(rows: Iterable, full: bool = False) -> Group:
    """LLM calls as panels: id, time, model, purpose, tokens, duration, prompt and response.

    A truncated prompt keeps its *end*: the few-shot examples come first and the part that
    differs between calls (the question and past actions) comes last.
    """
    return Group(*(_llm_panel(r, full) for r in rows))


def _llm_panel(r, full: bool) -> Panel:
    title = Text.assemble((f"#{r.id}", "bold"), f"  {_time(r.created_at)}  ", (r.model, "cyan"),
                          (f"  {r.purpose}" if r.purpose else "", "magenta"))
    where = f"trajectory {r.trajectory_id} · " if r.trajectory_id is not None else ""
    subtitle = Text(f"{where}{r.prompt_tokens}+{r.completion_tokens} tokens · {r.duration_s:.2f} s", style="dim")
    extra = len(r.responses or []) - 1
    body = Text.assemble(("prompt\n", "bold"), clip(r.prompt, full, tail=True), "\n\n",
                         ("response\n", "bold"), clip(r.response, full),
                         (f"\n(+{extra} more sample(s); --json shows all)" if extra > 0 else "", "dim"))
    return Panel(body, title=title, title_align="left", subtitle=subtitle, subtitle_align="left")


def _time(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else "–"


# --- JSON -----------------------------------------------------------------------------


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def llm_call_to_dict(r) -> dict:
    return {"id": r.id, "created_at": _iso(r.created_at), "model": r.model, "purpose": r.purpose,
            "trajectory_id": r.trajectory_id, "step_id": r.step_id, "prompt": r.prompt,
            "response": r.response, "responses": list(r.responses or []), "options": dict(r.options or {}),
            "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
            "duration_s": r.duration_s}


def trajectory_to_dict(t) -> dict:
    """A stored trajectory, everything `show` draws, as JSON-ready data (samples 0-based)."""
    return {
        "id": t.id, "run_id": t.run_id, "question_id": t.question_id, "sample_index": t.sample_index,
        "question": t.question, "status": t.status, "answer": t.answer, "final_answer": t.final_answer,
        "error": t.error, "model": t.model, "model_version_id": t.model_version_id, "worker": t.worker,
        "created_at": _iso(t.created_at), "finished_at": _iso(t.finished_at),
        "steps": [_step_to_dict(s) for s in t.steps],
        "searches": [_search_to_dict(c) for c in t.searches],
    }


def _step_to_dict(s) -> dict:
    return {
        "id": s.id, "idx": s.idx, "kind": s.kind, "status": s.status, "attempt": s.attempt,
        "prompt": s.prompt, "chosen_index": s.chosen_index, "action": s.action,
        "latency_s": s.latency_s, "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
        "samples": [{"idx": x.idx, "text": x.text, "n_tokens": x.n_tokens, "logprob": x.logprob,
                     "perplexity": x.perplexity, "action": x.action, "parse_error": x.parse_error}
                    for x in s.samples],
        "rankings": [{"judge": r.judge, "prompt_version": r.prompt_version, "status": r.status,
                      "best_index": r.best_index, "order": list(r.order), "bad": list(r.bad),
                      "explanation": r.explanation, "created_at": _iso(r.created_at)}
                     for r in s.rankings],
    }


def _search_to_dict(c) -> dict:
    return {"id": c.id, "step_id": c.step_id, "query": c.query, "backend": c.backend, "k": c.k,
            "results": list(c.results), "error": c.error, "latency_s": c.latency_s,
            "created_at": _iso(c.created_at)}
