"""agent/retry.py: the one retry policy of the OpenAI-compatible client and web search.

The pauses are recorded by an injected `sleep`, so the schedule is checked exactly and the
tests take no time; the callers' behaviour over real sockets is in tests/test_llm_openai.py,
tests/test_lora_serving.py and tests/test_search_web.py.
"""

from __future__ import annotations

import pytest

from agent.retry import AttemptFailed, GaveUp, with_retries


def _failing(times: int, **failure):
    calls = []

    def attempt(left):
        calls.append(left)
        if len(calls) <= times:
            raise AttemptFailed(f"failure {len(calls)}", **failure)
        return "answer"

    return attempt, calls


def test_backoff_doubles_until_an_attempt_succeeds():
    attempt, calls = _failing(3)
    pauses = []
    assert with_retries(attempt, retries=3, backoff_s=0.5, sleep=pauses.append) == "answer"
    assert pauses == [0.5, 1.0, 2.0] and calls == [None] * 4


def test_gives_up_with_the_last_reason_and_the_count():
    attempt, calls = _failing(10)
    pauses = []
    with pytest.raises(GaveUp) as info:
        with_retries(attempt, retries=2, backoff_s=0.1, sleep=pauses.append)
    assert (info.value.reason, info.value.attempts) == ("failure 3", 3)
    assert len(calls) == 3 and pauses == [0.1, 0.2]  # no pause after the last attempt


def test_a_server_asked_wait_is_honoured_and_capped():
    attempt, _ = _failing(2, wait_s=30.0)
    pauses = []
    with_retries(attempt, retries=2, backoff_s=0.1, max_wait_s=10.0, sleep=pauses.append)
    assert pauses == [10.0, 10.0]


def test_a_final_failure_stops_at_once_and_other_errors_pass_through():
    attempt, calls = _failing(5, retryable=False)
    with pytest.raises(GaveUp) as info:
        with_retries(attempt, retries=4, backoff_s=0.1, sleep=lambda s: None)
    assert info.value.attempts == 1 and len(calls) == 1

    def broken(left):
        raise KeyError("not a remote failure")

    with pytest.raises(KeyError):
        with_retries(broken, retries=4, backoff_s=0.1, sleep=lambda s: None)


def test_no_pause_crosses_the_deadline_and_attempts_learn_the_time_left():
    attempt, calls = _failing(10)
    pauses = []
    with pytest.raises(GaveUp) as info:
        with_retries(attempt, retries=10, backoff_s=0.4, deadline_s=1.0, sleep=pauses.append)
    # the injected sleep takes no time: 0.4 and 0.8 end inside the 1 s deadline, 1.6 would not
    assert pauses == [0.4, 0.8] and info.value.attempts == 3
    assert all(0 < left <= 1.0 for left in calls)
