"""A small finished improve run in a real SQLite store, for the tests of what looks back at
a loop (report page, export, tracking, browse).

The loop is the real one (trainer/improve.py): real grow and evaluation trajectories over
the pocket world's BM25 corpus, real rankings by the rule judge, real LoRA adapters trained
on a tiny Llama. Only the rollouts' policy is the pocket world's scripted reader, with a
different mistake rate per iteration, so held-out answers change between iterations and
the report has flipped questions to show (a tiny random Llama answers nothing right).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# mistake rate of the scripted reader per policy: the base, then each iteration's adapter
RATES = {None: 0.6, "it1": 0.2, "it2": 0.5}
GROW_QUESTIONS, EVAL_QUESTIONS, ITERATIONS = 3, 8, 2


@dataclass
class ImproveRun:
    db: Path
    workdir: Path
    name: str
    model: Path  # the tiny base model the adapters were trained on
    tb_dir: Path | None = None  # its TensorBoard folder, when tensorboard is installed


def _policy(store, corpus: str):
    from agent.setup import AgentOptions, build_agent
    from agent.state import AgentConfig

    def make(model, adapter, k, greedy=True):
        key = next((p for p in ("it1", "it2") if adapter and f"/{p}/" in adapter), None)
        opts = AgentOptions(model=f"scripted:pocket:{RATES[key]}", search="corpus", corpus=corpus,
                            config=AgentConfig(samples=k, greedy=greedy, max_searches=4))
        return build_agent(opts, store)

    return make


def build_improve_run(root: Path, name: str = "fixture-improve", tracker=None) -> ImproveRun:
    from agent.pocket.assets import ensure_pocket_questions, pocket_assets
    from store.api import Store
    from tests.tiny import build_tiny_model
    from trainer.improve import ImproveConfig, Improver

    root.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(root / "tiny", hidden=32, layers=1)
    db, workdir = root / "improve.db", root / "work"
    store = Store(str(db))
    qset = ensure_pocket_questions(store)
    cfg = ImproveConfig(name=name, base_model=str(model), question_set=qset,
                        iterations=ITERATIONS, grow_questions=GROW_QUESTIONS,
                        eval_questions=EVAL_QUESTIONS, samples=2, concurrency=2,
                        workdir=str(workdir), train={"epochs": 1.0})
    kw = {}
    if tracker is not None:
        kw = {"train_args": lambda it: tracker.train_args(f"train-it{it}")}
    improver = Improver(store, cfg, _policy(store, str(pocket_assets().corpus)),
                        lambda spec: None, log=lambda *a: None, **kw)
    if tracker is not None:
        from trainer.history import iterations
        from trainer.tracking import iteration_metrics

        def track(it):
            row = next(r for r in iterations(store, improver.run) if r.iteration == it)
            tracker.log(it, iteration_metrics(row))

        improver.on_iteration = track
    improver.run_all()
    store.close()
    return ImproveRun(db, workdir, name, model)


_CACHE: dict[str, ImproveRun] = {}


def shared_improve_run(tmp_path_factory) -> ImproveRun:
    """One run per test process, shared by the test files that only read it; tracked in
    TensorBoard (as `improve --report-to tensorboard` does) when tensorboard is installed."""
    if "run" not in _CACHE:
        import importlib.util

        from trainer.tracking import Tracker

        root = tmp_path_factory.mktemp("improve-run")
        tracker = None
        if importlib.util.find_spec("tensorboard") is not None:
            tracker = Tracker("tensorboard", "fixture-improve", root / "tb")
        try:
            run = build_improve_run(root, tracker=tracker)
        finally:
            if tracker is not None:
                tracker.close()
        run.tb_dir = tracker.dir if tracker is not None else None
        _CACHE["run"] = run
    return _CACHE["run"]
