"""Stopping on Ctrl-C (SIGINT) or SIGTERM: the step in flight is abandoned, the rest is kept.

`handling()` installs handlers for both signals. The first signal sets a process-wide flag
and raises `Interrupted` in the main thread; threads that wait on a model (`collect`'s
trajectories, the local backend's batching thread) poll the flag with `raise_if_requested`
and stop at their next step, and a model in the middle of `generate` stops at its next
token (agent/llm/hf.py). Whoever owns a trajectory marks it `interrupted` on the way out
(agent/graph.py), so a re-run of the same command resumes it. A second signal ends the
process at once: every store write is a transaction, so nothing stored is lost.

`Interrupted` derives from BaseException, not KeyboardInterrupt: no `except Exception`
swallows it, and click's own Ctrl-C handling ("Aborted!", exit 1) never sees it, so the
CLI can say how to resume and exit 130 (SIGINT) or 143 (SIGTERM), as shells expect.

Stdlib only: any layer may ask whether a stop was requested.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A stop was requested by a signal; `exit_code` is what the process should end with."""

    def __init__(self, signum: int = signal.SIGINT):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_requested = threading.Event()
_signum = [signal.SIGINT]
_deferring = threading.local()


def requested() -> bool:
    """True once a stop was requested (a signal, or `request` in tests)."""
    return _requested.is_set()


def request(signum: int = signal.SIGINT) -> None:
    """Ask everything to stop, as a signal would (without raising here)."""
    _signum[0] = signum
    _requested.set()


def reset() -> None:
    """Forget a requested stop (tests; an interactive loop that goes on)."""
    _requested.clear()
    _signum[0] = signal.SIGINT


def requested_signal() -> int:
    """The signal behind the requested stop (SIGINT when none was sent)."""
    return _signum[0]


def raise_if_requested() -> None:
    """Raise Interrupted when a stop was requested: the polling point of worker threads."""
    if _requested.is_set():
        raise Interrupted(_signum[0])


def _handler(signum, _frame) -> None:
    if _requested.is_set():  # the second signal: the user insists, stop now
        sys.stderr.write("\nstopped at once; re-run the same command to resume\n")
        sys.stderr.flush()
        os._exit(128 + signum)
    request(signum)
    if getattr(_deferring, "depth", 0):
        return  # inside `deferred()`: raised when the critical section ends
    raise Interrupted(signum)


@contextmanager
def handling() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def deferred() -> Iterator[None]:
    """A critical section (renaming a saved model into place): a signal inside it is raised
    when it ends, never halfway through."""
    _deferring.depth = getattr(_deferring, "depth", 0) + 1
    try:
        yield
    finally:
        _deferring.depth -= 1
    if not _deferring.depth:
        raise_if_requested()
