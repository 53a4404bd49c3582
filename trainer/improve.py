"""The self-improvement loop, read top to bottom as the method (ReST meets ReAct):

    for each iteration:
        grow     collect trajectories on the training questions with the current policy
        rank     a judge ranks each step's sampled alternatives
        build    one example per step: its prompt and the top-ranked sample
        train    a fresh LoRA adapter on the base model
        evaluate the new model on held-out questions
        promote  it if it beats the current one

No reference answer is used for training: only the judge's rankings select the data.
Every stage records where it got to in the improve run's state, so re-running the same
command after a crash or Ctrl-C resumes at the stage it stopped in.

    python cli.py improve --world pocket --iterations 3
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from agent.collect import items_for
from agent.collect import collect as collect_trajectories
from agent.progress import Bar, Display

STAGES = ("grow", "rank", "build", "train", "evaluate", "promote")
TRAJECTORY_FILTERS = ("all", "clean")
KILL_ENV = "RESTREACT_TEST_KILL_AT"  # test hook, see `_kill_point`


def _kill_point(stage: str, it: int) -> None:
    """Crash-test hook: RESTREACT_TEST_KILL_AT=STAGE:IT[:DELAY_S] SIGKILLs this process
    DELAY_S seconds (default 0) after it enters that stage of that iteration (the baseline
    evaluation is evaluate:0). Used by tests/test_kill_resume.py to prove resumption from
    any stage; unset, it costs one dict lookup.
    """
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    want_stage, want_it, *delay = spec.split(":")
    if (want_stage, want_it) != (stage, str(it)):
        return
    import signal
    import threading

    kill = lambda: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    if delay and float(delay[0]) > 0:
        timer = threading.Timer(float(delay[0]), kill)
        timer.daemon = True  # a run that ends first is not held back (nor killed) by it
        timer.start()
    else:
        kill()


@dataclass
class ImproveConfig:
    name: str  # the improve run's name: the same name resumes
    base_model: str  # the model every iteration's adapter is trained on
    question_set: str
    train_split: str = "train"
    eval_split: str = "dev"
    iterations: int = 3
    grow_questions: Optional[int] = None  # cap on training questions per iteration
    eval_questions: Optional[int] = None
    per_question: int = 1  # trajectories per question in Grow (the paper's 2nd gen used 4)
    samples: int = 4  # K alternatives per step for the ranker to choose from
    samples_by_kind: dict = field(default_factory=dict)  # K for some kinds, e.g. {"summarize": 8}
    # Which sample a grow trajectory continues with (AgentConfig.choose); the policy factory
    # applies it, this records it in the run's config and name
    grow_choose: str = "perplexity"
    eval_runs: int = 1  # evaluation runs per question (mean ± std over runs)
    concurrency: int = 8
    judge: str = "rules"  # "rules" or an LLM spec (local dir, openai:NAME, replay:PATH)
    teacher: Optional[str] = None  # a stronger model to grow with (distillation), else the policy
    keep_data: bool = True  # train on the examples of all iterations so far, not just this one
    # "all": every finished trajectory's steps (the paper); "clean": only the trajectories whose
    # taken steps the judge passes at every step (trainer.examples.clean_trajectories)
    trajectories: str = "all"
    workdir: str = "runs"  # adapters and example files go under workdir/name/
    train: dict = field(default_factory=dict)  # TrainConfig overrides

    def to_dict(self) -> dict:
        d = asdict(self)
        # Defaults left out: the names and configs of earlier runs stay unchanged.
        if not d["samples_by_kind"]:
            del d["samples_by_kind"]
        if d["trajectories"] == "all":
            del d["trajectories"]
        if d["grow_choose"] == "perplexity":
            del d["grow_choose"]
        return d

    def __post_init__(self):
        if self.trajectories not in TRAJECTORY_FILTERS:
            raise ValueError(f"trajectories must be one of {', '.join(TRAJECTORY_FILTERS)}, "
                             f"not {self.trajectories!r}")


@dataclass
class IterationResult:
    iteration: int
    examples: int
    train_loss: Optional[float]
    eval_exact: float
    eval_std: float
    promoted: bool
    model_version: Optional[str]


class Improver:
    """Runs the loop; `make_agent(model, adapter, samples, greedy)` builds a policy agent.

    Scaling out (docs/SCALING.md): with `run_items(model, adapter, samples, greedy, run_id,
    items, model_version_id)` the grow and evaluate stages hand their items to worker
    processes (agent/workers.py) instead of an in-process agent; with `train_processes` > 1
    the train stage runs under a multi-GPU launch (trainer/distributed.py).

    Watching it: `display` (agent/progress.py) draws the iteration, the stage and its
    progress; `on_iteration(it)` is called once each iteration is done (the baseline is 0),
    which is where experiment tracking logs it (trainer/tracking.py); `train_args(it)` adds
    TrainConfig fields for that iteration's training (report_to, run_name, logging_dir).
    """

    def __init__(self, store, cfg: ImproveConfig, make_agent: Callable, make_judge: Callable,
                 log: Callable[[str], None] = print, run_items: Optional[Callable] = None,
                 train_processes: int = 1, release: Optional[Callable[[], None]] = None,
                 display: Optional[Display] = None,
                 on_iteration: Optional[Callable[[int], None]] = None,
                 train_args: Optional[Callable[[int], dict]] = None):
        self.store, self.cfg, self.make_agent, self.make_judge, self.log = (
            store, cfg, make_agent, make_judge, log)
        self.display = display or Display(enabled=False)
        self.on_iteration = on_iteration or (lambda it: None)
        self.train_args = train_args or (lambda it: {})
        self._entered: tuple = (None, None, 0.0)  # (stage, iteration, start) for its timing
        self._bar = Bar()  # the current stage's line (quiet until a stage begins)
        self.release = release or (lambda: None)  # frees the rollout models before training
        self.run_items, self.train_processes = run_items, train_processes
        self.run = store.get_or_create_run(cfg.name, "improve", cfg.to_dict())
        self.dir = Path(cfg.workdir) / _slug(cfg.name)

    # --- the loop -------------------------------------------------------------------

    def run_all(self) -> list[IterationResult]:
        self.baseline()
        self.on_iteration(0)
        for it in range(1, self.cfg.iterations + 1):
            if not self.state("done", it):
                self.iteration(it)
            self.display.iteration_done(it)
            self.on_iteration(it)
        self.store.finish_run(self.run.id)
        return self.results()

    def baseline(self) -> None:
        """Iteration 0: the base policy's held-out score, the bar the first adapter must beat."""
        if self.state("done", 0):
            return
        summary = self.evaluate(0, None)
        mv = self._model_version(0, None, [], {}, summary)
        self.store.update_model_version(mv.id, promoted=True)
        self.mark(0, "done", best=mv.id)

    def iteration(self, it: int) -> None:
        current = self.store.model_version(self.state_value("best"))
        grow_run = self.grow(it, current)
        self.rank(it, grow_run)
        examples, step_ids = self.build(it)
        trained = self.train(it, current, examples, step_ids)
        summary = self.evaluate(it, trained)
        self.promote(it, current, trained, summary)
        self.mark(it, "done")

    # --- stages ---------------------------------------------------------------------

    def grow(self, it: int, current):
        self._enter("grow", it)
        cfg = self.cfg
        name = f"{cfg.name}:grow:{it}"
        run = self.store.get_or_create_run(name, "grow", {"iteration": it})
        if self.state("grow", it):
            return run
        questions = self._grow_questions(it)
        model, adapter = (cfg.teacher, None) if cfg.teacher else (cfg.base_model, current.adapter_path)
        self.log(f"iteration {it}: grow on {len(questions)} questions × {cfg.per_question} "
                 f"with {'teacher ' + cfg.teacher if cfg.teacher else current.name}")
        items, mv_id = items_for(questions, cfg.per_question), None if cfg.teacher else current.id
        if self.run_items:  # worker processes, each loading its own model
            self.run_items(model, adapter, cfg.samples, False, run.id, items, mv_id)
        else:
            agent = self.make_agent(model, adapter, cfg.samples, greedy=False)
            self._bar.update(total=len(items))
            collect_trajectories(agent, run.id, items, concurrency=cfg.concurrency, model=model,
                                 model_version_id=mv_id, on_done=self._bar.on_collected)
        self.store.finish_run(run.id)
        self.mark(it, "grow", grow_run=run.id)
        return run

    def _grow_questions(self, it: int) -> list:
        """A fresh window of training questions each iteration (wrapping around the split)."""
        cfg = self.cfg
        pool = self.store.questions(cfg.question_set, cfg.train_split)
        n = min(cfg.grow_questions or len(pool), len(pool))
        start = ((it - 1) * n) % max(len(pool), 1)
        return (pool[start:] + pool[:start])[:n]

    def rank(self, it: int, grow_run) -> None:
        """Rank every grow run the build will read, under the judge's current version.

        The build takes only rankings of that version, so a rubric change between runs
        (rules-v1 → rules-v2) must re-rank the earlier iterations' grow runs too, or their
        steps would silently drop out of training. rank_run skips what is already done.
        """
        self._enter("rank", it)
        from reward.ranker import prompt_version, rank_run

        version = prompt_version(self.cfg.judge)
        if self._state().get(f"it{it}", {}).get("rank") == {"version": version}:
            return
        judge = self.make_judge(self.cfg.judge)
        try:
            for j in self._built_from(it):
                run = grow_run if j == it else self.store.get_run(f"{self.cfg.name}:grow:{j}")
                counts = rank_run(self.store, run.id, judge, self.cfg.judge,
                                  progress=self._bar.on_count)
                self.log(f"iteration {it}: ranked grow run {j} ({version}): {counts}")
        finally:  # a local judge model must not stay on the card through training
            close = getattr(judge, "close", None)
            if close is not None:
                close()
        self.mark(it, "rank", version=version)

    def _built_from(self, it: int) -> range:
        """The iterations whose grow runs iteration `it` trains on."""
        return range(1, it + 1) if self.cfg.keep_data else range(it, it + 1)

    def build(self, it: int) -> tuple[list, list[int]]:
        self._enter("build", it)
        from reward.ranker import prompt_version
        from trainer.examples import examples_from_steps

        examples = []
        for j in self._built_from(it):
            grow_run = self.store.get_run(f"{self.cfg.name}:grow:{j}")
            steps = self.store.steps_of_run(grow_run.id, status="finished", min_samples=1)
            examples += examples_from_steps(steps, self.cfg.judge, prompt_version(self.cfg.judge),
                                            clean_only=self.cfg.trajectories == "clean")
        if self.cfg.teacher:
            examples = self._as_student_sees(examples)
        path = self.dir / f"it{it}" / "examples.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            for ex in examples:
                f.write(json.dumps(asdict(ex)) + "\n")
        step_ids = [ex.step_id for ex in examples if ex.step_id is not None]
        kept = f" from {self.cfg.trajectories} trajectories" if self.cfg.trajectories != "all" else ""
        self.log(f"iteration {it}: {len(examples)} training examples{kept}")
        self.mark(it, "build", examples=len(examples))
        return examples, step_ids

    def _as_student_sees(self, examples: list) -> list:
        """A teacher behind an API stores the bare prompt; train on the text the student will
        be fed at rollout (its chat template), so training and rollout tokens agree."""
        from dataclasses import replace

        from transformers import AutoTokenizer

        from agent.llm.hf import render_prompt

        tok = AutoTokenizer.from_pretrained(self.cfg.base_model)
        bos = tok.bos_token or ""
        return [ex if bos and ex.prompt.startswith(bos) else
                replace(ex, prompt=render_prompt(tok, ex.prompt)) for ex in examples]

    def train(self, it: int, current, examples: list, step_ids: list[int]):
        self._enter("train", it)
        from trainer.config import TrainConfig
        from trainer.sft import train

        name = f"{self.cfg.name}:it{it}"
        existing = self.store.model_version(name)
        if existing is not None:  # trained before a crash in a later stage
            return existing
        out = self.dir / f"it{it}" / "adapter"
        self.release()  # training loads its own copy of the base: make room on the card
        tcfg = TrainConfig(base_model=self.cfg.base_model, output_dir=str(out),
                           **{**self.cfg.train, **self.train_args(it)})
        if self.train_processes > 1:  # one process per GPU; only the main one saves
            from trainer.distributed import launch_train

            result = launch_train(examples, tcfg, self.train_processes)
        else:
            self._bar.update(total=tcfg.epochs)
            result = train(examples, tcfg, on_log=self._bar.on_train_log)
        mv = self._model_version(it, str(result.output_dir), step_ids, asdict(tcfg), None,
                                 parent=current, train_metrics=result.metrics)
        self.mark(it, "train", model_version=mv.id)
        return mv

    def evaluate(self, it: int, mv):
        self._enter("evaluate", it)
        from reward.evaluate import evaluate

        cfg = self.cfg
        questions = self.store.questions(cfg.question_set, cfg.eval_split, cfg.eval_questions)
        run = self.store.get_or_create_run(f"{cfg.name}:eval:{it}", "eval", {"iteration": it})
        adapter, mv_id = mv.adapter_path if mv else None, mv.id if mv else None
        if self.run_items:  # the trajectories in worker processes, the scoring here
            from agent.collect import Item
            from reward.evaluate import score_run, summarize

            items = [Item(q.id, q.text, r) for r in range(cfg.eval_runs) for q in questions]
            self.run_items(cfg.base_model, adapter, 1, cfg.eval_runs == 1, run.id, items, mv_id)
            score_run(self.store, run.id, questions, model_version_id=mv_id)
            summary = summarize(self.store, run.id, len(questions), cfg.eval_runs)
        else:
            agent = self.make_agent(cfg.base_model, adapter, 1, greedy=cfg.eval_runs == 1)
            self._bar.update(total=len(questions) * cfg.eval_runs)
            summary = evaluate(agent, run.id, questions, runs=cfg.eval_runs,
                               concurrency=cfg.concurrency, model=cfg.base_model,
                               model_version_id=mv_id, on_done=self._bar.on_collected)
        self.store.finish_run(run.id)
        if mv is not None:
            self.store.update_model_version(mv.id, metrics={"eval": summary.to_dict()})
        self.log(f"iteration {it}: {cfg.eval_split} exact match "
                 f"{summary.exact_mean:.3f} ± {summary.exact_std:.3f}")
        self.mark(it, "evaluate", eval_run=run.id, exact=summary.exact_mean, std=summary.exact_std)
        return summary

    def promote(self, it: int, current, trained, summary) -> None:
        self._enter("promote", it)
        if self.state("promote", it):  # decided before a crash: `current` has moved on since
            return
        best = (current.metrics or {}).get("eval", {}).get("exact_mean", 0.0)
        better = summary.exact_mean > best
        if better:
            self.store.update_model_version(trained.id, promoted=True)
            self.mark(it, "promote", promoted=True, best=trained.id)
        else:
            self.mark(it, "promote", promoted=False)
        self.log(f"iteration {it}: {'promoted' if better else 'kept'} "
                 f"({summary.exact_mean:.3f} vs {best:.3f})")

    # --- bookkeeping ----------------------------------------------------------------

    def _model_version(self, it, adapter, step_ids, config, summary, parent=None,
                       train_metrics=None):
        name = f"{self.cfg.name}:it{it}"
        mv = self.store.model_version(name)
        if mv is not None:
            return mv
        metrics = {"train": train_metrics or {}}
        if summary is not None:
            metrics["eval"] = summary.to_dict()
        return self.store.add_model_version(
            name=name, base=self.cfg.base_model, adapter_path=adapter,
            parent_id=parent.id if parent else None, iteration=it, run_id=self.run.id,
            step_ids=step_ids, config=config, metrics=metrics)

    def _state(self) -> dict:
        return (self.store.get_run(self.run.id).state or {})

    def state(self, stage: str, it: int) -> bool:
        return stage in self._state().get(f"it{it}", {})

    def state_value(self, key: str):
        return self._state().get(key)

    def _enter(self, stage: str, it: int) -> None:
        """A stage begins: the crash-test hook, its clock and its line on the display."""
        _kill_point(stage, it)
        self._entered = (stage, it, time.perf_counter())
        self._bar = self.display.stage(it, stage, self.cfg.iterations)

    def mark(self, it: int, stage: str, best: int | None = None, **info) -> None:
        st = self._state()
        entry = {**st.get(f"it{it}", {}), stage: info or True}
        if self._entered[:2] == (stage, it):  # how long the stage took this time (report, tracking)
            entry["seconds"] = {**entry.get("seconds", {}),
                                stage: round(time.perf_counter() - self._entered[2], 3)}
        update = {f"it{it}": entry}
        if best is not None:
            update["best"] = best
        self.store.set_run_state(self.run.id, **update)

    def results(self) -> list[IterationResult]:
        out = []
        st = self._state()
        for it in range(0, self.cfg.iterations + 1):
            entry = st.get(f"it{it}")
            mv = self.store.model_version(f"{self.cfg.name}:it{it}")
            if not entry or mv is None:
                continue
            ev = (mv.metrics or {}).get("eval", {})
            out.append(IterationResult(
                iteration=it, examples=(entry.get("build") or {}).get("examples", 0) if isinstance(entry.get("build"), dict) else 0,
                train_loss=(mv.metrics or {}).get("train", {}).get("train_loss"),
                eval_exact=ev.get("exact_mean", 0.0), eval_std=ev.get("exact_std", 0.0),
                promoted=bool(mv.promoted), model_version=mv.name))
        return out


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
