"""Trying a remote call again: exponential backoff, a server's own wait, an optional deadline.

One policy for every remote service the project talks to (OpenAI-compatible servers in
agent/llm/openai_compat.py and agent/llm/lora_server.py, web search in agent/search/web.py):

- an attempt that fails in a way that may pass raises `AttemptFailed(reason)`;
- attempt i (from 0) is followed by a pause of `backoff_s * 2**i`, or longer when the
  failure asks for it (`wait_s`, e.g. an HTTP Retry-After), capped at `max_wait_s`;
- at most `retries` attempts follow the first;
- with a deadline, no attempt starts after it and no pause is taken that would end past it
  (the attempt is told how much time is left, so it can bound its own wait);
- `AttemptFailed(..., retryable=False)` stops at once, and any other exception passes
  through untouched: those failures are final.

When the attempts run out, `GaveUp` carries the last reason and the count, so each caller
words its own one-line error.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar

T = TypeVar("T")


class AttemptFailed(Exception):
    """One attempt failed; `reason` is one line for the final error."""

    def __init__(self, reason: str, retryable: bool = True, wait_s: float = 0.0):
        super().__init__(reason)
        self.reason, self.retryable, self.wait_s = reason, retryable, float(wait_s)


class GaveUp(Exception):
    """No attempt succeeded: the last one's reason, how many ran and for how long."""

    def __init__(self, reason: str, attempts: int, elapsed_s: float):
        super().__init__(f"{reason} ({attempts} attempts in {elapsed_s:.1f}s)")
        self.reason, self.attempts, self.elapsed_s = reason, attempts, elapsed_s


def with_retries(attempt: Callable[[Optional[float]], T], retries: int, backoff_s: float,
                 deadline_s: Optional[float] = None, max_wait_s: Optional[float] = 60.0,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """`attempt(seconds_left)` until it returns; `seconds_left` is None without a deadline."""
    start = time.monotonic()
    end = None if deadline_s is None else start + deadline_s
    reason, attempts = "no attempt fitted in the deadline", 0
    for i in range(retries + 1):
        left = None if end is None else end - time.monotonic()
        if left is not None and left <= 0.01:
            break
        attempts += 1
        try:
            return attempt(left)
        except AttemptFailed as failed:
            reason = failed.reason
            if not failed.retryable or i == retries:
                break
            pause = max(backoff_s * (2 ** i), failed.wait_s)
            if max_wait_s is not None:
                pause = min(pause, max_wait_s)
        if end is not None and time.monotonic() + pause >= end:
            break  # the next attempt would start after the deadline
        sleep(pause)
    raise GaveUp(reason, attempts, time.monotonic() - start)
