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


def build_improve_run(root: Path, name: str = "fixture-improve",
                      tb_dir: Path | None = None) -> ImproveRun:
    """The run, tracked in TensorBoard under `tb_dir` when given (`--report-to tensorboard`)."""
    from agent.worlds import get_world
    from agent.worlds.pocket.assets import pocket_assets
    from store.api import Store
    from tests.tiny import build_tiny_model
    from trainer.improve import ImproveOptions, Improver

    root.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(root / "tiny", hidden=32, layers=1)
    db, workdir = root / "improve.db", root / "work"
    store = Store(str(db))
    qset = get_world("pocket").ensure_questions(store)
    tracked = {"report_to": "tensorboard", "log_dir": str(tb_dir)} if tb_dir else {}
    opts = ImproveOptions(name=name, model=str(model), world="pocket", iterations=ITERATIONS,
                          grow_questions=GROW_QUESTIONS, eval_questions=EVAL_QUESTIONS, samples=2,
                          concurrency=2, workdir=str(workdir), epochs=1.0, **tracked)
    improver = Improver(store, opts, log=lambda *a: None).open(qset)
    improver.policy = _policy(store, str(pocket_assets().corpus))
    improver.run()
    store.close()
    return ImproveRun(db, workdir, name, model, tb_dir / name if tb_dir else None)


_CACHE: dict[str, ImproveRun] = {}


def shared_improve_run(tmp_path_factory) -> ImproveRun:
    """One run per test process, shared by the test files that only read it; tracked in
    TensorBoard (as `improve --report-to tensorboard` does) when tensorboard is installed."""
    if "run" not in _CACHE:
        import importlib.util

        root = tmp_path_factory.mktemp("improve-run")
        tracked = importlib.util.find_spec("tensorboard") is not None
        _CACHE["run"] = build_improve_run(root, tb_dir=root / "tb" if tracked else None)
    return _CACHE["run"]
