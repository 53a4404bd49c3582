"""Parse model outputs into actions. Never raises: returns (action, None) or (None, reason).

Outputs are code-like calls, e.g. `Search(query="...", thoughts="...")`. We locate the
first call of an action the step allows, cut it at its matching parenthesis (string
aware), and read it with `ast` — literal values only, nothing is ever evaluated.
"""

from __future__ import annotations

import ast

from store.records import Action, Answer, CheckAnswer, ReviseAnswer, Search, SelectLink, Terminate

MAX_OUTPUT_CHARS = 20_000  # longer outputs are cut: parsing stays cheap on runaway samples

ALLOWED: dict[str, tuple[str, ...]] = {
    "decide": ("Search", "Terminate"),
    "summarize": ("SelectLink", "LinkSelection"),
    "answer": ("Answer",),
    "relevance": ("Check_Answer", "Revise_Answer"),
    "grounding": ("Check_Answer", "Revise_Answer"),
}


def parse_action(kind: str, text) -> tuple[Action | None, str | None]:
    try:
        return _parse(kind, text)
    except Exception as e:  # the contract: a bad sample is a recorded result, not a crash
        return None, f"unparseable: {type(e).__name__}"


def _parse(kind: str, text) -> tuple[Action | None, str | None]:
    if kind not in ALLOWED:
        return None, f"unknown step kind {kind!r}"
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return None, f"output is {type(text).__name__}, not text"
    text = text[:MAX_OUTPUT_CHARS]
    if not text.strip():
        return None, "empty output"
    call_text = _first_call(text, ALLOWED[kind])
    if call_text is None:
        if any(n + "(" in text for n in ALLOWED[kind]):  # opened but never closed: cut off
            return None, "unterminated call: no matching ')'"
        return None, f"no {' or '.join(ALLOWED[kind])}(...) call found"
    try:
        node = ast.parse(call_text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        return None, f"malformed call: {type(e).__name__}"
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        return None, "not a call"
    if node.args:
        return None, "positional arguments are not allowed; use name=value"
    kwargs = {}
    for kw in node.keywords:
        if kw.arg is None:
            return None, "**kwargs are not allowed"
        try:
            kwargs[kw.arg] = ast.literal_eval(kw.value)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            return None, f"argument {kw.arg!r} is not a literal"
    return _build(node.func.id, kwargs)


def _first_call(text: str, names: tuple[str, ...]) -> str | None:
    """The substring from the earliest `Name(` to its matching `)`, or None."""
    starts = [(text.find(n + "("), n) for n in names]
    starts = [(i, n) for i, n in starts if i >= 0]
    if not starts:
        return None
    start, name = min(starts)
    depth, quote, escaped = 0, None, False
    for j in range(start + len(name), len(text)):
        c = text[j]
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return text[start : j + 1]
    return None  # truncated: no matching parenthesis


def _text(kwargs: dict, key: str, required: bool = True) -> str:
    v = kwargs.get(key, "")
    if not isinstance(v, str):
        raise _Bad(f"{key} must be a string")
    if required and not v.strip():
        raise _Bad(f"{key} is empty")
    return v.strip()


class _Bad(Exception):
    pass


def _build(name: str, kw: dict) -> tuple[Action | None, str | None]:
    try:
        if name == "Search":
            return Search(query=_text(kw, "query"), thoughts=_text(kw, "thoughts", False)), None
        if name == "Terminate":
            return Terminate(thoughts=_text(kw, "thoughts", False)), None
        if name in ("SelectLink", "LinkSelection"):
            ids = kw.get("selected_link_ids", [])
            if not isinstance(ids, (list, tuple)) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in ids
            ):
                raise _Bad("selected_link_ids must be a list of integers")
            summary = kw.get("summary", kw.get("grounded_summarization", ""))
            if not isinstance(summary, str):
                raise _Bad("summary must be a string")
            return SelectLink(summary=summary.strip(), thoughts=_text(kw, "thoughts", False),
                              selected_link_ids=tuple(ids)), None
        if name == "Answer":
            return Answer(thoughts=_text(kw, "thoughts", False), answer=_text(kw, "answer")), None
        if name == "Check_Answer":
            passed = kw.get("passed", True)
            if not isinstance(passed, bool):
                raise _Bad("passed must be True or False")
            return CheckAnswer(passed=passed), None
        if name == "Revise_Answer":
            return ReviseAnswer(thoughts=_text(kw, "thoughts", False),
                                revised_answer=_text(kw, "revised_answer")), None
    except _Bad as e:
        return None, str(e)
    return None, f"unknown action {name}"
