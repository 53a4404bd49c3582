"""Progress for the long commands: one rich display on stderr, or nothing at all.

Every command that can take more than a few seconds (collect, rank, train, eval, improve,
pocket pretrain, export) draws its progress through this module, so they all look alike
and all keep quiet the same way: under `--json`, when stderr is not a terminal (a pipe, a
log file, CI), or with RESTREACT_PROGRESS=0. Quiet means no output, not a last frame.

The bars speak the project's callbacks: `on_collected(stats)` for `agent.collect.collect`
and `reward.evaluate.evaluate`, `on_count(done, total)` for `reward.ranker.rank_run` and the
collect workers, and `on_train_log(logs)` for `trainer.sft.train`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional

ENV = "RESTREACT_PROGRESS"  # "0" turns every display off, "1" forces it on (tests)


def wanted(as_json: bool = False, stream=None) -> bool:
    """Whether to draw: not under --json, and only on a terminal unless RESTREACT_PROGRESS=1."""
    if as_json or os.environ.get(ENV) == "0":
        return False
    if os.environ.get(ENV) == "1":
        return True
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class Bar:
    """One line of the display. Quiet bars (display off) accept every call and draw nothing."""

    def __init__(self, display: Optional["Display"] = None, task_id=None, total=None):
        self.display, self.task_id, self.total = display, task_id, total
        self.t0 = time.perf_counter()
        self.count = 0

    def update(self, completed: float | None = None, total: float | None = None,
               info: str | None = None) -> None:
        if self.display is None:
            return
        kw = {}
        if completed is not None:
            kw["completed"] = completed
        if total is not None:
            kw["total"] = total
        if info is not None:
            kw["info"] = info
        self.display.rich.update(self.task_id, **kw)

    def advance(self, n: int = 1, info: str | None = None) -> None:
        self.count += n
        self.update(completed=self.count, info=info)

    def close(self) -> None:
        if self.display is not None:
            self.display.drop(self)

    # --- the project's callbacks ---------------------------------------------------

    def on_collected(self, stats=None) -> None:
        """`collect(on_done=...)`: one trajectory more, with the rate so far."""
        rate = (self.count + 1) / max(time.perf_counter() - self.t0, 1e-9)
        self.advance(info=f"{rate:.2f} traj/s")

    def on_count(self, done: int, total: int) -> None:
        """`rank_run(progress=...)`, `run_workers(on_progress=...)`: done of total."""
        self.update(completed=done, total=total)

    def on_train_log(self, logs: dict) -> None:
        """`train(on_log=...)`: the epoch reached, the latest loss and tokens per second."""
        epoch, parts = logs.get("epoch"), []
        if "loss" in logs:
            parts.append(f"loss {float(logs['loss']):.3f}")
        tokens = logs.get("num_input_tokens_seen")
        if tokens:
            parts.append(f"{tokens / max(time.perf_counter() - self.t0, 1e-9):,.0f} tok/s")
        self.update(completed=float(epoch) if epoch is not None else None,
                    info="  ".join(parts) if parts else None)


class Display:
    """A rich.progress display on stderr; `enabled=False` makes every bar a quiet one."""

    def __init__(self, enabled: bool = True, console=None):
        self.enabled = enabled
        self.rich = None
        self._head: Optional[Bar] = None
        self._current: Optional[Bar] = None
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                       TextColumn, TimeElapsedColumn)

            self.rich = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                                 BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(),
                                 console=console or Console(
                                     stderr=True, force_terminal=os.environ.get(ENV) == "1" or None),
                                 transient=False)

    def __enter__(self) -> "Display":
        if self.rich is not None:
            self.rich.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.rich is not None:
            self.rich.stop()

    def bar(self, label: str, total: float | None = None, done: int = 0,
            replace: bool = True) -> Bar:
        """A new line (`done` of `total` already); by default it takes the place of the
        previous one (a stage moved on)."""
        if self.rich is None:
            bar = Bar(total=total)
        else:
            if replace and self._current is not None:
                self.drop(self._current)
            bar = Bar(self, self.rich.add_task(label, total=total, completed=done, info=""), total)
            self._current = bar
        bar.count = done
        return bar

    def drop(self, bar: Bar) -> None:
        if self.rich is not None and bar.task_id in self.rich.task_ids:
            self.rich.remove_task(bar.task_id)
        if self._current is bar:
            self._current = None

    def stage(self, it: int, stage: str, iterations: int, total: float | None = None) -> Bar:
        """improve: a header line 'improve  iteration I/N' and one line for the stage."""
        if self.rich is None:
            return Bar(total=total)
        if self._head is None:
            self._head = Bar(self, self.rich.add_task("improve", total=iterations, info=""),
                             iterations)
        self._head.update(completed=max(it - 1, 0),
                          info=f"iteration {it}/{iterations}: {stage}" if it else "baseline: evaluate")
        return self.bar(f"{stage} {it}", total)

    def iteration_done(self, it: int) -> None:
        if self._head is not None:
            self._head.update(completed=it)


def display(as_json: bool = False) -> Display:
    """The display a command should use: drawn only where `wanted`."""
    return Display(enabled=wanted(as_json))
