"""Data-parallel Grow: several worker processes, one per GPU, sharing one run through the store.

A parent (`collect --workers N`, or `improve --workers N` for its grow and evaluate stages)
writes a work order — the run, its (question, sample) items and the agent's options — and
starts N copies of

    python -m agent.workers ORDER.json --worker-index I      (RESTREACT_WORKER_INDEX=I)

each with CUDA_VISIBLE_DEVICES pinned to one GPU when there are GPUs. Every worker loads
its own model and claims items through `Store.claim` (unique per run, question and sample;
a dead worker's claims are taken over), so no item runs twice and no home-made scheduler is
needed: the database is the queue. The parent loads no model; it polls the store for
progress, waits for every worker and fails if any worker failed. Re-running the same
command resumes, exactly like a one-process collect.

All workers must reach one database: PostgreSQL for many workers or hosts; a SQLite file
(WAL) is fine for a few on one host. The database URL travels in RESTREACT_DB, never in
the order file, so a password is not written to disk.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from agent.collect import CollectStats, Item
from agent.setup import AgentOptions, SetupError
from agent.state import AgentConfig

WORKER_ENV = "RESTREACT_WORKER_INDEX"
# Comma-separated OpenAI-compatible endpoints (one vLLM replica per GPU): worker i talks to
# entry i (round-robin), so `--model openai:NAME --workers N` spreads over the replicas.
BASE_URLS_ENV = "RESTREACT_OPENAI_BASE_URLS"
REPO = Path(__file__).resolve().parent.parent


class WorkersError(RuntimeError):
    """A worker failed or the workers cannot start; one line meant for the user."""


@dataclass
class WorkOrder:
    """What every worker of one fan-out runs: the same items, options and run."""

    run_id: int
    items: list[Item]
    options: dict  # AgentOptions fields, `config` as a dict (see `agent_options`)
    workers: int = 1
    concurrency: int = 4  # trajectories at once inside each worker (batched on a local model)
    model: Optional[str] = None  # recorded on each trajectory
    model_version_id: Optional[int] = None

    @classmethod
    def make(cls, run_id: int, items: list[Item], opts: AgentOptions, workers: int, **kw) -> "WorkOrder":
        options = {k: v for k, v in asdict(opts).items() if k not in ("config", "chooser")}
        options["config"] = opts.config.to_dict()
        if opts.chooser is not None:
            options["chooser"] = callable_ref(opts.chooser)
        return cls(run_id=run_id, items=list(items), options=options, workers=workers, **kw)

    def agent_options(self) -> AgentOptions:
        opts = {k: v for k, v in self.options.items() if k not in ("config", "chooser")}
        chooser = self.options.get("chooser")
        return AgentOptions(**opts, config=AgentConfig(**self.options.get("config", {})),
                            chooser=resolve_ref(chooser) if chooser else None)

    def save(self, path: Path) -> Path:
        data = {**asdict(self), "items": [[it.question_id, it.question, it.index] for it in self.items]}
        path.write_text(json.dumps(data))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "WorkOrder":
        data = json.loads(Path(path).read_text())
        data["items"] = [Item(q, text, i) for q, text, i in data["items"]]
        return cls(**data)

    def share(self, index: int) -> list[Item]:
        """All items, starting at this worker's slice: workers begin far apart (fewer claim
        collisions) and still finish whatever a slower or dead worker left."""
        start = index * len(self.items) // max(self.workers, 1)
        return self.items[start:] + self.items[:start]


@dataclass
class WorkerReport:
    index: int
    pid: int
    returncode: Optional[int] = None
    stats: dict = field(default_factory=dict)  # the worker's CollectStats, when it finished
    error: str = ""


@dataclass
class FanOutResult:
    items: int
    already_done: int  # finished before the workers started (a resumed run)
    finished: int
    failed: int
    reports: list[WorkerReport]

    def per_worker(self) -> list[int]:
        """Trajectories each worker ran to an end (finished or failed)."""
        return [r.stats.get("finished", 0) + r.stats.get("failed", 0) for r in self.reports]


def callable_ref(fn: Callable) -> str:
    """A module-level function as "module:qualname", the way pickle names one: how the
    chooser the caller injected reaches the workers, whose order is JSON."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or not name or "<" in name:
        raise SetupError(f"a chooser for --workers must be a module-level function, not {fn!r}")
    return f"{module}:{name}"


def resolve_ref(ref: str) -> Callable:
    import importlib

    module, _, name = ref.partition(":")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


# --- the parent ----------------------------------------------------------------------


def prepare_options(store, opts: AgentOptions, workers: int) -> AgentOptions:
    """Resolve what the workers need (world paths, an adapter's model version) without
    loading a model; raise SetupError on options that cannot work with several workers."""
    if opts.record:
        raise SetupError("--record writes one cassette and cannot be shared by several "
                         "--workers; record with one worker")
    if opts.adapter and not Path(opts.adapter).exists():
        mv = store.model_version(opts.adapter)
        if mv is None or not mv.adapter_path:
            raise SetupError(f"adapter not found: {opts.adapter} (neither a directory nor a model version)")
        opts.adapter = mv.adapter_path
    from agent.setup import check_inputs

    check_inputs(opts)  # resolves in place, as build_agent does: the run name sees the same options
    if opts.corpus and not Path(opts.corpus).is_file():
        raise SetupError(f"corpus file not found: {opts.corpus}")
    if workers < 1:
        raise SetupError("--workers must be at least 1")
    if opts.chooser is not None:
        callable_ref(opts.chooser)  # raises on one the order cannot carry
    return opts


def gpu_slots(workers: int) -> list[Optional[str]]:
    """CUDA_VISIBLE_DEVICES for each worker: the visible GPUs round-robin, None without CUDA.

    Honours a CUDA_VISIBLE_DEVICES the parent was given (worker i gets its i-th entry).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [g.strip() for g in visible.split(",") if g.strip()]
    else:
        ids = [str(i) for i in range(_cuda_count())]
    if not ids:
        return [None] * workers
    return [ids[i % len(ids)] for i in range(workers)]


def _cuda_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def worker_env(index: int, gpu: Optional[str], workers: int, db_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env[WORKER_ENV] = str(index)
    env["RESTREACT_DB"] = db_url
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    urls = [u.strip() for u in env.get(BASE_URLS_ENV, "").split(",") if u.strip()]
    if urls:
        env["OPENAI_BASE_URL"] = urls[index % len(urls)]
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    elif "OMP_NUM_THREADS" not in env:  # CPU workers: share the cores instead of fighting for them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    return env


def db_url_of(store) -> str:
    return store.engine.url.render_as_string(hide_password=False)


def run_workers(store, order: WorkOrder, on_progress: Callable[[int, int], None] | None = None,
                poll_s: float = 0.5) -> FanOutResult:
    """Start `order.workers` workers, wait for all, return what they did.

    `on_progress(done, total)` is called as the run's finished items grow. Raises
    WorkersError (after every worker has ended) if any worker failed.
    """
    keys = {(it.question_id, it.index) for it in order.items}
    done_before = len(store.finished_keys(order.run_id) & keys)
    slots = gpu_slots(order.workers)
    url = db_url_of(store)
    with tempfile.TemporaryDirectory(prefix="restreact-workers-") as tmp:
        path = order.save(Path(tmp) / "order.json")
        procs, logs = [], []
        try:
            for i in range(order.workers):
                out, err = open(Path(tmp) / f"w{i}.out", "w+"), open(Path(tmp) / f"w{i}.err", "w+")
                logs.append((out, err))
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "agent.workers", str(path), "--worker-index", str(i)],
                    env=worker_env(i, slots[i], order.workers, url), stdout=out, stderr=err))
            last = -1
            while any(p.poll() is None for p in procs):
                done = len(store.finished_keys(order.run_id) & keys)
                if on_progress and done != last:
                    on_progress(done, len(keys))
                    last = done
                time.sleep(poll_s)
        except BaseException:  # Ctrl-C or an error here: no worker outlives its parent
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait()
            raise
        finally:
            reports = [_report(i, p, out, err) for i, (p, (out, err)) in enumerate(zip(procs, logs))]
            for out, err in logs:
                out.close()
                err.close()
    if on_progress:
        on_progress(len(store.finished_keys(order.run_id) & keys), len(keys))
    failed = [r for r in reports if r.returncode != 0]
    if failed:
        r = failed[0]
        raise WorkersError(f"{len(failed)} of {order.workers} workers failed; worker {r.index} "
                           f"(exit {r.returncode}): {r.error or 'no error message'} "
                           "(re-run the same command to resume)")
    return FanOutResult(items=len(keys), already_done=done_before,
                        finished=sum(r.stats.get("finished", 0) for r in reports),
                        failed=sum(r.stats.get("failed", 0) for r in reports), reports=reports)


def _report(index: int, proc: subprocess.Popen, out, err) -> WorkerReport:
    proc.wait()
    out.seek(0)
    err.seek(0)
    rep = WorkerReport(index=index, pid=proc.pid, returncode=proc.returncode)
    for line in reversed(out.read().splitlines()):
        if line.startswith("{"):
            rep.stats = json.loads(line)
            break
    lines = [ln.strip() for ln in err.read().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    rep.error = (errors[-1][len("error:"):].strip() if errors else (lines[-1] if lines else ""))
    return rep


def describe(result: FanOutResult) -> str:
    """One line: the totals and who did how much."""
    shares = ", ".join(f"w{r.index}: {n}" for r, n in zip(result.reports, result.per_worker()))
    return (f"{result.finished} finished, {result.failed} failed, {result.already_done} skipped "
            f"(already done) over {len(result.reports)} workers ({shares})")


def collect_in_workers(store, opts: AgentOptions, run, items: list[Item], workers: int,
                       concurrency: int) -> FanOutResult:
    """`collect --workers N`: fan the run out and draw one progress bar for all workers."""
    from agent.progress import display

    order = WorkOrder.make(run.id, items, opts, workers, concurrency=concurrency, model=opts.model)
    with display() as d:
        bar = d.bar(f"collect ×{workers}", total=len(items))
        result = run_workers(store, order, on_progress=bar.on_count)
    return result


def fan_out(store, workers: int, concurrency: int, log: Callable[[str], None] = print):
    """For `improve --workers N`: a function running (options, run, items) over N workers."""

    def run(opts: AgentOptions, run_id: int, items: list[Item], model: Optional[str],
            model_version_id: Optional[int]) -> FanOutResult:
        order = WorkOrder.make(run_id, items, opts, workers, concurrency=concurrency, model=model,
                               model_version_id=model_version_id)
        result = run_workers(store, order)
        log(f"  workers: {describe(result)}")
        return result

    return run


# --- one worker ------------------------------------------------------------------------


def work(order: WorkOrder, index: int, db: Optional[str] = None) -> CollectStats:
    """Run this worker's share of the order: load the model, claim and run items."""
    from agent.collect import collect
    from agent.setup import build_agent
    from store.api import Store

    store = Store(db)
    agent = build_agent(order.agent_options(), store)
    return collect(agent, order.run_id, order.share(index), concurrency=order.concurrency,
                   model=order.model, model_version_id=order.model_version_id)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.workers",
                                description="One Grow worker: runs its share of a work order.")
    p.add_argument("order", help="Work order JSON written by the parent.")
    p.add_argument("--worker-index", type=int, default=int(os.environ.get(WORKER_ENV, 0)))
    args = p.parse_args(argv)
    from agent import interrupt
    from agent.llm.base import LLMError
    from store.db import StoreError

    try:
        with interrupt.handling():  # the parent's SIGTERM (or the terminal's Ctrl-C)
            order = WorkOrder.load(args.order)
            stats = work(order, args.worker_index, os.environ.get("RESTREACT_DB"))
    except interrupt.Interrupted as e:  # its trajectories are marked; the parent re-runs
        print(f"error: {e}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(e.exit_code)  # see cli.main: no shutdown under a model thread
    except Exception as e:
        if interrupt.requested():  # a signal a library turned into its own error (cli.main)
            print(f"error: interrupted ({e.__class__.__name__} on the way out)", file=sys.stderr)
            sys.stderr.flush()
            os._exit(128 + interrupt.requested_signal())
        if not isinstance(e, (SetupError, LLMError, StoreError, ValueError, OSError)):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"error: {first}", file=sys.stderr)
        return 1
    print(json.dumps({"worker": args.worker_index, "pid": os.getpid(), **asdict(stats)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
