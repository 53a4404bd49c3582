"""Scoring answers against reference answers: normalised exact match, token F1, an LLM judge.

Reference answers are for evaluation only — never for choosing training data.

The LLM judge is the paper's auto-eval: asked whether the proposed answer implies the
reference answer, it replies True or False (prompt in `reward.prompts`). The paper reports
each figure as the mean ± std over repeated runs; `summarize_runs` does that arithmetic.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from statistics import fmean, pstdev

from store.records import GenRequest
from reward.prompts import render_check_answer
from reward.verdicts import parse_verdict

_CITATION = re.compile(r"\[\s*link_id\s*=\s*[^\]]*\]", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation + "‘’“”–—…"})
JUDGE_MAX_NEW_TOKENS = 64


def normalize_answer(text) -> str:
    """Lowercase, drop [link_id=N] citations, punctuation and articles, squeeze spaces."""
    if not isinstance(text, str):
        return ""
    text = unicodedata.normalize("NFKC", text)
    text = _CITATION.sub(" ", text).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_strict(pred, ref) -> bool:
    """The normalised answers are equal (SQuAD-style exact match)."""
    p, r = normalize_answer(pred), normalize_answer(ref)
    return bool(r) and p == r


def exact_match(pred, ref) -> bool:
    """The normalised reference equals the normalised prediction or occurs in it as whole words.

    Agents answer in sentences ("The Vell river [link_id=1] flows through Tarsk"), so
    containment is the useful default; `exact_match_strict` is plain equality. An empty
    reference matches nothing.
    """
    p, r = normalize_answer(pred), normalize_answer(ref)
    if not r:
        return False
    return p == r or f" {r} " in f" {p} "


def token_f1(pred, ref) -> float:
    """F1 of the normalised answers' word multisets (0.0 when either is empty)."""
    p, r = normalize_answer(pred).split(), normalize_answer(ref).split()
    common = sum((Counter(p) & Counter(r)).values())
    if not p or not r or not common:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def judge_answer(llm, question: str, answer, reference: str, store=None,
                 trajectory_id: int | None = None) -> bool | None:
    """Ask a judge LLM whether `answer` implies `reference`; None when its reply says neither.

    An empty answer implies nothing: False without a call. Backend errors (LLMError)
    propagate. With `store`, the call is logged (purpose "eval").
    """
    if not isinstance(answer, str) or not normalize_answer(answer):
        return False
    request = GenRequest(prompt=render_check_answer(question, answer, reference), n=1,
                         temperature=0.0, max_new_tokens=JUDGE_MAX_NEW_TOKENS, purpose="eval")
    generation = llm.generate(request)
    if store is not None:
        store.log_llm_call(generation, request, trajectory_id=trajectory_id, purpose="eval")
    reply = generation.completions[0].text if generation.completions else None
    return parse_verdict(reply)


def summarize_runs(scores: list[list[float]]) -> tuple[float, float]:
    """Mean and standard deviation over repeated runs of each run's mean score.

    `scores[r]` holds one score per question (1.0/0.0, or an F1) for run r. The std is the
    population std of the per-run means (0.0 for a single run), as `reward.evaluate` reports.
    Runs with no scores are ignored; no scores at all is a ValueError.
    """
    per_run = [fmean(run) for run in scores if len(run)]
    if not per_run:
        raise ValueError("no scores to summarize")
    return fmean(per_run), (pstdev(per_run) if len(per_run) > 1 else 0.0)
