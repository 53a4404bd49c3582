"""Read judge replies: rankings of step alternatives, and True/False answer checks.

Neither parser ever raises, whatever it is given (None, bytes, invalid UTF-8, a
megabyte of noise): a reply it cannot read is a recorded result with a reason, and a
ranking is never guessed. The ranking rules, strictly:

- Labels (`Explanation:`, `Answer:`, `Ranking:`, `Bad:`) start a line, in any case,
  optionally wrapped in Markdown emphasis (`**Answer:** #2`); a value may sit on the
  label's line or, when that is empty, on the next non-empty line.
- A candidate is written `#2`, `2`, `Output #2` or `Model Output #2`; the ranking's
  items are separated by `>` (or by commas when the reply has no `>`).
- `Ranking` is required and must name every candidate 1..K exactly once. A ranking that
  omits, repeats or invents a candidate is not ok — it is not completed, even when only
  one candidate is missing, because the judge may have meant something else.
- `Answer` is optional; when present it must equal the ranking's first item.
- Several `Ranking` (or `Answer`) lines are accepted only when they agree.
- `Bad` is optional (our addition to the paper's format): `none`, empty, or a list of
  candidates in 1..K. An unreadable `Bad` line makes the verdict not ok.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_REPLY_CHARS = 50_000  # a judge's reply longer than this is cut before parsing


@dataclass
class RankingVerdict:
    """A judge's verdict on K alternatives; all indices are 0-based."""

    ok: bool
    best: int | None = None
    order: list[int] = field(default_factory=list)  # a permutation of 0..k-1 when ok
    bad: list[int] = field(default_factory=list)
    explanation: str | None = None
    error: str | None = None  # why it is not ok
    raw: str | None = None  # the reply as text (cut to MAX_REPLY_CHARS), for the store


def failed(error: str, raw: str | None = None, explanation: str | None = None) -> RankingVerdict:
    return RankingVerdict(ok=False, error=error, raw=raw, explanation=explanation)


# --- text coercion: anything in, str or a reason out -----------------------------------


def _as_text(reply) -> tuple[str | None, str | None]:
    if reply is None:
        return None, "no reply"
    if isinstance(reply, (bytes, bytearray, memoryview)):
        reply = bytes(reply[: MAX_REPLY_CHARS * 4]).decode("utf-8", errors="replace")
    if not isinstance(reply, str):
        return None, f"reply is {type(reply).__name__}, not text"
    # Lone surrogates (from bad decoding upstream) would break storing the raw text.
    reply = reply[:MAX_REPLY_CHARS].encode("utf-8", errors="replace").decode("utf-8")
    return reply, None


# --- the ranking reply ------------------------------------------------------------------

_LABEL = re.compile(
    r"^[ \t>*_#-]*(?:final[ \t]+)?(explanation|answer|ranking|bad)[ \t*_]*:[ \t*_]*(.*)$",
    re.IGNORECASE | re.MULTILINE,
)
_ITEM = re.compile(r"^(?:model[ \t]+)?(?:output[ \t]*)?#?[ \t]*(\d{1,6})[ \t]*[.)]?$", re.IGNORECASE)


def parse_ranking(text, k) -> RankingVerdict:
    """Parse a ranker reply about `k` candidates into a verdict (never raises)."""
    try:
        return _parse_ranking(text, k)
    except Exception as e:  # the contract: an unreadable reply is a result, not a crash
        return failed(f"unparseable: {type(e).__name__}")


def _parse_ranking(text, k) -> RankingVerdict:
    reply, why = _as_text(text)
    if reply is None:
        return failed(why)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        return failed(f"bad number of candidates {k!r}", reply)
    if not reply.strip():
        return failed("empty reply", reply)
    fields = _fields(reply)
    explanation = fields.get("explanation", [None])[-1]

    def fail(reason: str) -> RankingVerdict:
        return failed(reason, reply, explanation)

    rankings = fields.get("ranking")
    if not rankings:
        return fail("no Ranking line")
    orders = []
    for value in rankings:
        order, err = _order(value, k)
        if err:
            return fail(err)
        orders.append(order)
    if any(o != orders[0] for o in orders):
        return fail("conflicting Ranking lines")
    order = orders[0]

    answers = set()
    for value in fields.get("answer", []):
        item = _item(value.strip().rstrip("."))
        if item is None or not 1 <= item <= k:
            return fail(f"Answer {_short(value)!r} is not a candidate 1..{k}")
        answers.add(item - 1)
    if len(answers) > 1:
        return fail("conflicting Answer lines")
    if answers and answers != {order[0]}:
        return fail(f"Answer #{answers.pop() + 1} disagrees with the Ranking's first #{order[0] + 1}")

    bad: list[int] = []
    for value in fields.get("bad", []):
        items, err = _bad(value, k)
        if err:
            return fail(err)
        bad += [i for i in items if i not in bad]
    return RankingVerdict(ok=True, best=order[0], order=order, bad=sorted(bad),
                          explanation=explanation, raw=reply)


def _fields(reply: str) -> dict[str, list[str]]:
    """Label -> values in order of appearance; the explanation runs to the next label."""
    out: dict[str, list[str]] = {}
    matches = list(_LABEL.finditer(reply))
    for n, m in enumerate(matches):
        label, value = m.group(1).lower(), m.group(2).strip()
        end = matches[n + 1].start() if n + 1 < len(matches) else len(reply)
        if label == "explanation":
            value = reply[m.start(2):end].strip()
        elif not value:
            # "Answer:\n#2": take the next non-empty line before the next label.
            rest = reply[m.end():end].strip().splitlines()
            value = rest[0].strip() if rest else ""
        out.setdefault(label, []).append(value)
    return out


def _short(s: str, n: int = 40) -> str:
    return s if len(s) <= n else s[:n] + "…"


def _item(token: str) -> int | None:
    m = _ITEM.match(token.strip().strip("*_`"))
    return int(m.group(1)) if m else None


def _order(value: str, k: int) -> tuple[list[int], str | None]:
    value = value.strip().rstrip(".").strip()
    if not value:
        return [], "empty Ranking"
    tokens = value.split(">") if ">" in value else value.split(",")
    items = []
    for tok in tokens:
        item = _item(tok)
        if item is None:
            return [], f"Ranking item {_short(tok.strip())!r} is not a candidate"
        items.append(item)
    if sorted(items) != list(range(1, k + 1)):
        return [], f"Ranking {_short(value)!r} is not a permutation of #1..#{k}"
    return [i - 1 for i in items], None


def _bad(value: str, k: int) -> tuple[list[int], str | None]:
    value = value.strip().rstrip(".").strip()
    if not value or value.strip("*_`").lower() in ("none", "no", "-", "n/a", "[]"):
        return [], None
    items = []
    for tok in re.split(r"[,;]|\band\b", value):
        if not tok.strip():
            continue
        item = _item(tok)
        if item is None or not 1 <= item <= k:
            return [], f"Bad item {_short(tok.strip())!r} is not a candidate 1..{k}"
        items.append(item - 1)
    return items, None


def format_ranking_reply(verdict: RankingVerdict) -> str:
    """Write a verdict in the ranker's reply format (1-based), e.g. for the rule judge."""
    if not verdict.ok:
        raise ValueError("only an ok verdict has a reply")
    lines = [f"Explanation: {verdict.explanation or '-'}",
             f"Answer: #{verdict.best + 1}",
             "Ranking: " + " > ".join(f"#{i + 1}" for i in verdict.order),
             "Bad: " + (", ".join(f"#{i + 1}" for i in verdict.bad) if verdict.bad else "none")]
    return "\n".join(lines)


# --- True/False verdicts (auto-eval) -----------------------------------------------------

_LEAD = re.compile(r"^[\s*_`\"'>#-]*(?:(?:final\s+)?(?:answer|verdict|implies|result)\s*[:=]\s*[*_`\"']*)?"
                   r"(true|false)\b(?!\s*(?:or\b|and\b|/))", re.IGNORECASE)
_LABELLED = re.compile(r"^[ \t*_>#-]*(?:final[ \t]+)?(?:answer|verdict|implies|result)[ \t*_]*[:=]"
                       r"[ \t*_`\"']*(true|false)\b", re.IGNORECASE | re.MULTILINE)
_WORD = re.compile(r"(\bnot[ \t]+)?\b(true|false)\b", re.IGNORECASE)


def parse_verdict(text) -> bool | None:
    """A True/False judge reply as a bool; None when it says neither or both (never raises).

    In order: a reply that starts with True/False (after an optional `Answer:` label and
    Markdown; not "True or False") gives that; else the last line labelled `Answer:`/`Verdict:` with True/False;
    else the reply's only truth word, provided it is not negated ("not true") and the
    reply does not contain the other one.
    """
    try:
        reply, _ = _as_text(text)
        if reply is None:
            return None
        m = _LEAD.match(reply)
        if m:
            return m.group(1).lower() == "true"
        labelled = _LABELLED.findall(reply)
        if labelled:
            return labelled[-1].lower() == "true"
        words = _WORD.findall(reply)
        kinds = {w.lower() for _, w in words}
        if len(kinds) != 1 or any(neg for neg, _ in words):
            return None
        return kinds.pop() == "true"
    except Exception:
        return None
