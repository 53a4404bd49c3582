"""Batch collection: many trajectories over a question set, concurrently and resumably.

Each (question, trajectory index) is claimed in the store before it runs, so a re-run
skips what is finished, takes over what a killed process left half-done, and several
collector processes can share one question set without duplicates.
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from agent.graph import Agent


@dataclass
class Item:
    question_id: Optional[int]
    question: str
    index: int = 0  # which trajectory of this question (several per question in Grow)


@dataclass
class CollectStats:
    done: int = 0
    finished: int = 0
    failed: int = 0
    skipped: int = 0  # already finished earlier or held by another live collector


def run_name(kind: str, **parts) -> str:
    """A deterministic run name: the same command line resumes the same run."""
    digest = hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]
    label = parts.get("set") or parts.get("label") or ""
    return f"{kind}:{label}:{digest}" if label else f"{kind}:{digest}"


def items_for(questions: Iterable, per_question: int = 1) -> list[Item]:
    return [Item(q.id, q.text, i) for q in questions for i in range(per_question)]


def collect(agent: Agent, run_id: int, items: list[Item], concurrency: int = 1,
            model: str | None = None, model_version_id: int | None = None,
            on_done: Callable[[CollectStats], None] | None = None) -> CollectStats:
    """Run every item not finished yet; returns counts. Safe to call again after a crash."""
    store = agent.store
    finished = store.finished_keys(run_id)
    todo = [it for it in items if (it.question_id, it.index) not in finished]
    stats = CollectStats(skipped=len(items) - len(todo))
    lock = threading.Lock()

    def work(it: Item) -> None:
        claim = store.claim(run_id, it.question_id, it.question, it.index, model=model,
                            model_version_id=model_version_id)
        status = None
        if claim is not None:
            status = agent.run(it.question, claim.trajectory_id, resume=claim.resumed)["status"]
        with lock:
            stats.done += 1
            if status == "finished":
                stats.finished += 1
            elif status in ("failed", "error"):
                stats.failed += 1
            else:
                stats.skipped += 1
            if on_done:
                on_done(stats)

    if concurrency <= 1:
        for it in todo:
            work(it)
    else:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = [pool.submit(work, it) for it in todo]
            try:
                for f in futures:
                    f.result()  # re-raise the first unexpected error...
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # ...without running the rest
                raise
    return stats
