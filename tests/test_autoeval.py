"""Auto-eval: normalisation, exact match, token F1, the Check_Answer judge, run statistics."""

from __future__ import annotations

import math

import pytest

from agent.llm.base import LLMError
from reward.autoeval import (
    exact_match,
    exact_match_strict,
    judge_answer,
    normalize_answer,
    summarize_runs,
    token_f1,
)
from reward.prompts import CHECK_PROMPT_VERSION, render_check_answer


def test_normalize_drops_case_punctuation_articles_and_citations():
    assert normalize_answer("The  Vell River [link_id=3], (an) answer!") == "vell river answer"
    assert normalize_answer("[ link_id = 12 ]Tarsk’s") == "tarsk s"
    assert normalize_answer(None) == "" and normalize_answer(42) == ""


def test_exact_match_contains_reference_as_whole_words():
    assert exact_match("The Vell river [link_id=1] flows through Tarsk.", "Vell river")
    assert exact_match("vell", "The Vell")
    assert not exact_match("Vellington", "Vell")  # whole words only
    assert not exact_match("anything", "")  # an empty reference matches nothing
    assert not exact_match(None, "Vell")


def test_exact_match_strict_needs_equality():
    assert exact_match_strict("The Vell.", "vell")
    assert not exact_match_strict("The Vell river", "Vell")


def test_token_f1():
    assert token_f1("Vell river", "the Vell river") == 1.0
    assert token_f1("Vell", "Vell river") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert token_f1("Rhine", "Vell") == 0.0
    assert token_f1("", "Vell") == 0.0


def test_summarize_runs_is_mean_and_population_std_of_run_means():
    mean, std = summarize_runs([[1, 0, 1, 1], [1, 1, 1, 1], [0, 0, 1, 1]])
    assert mean == pytest.approx(0.75)
    assert std == pytest.approx(math.sqrt(((0.75 - 0.75) ** 2 + 0.25 ** 2 + 0.25 ** 2) / 3))
    assert summarize_runs([[0.5, 1.0]]) == (0.75, 0.0)
    assert summarize_runs([[1.0], []]) == (1.0, 0.0)
    with pytest.raises(ValueError):
        summarize_runs([])


def test_check_prompt_carries_the_three_texts_quoted_and_versioned():
    p = render_check_answer('Who is "X"?', "Ada\nQuill [link_id=1]", "Ada Quill")
    assert CHECK_PROMPT_VERSION in p
    assert 'ORIGINAL_QUESTION = "Who is \\"X\\"?"' in p
    assert 'PROPOSED_ANSWER = "Ada\\nQuill [link_id=1]"' in p
    assert 'REFERENCE_ANSWER = "Ada Quill"' in p
    assert "True or False" in p


def _http_judge(reply_for):
    """A judge model behind a real OpenAI-compatible HTTP server; replies by prompt."""
    from agent.llm.openai_compat import OpenAICompatBackend
    from tests.openai_server import start_server

    base_url, stop = start_server(lambda prompt, n, t, m: [(reply_for(prompt), None)] * n, model="judge")
    return OpenAICompatBackend(base_url=base_url, model="judge", max_retries=0), stop


def _sent(stop) -> list[dict]:
    return [r.body for r in stop.requests if r.path.endswith("/chat/completions")]


def test_judge_answer_reads_true_false_and_unclear_replies():
    def reply(prompt):
        if "Rhine" in prompt:
            return "False. The river named differs."
        if "maybe" in prompt:
            return "It depends."
        return "**True**"

    llm, stop = _http_judge(reply)
    try:
        assert judge_answer(llm, "Which river?", "The Vell [link_id=1]", "Vell") is True
        assert judge_answer(llm, "Which river?", "The Rhine", "Vell") is False
        assert judge_answer(llm, "Which river?", "maybe", "Vell") is None
        body = _sent(stop)[0]
        assert body["n"] == 1 and body["temperature"] == 0.0
        assert body["messages"][0]["content"] == render_check_answer("Which river?", "The Vell [link_id=1]", "Vell")
    finally:
        stop()


def test_judge_answer_empty_answer_is_false_without_a_call():
    llm, stop = _http_judge(lambda p: "True")
    try:
        assert judge_answer(llm, "Q?", "  [link_id=2] ", "Vell") is False
        assert judge_answer(llm, "Q?", None, "Vell") is False
        assert _sent(stop) == []
    finally:
        stop()


def test_judge_answer_logs_to_the_store_and_propagates_backend_errors(tmp_path):
    from store.api import Store

    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    llm, stop = _http_judge(lambda p: "True")
    try:
        assert judge_answer(llm, "Q?", "Vell", "Vell", store=store, trajectory_id=None) is True
        [call] = store.llm_calls(limit=5)
        assert call.purpose == "eval" and call.response == "True" and "PROPOSED_ANSWER" in call.prompt
        stop.fail_next(1, 500)
        with pytest.raises(LLMError):
            judge_answer(llm, "Q?", "Vell", "Vell")
    finally:
        stop()
        store.close()
