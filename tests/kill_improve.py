"""`cli.py` that SIGKILLs itself inside one stage of the improve loop (tests/test_kill_resume.py).

    python tests/kill_improve.py STAGE:IT[:DELAY_S] CLI_ARGS...

Wraps that stage's method of trainer.improve.Improver (grow, rank, build, train, evaluate,
promote; the baseline evaluation is evaluate:0) so that DELAY_S seconds (default 0) after
the loop enters it in iteration IT the process is SIGKILLed, then runs the CLI with
CLI_ARGS. The fault comes from the test; the loop itself carries no hook for it.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _kill(delay_s: float) -> None:
    kill = lambda: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    if delay_s <= 0:
        return kill()
    timer = threading.Timer(delay_s, kill)
    timer.daemon = True  # a run that ends first is not held back (nor killed) by it
    timer.start()


def kill_at(spec: str) -> None:
    """Patch Improver so that entering STAGE of iteration IT arms the kill."""
    from trainer.improve import STAGES, Improver

    stage, it, *delay = spec.split(":")
    if stage not in STAGES:
        raise SystemExit(f"kill_improve: {stage!r} is not a stage ({', '.join(STAGES)})")
    entered = getattr(Improver, stage)

    @functools.wraps(entered)
    def stage_method(self, iteration, *args, **kwargs):
        if str(iteration) == it:
            _kill(float(delay[0]) if delay else 0.0)
        return entered(self, iteration, *args, **kwargs)

    setattr(Improver, stage, stage_method)


if __name__ == "__main__":
    kill_at(sys.argv[1])
    import cli

    sys.argv = ["cli.py", *sys.argv[2:]]
    cli.main()
