"""The live view of `ask`: each step printed as it happens, then the answer and citations."""

from __future__ import annotations

import re

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from store.records import Answer, CheckAnswer, ReviseAnswer, Search, SelectLink, Terminate

console = Console(highlight=False)
_CITE = re.compile(r"\[link_id=(\d+)\]")


class LiveSteps:
    """An Agent.on_event callback that prints steps, searches and the outcome."""

    def __init__(self, out: Console | None = None):
        self.out = out or console
        self.links: dict[int, tuple[str, str]] = {}  # link id -> (title, url), latest search

    def __call__(self, kind: str, payload: dict) -> None:
        if kind == "search":
            self._search(payload["call"])
        elif kind == "step":
            self._step(payload["step"])

    def _search(self, call) -> None:
        if call.error:
            self.out.print(f"  [red]search failed[/red] {escape(repr(call.query))}: {escape(str(call.error))}")
            return
        self.out.print(f"  [cyan]search[/cyan] {escape(repr(call.query))} → {len(call.results)} results")
        for r in call.results:
            self.links[r.link_id] = (r.title, r.url)
            self.out.print(f"    [dim]\\[{r.link_id}] {escape(r.title)} — {escape(r.url)}[/dim]")

    def _step(self, step) -> None:
        a = step.action
        tag = f"[magenta]{step.kind}[/magenta]"
        if a is None:
            self.out.print(f"  {tag} [red]no parseable sample[/red] (attempt {step.attempt + 1})")
        elif isinstance(a, Search):
            self.out.print(f"  {tag} Search {escape(repr(a.query))}  [dim]{escape(a.thoughts)}[/dim]")
        elif isinstance(a, Terminate):
            self.out.print(f"  {tag} Terminate  [dim]{escape(a.thoughts)}[/dim]")
        elif isinstance(a, SelectLink):
            self.out.print(f"  {tag} links {list(a.selected_link_ids)}: {escape(a.summary)}")
        elif isinstance(a, Answer):
            self.out.print(f"  {tag} {escape(a.answer)}")
        elif isinstance(a, CheckAnswer):
            self.out.print(f"  {tag} passed" if a.passed else f"  {tag} failed")
        elif isinstance(a, ReviseAnswer):
            self.out.print(f"  {tag} [yellow]revised[/yellow]: {escape(a.revised_answer)}")


def citations(state: dict) -> list[tuple[int, str]]:
    """Link ids cited by the final answer, with the summary that cited them."""
    out = []
    cited = {int(n) for n in _CITE.findall(state.get("final_answer") or "")}
    for a in state.get("past", []):
        if isinstance(a, SelectLink):
            for n in _CITE.findall(a.summary):
                if int(n) in cited:
                    out.append((int(n), a.summary))
    return out


def render_final(state: dict, out: Console | None = None) -> None:
    out = out or console
    if state.get("status") != "finished":
        out.print(Panel(f"[red]failed:[/red] {escape(str(state.get('error')))}", title="no answer"))
        return
    body = escape(state.get("final_answer") or "")
    if state.get("answer") and state["answer"] != state.get("final_answer"):
        body += f"\n[dim](first answer, revised by a self-check: {escape(state['answer'])})[/dim]"
    for n, summary in citations(state):
        body += f"\n[dim]\\[link_id={n}] {escape(summary)}[/dim]"
    out.print(Panel(body, title="answer", border_style="green"))
