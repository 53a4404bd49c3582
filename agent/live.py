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
            self._search(payload["call"], payload.get("repeated", False))
        elif kind == "step":
            self._step(payload["step"])
        elif kind == "evidence":
            self._evidence(payload["evidence"])

    def _evidence(self, ev: dict) -> None:
        if ev["ok"]:
            self.out.print(f"  [magenta]evidence[/magenta] passed [dim]({escape(ev['reason'])})[/dim]")
        else:
            self.out.print(f"  [magenta]evidence[/magenta] [red]failed[/red]: {escape(ev['reason'])}"
                           f" → {escape(ev['revised_answer'] or '')}")

    def _search(self, call, repeated: bool = False) -> None:
        if call.error:
            self.out.print(f"  [red]search failed[/red] {escape(repr(call.query))}: {escape(str(call.error))}")
            return
        if repeated:
            self.out.print(f"  [cyan]search[/cyan] {escape(repr(call.query))} [yellow]searched "
                           f"before[/yellow]: its {len(call.results)} stored results again")
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


def citations(state: dict) -> list[tuple[int, str, str]]:
    """The sources the final answer cites, each once: (link id, title, url, query), in
    citation order.

    A link id names a result of one search; summary i was written from search i, so a
    citation is looked up in the results of the summaries that cite (or select) it. Two
    searches can each have a link 1, so one citation can stand for two sources: the query
    says which search each came from.
    """
    final = state.get("final_answer") or ""
    summaries = [a for a in state.get("past", []) if isinstance(a, SelectLink)]
    searches = state.get("searches") or []
    out, seen = [], set()
    for n in dict.fromkeys(int(x) for x in _CITE.findall(final)):
        for i, a in enumerate(summaries):
            if n not in {int(x) for x in _CITE.findall(a.summary)} | set(a.selected_link_ids):
                continue
            call = searches[i] if i < len(searches) else None
            for r in call.results if call else []:
                if r.link_id == n and (r.title, r.url) not in seen:
                    seen.add((r.title, r.url))
                    out.append((n, r.title, r.url, call.query))
    return out


def render_final(state: dict, out: Console | None = None) -> None:
    out = out or console
    if state.get("status") != "finished":
        out.print(Panel(f"[red]failed:[/red] {escape(str(state.get('error')))}", title="no answer"))
        return
    body = escape(state.get("final_answer") or "")
    if state.get("answer") and state["answer"] != state.get("final_answer"):
        body += f"\n[dim](first answer, revised by a self-check: {escape(state['answer'])})[/dim]"
    ev = state.get("evidence")
    if ev and not ev["ok"]:
        body += f"\n[yellow]evidence check failed[/yellow] [dim]on {escape(ev['checked'])}: {escape(ev['reason'])}[/dim]"
    sources = citations(state)
    if sources:
        body += "\n[bold]sources[/bold]"
    ids = [n for n, *_ in sources]
    for n, title, url, query in sources:
        which = f" (from the search {query!r})" if ids.count(n) > 1 else ""
        body += f"\n[dim]\\[link_id={n}] {escape(title)} — {escape(url)}{escape(which)}[/dim]"
    out.print(Panel(body, title="answer", border_style="green"))
