"""Wall time and peak memory of each improve stage, recorded in the store.

Why: a full-size improve (an 8B policy) must fit one card, and nobody knows which stage
dominates its wall time. Every stage of every iteration runs under

    with stage(store, run_id, "grow", iteration):
        ...

which stores one `stage_stats` row: seconds, peak GPU memory (torch.cuda.max_memory_allocated
over the stage, when CUDA is in use), and the process's peak resident memory so far (RSS; a
process-lifetime high-water mark, so it never decreases). A stage that raises is recorded too,
with its error, so a crashed attempt still shows where the time went. `cli.py report` prints
the rows.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional


@dataclass
class StageMeasure:
    wall_s: float = 0.0
    peak_gpu_bytes: Optional[int] = None
    peak_rss_bytes: Optional[int] = None
    device: str = "cpu"


def _cuda():
    """torch.cuda when torch is loaded and a GPU is visible (never imports torch itself)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda


def peak_rss_bytes() -> Optional[int]:
    """This process's peak resident set size (Linux/macOS), or None where unknown."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux


@contextmanager
def measure():
    """Times the block and tracks its peak GPU memory; yields the StageMeasure it fills in."""
    m = StageMeasure()
    cuda = _cuda()
    if cuda is not None:
        cuda.synchronize()
        cuda.reset_peak_memory_stats()
        m.device = cuda.get_device_name()
    t0 = time.perf_counter()
    try:
        yield m
    finally:
        cuda = cuda or _cuda()  # the stage may have been the first to load torch
        if cuda is not None:
            cuda.synchronize()
            m.peak_gpu_bytes = int(cuda.max_memory_allocated())
            m.device = cuda.get_device_name()
        m.wall_s = time.perf_counter() - t0
        m.peak_rss_bytes = peak_rss_bytes()


@contextmanager
def stage(store, run_id: int, name: str, iteration: int):
    """Run a stage under `measure()` and store its row (also when the stage raises)."""
    error = None
    try:
        with measure() as m:
            try:
                yield m
            except BaseException as e:
                error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
                raise
    finally:  # measure() has filled m in by now, whichever way the stage ended
        store.add_stage_stat(run_id, iteration, name, m.wall_s, m.peak_gpu_bytes, m.peak_rss_bytes,
                             m.device, error)


def format_rows(rows) -> list[str]:
    """One line a stage row, for `cli.py report`."""
    def gib(b):
        return "–" if b is None else f"{b / 2**30:.2f}"

    lines = [f"{'iter':>4}  {'stage':<9} {'wall s':>9}  {'GPU peak GiB':>12}  {'RSS peak GiB':>12}  device"]
    for r in rows:
        lines.append(f"{r.iteration:>4}  {r.stage:<9} {r.wall_s:>9.1f}  {gib(r.peak_gpu_bytes):>12}  "
                     f"{gib(r.peak_rss_bytes):>12}  {r.device}" + (f"  FAILED {r.error}" if r.error else ""))
    return lines
