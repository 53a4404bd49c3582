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

    improver = Improver(store, ImproveOptions(world="pocket", iterations=3))
    results = improver.run()          # `python cli.py improve --world pocket --iterations 3`
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from agent.collect import items_for, run_name
from agent.collect import collect as collect_trajectories
from agent.progress import Bar, Display

STAGES = ("grow", "rank", "build", "train", "evaluate", "promote")
TRAJECTORY_FILTERS = ("all", "clean")


@dataclass
class ImproveOptions:
    """What `improve` is asked for (`cli.py improve`'s options); the Improver resolves the rest."""

    model: Optional[str] = None  # the policy's base model (default: the world's)
    world: Optional[str] = None  # a world (agent/worlds): model, corpus and questions
    search: Optional[str] = None
    corpus: Optional[str] = None
    questions: Optional[str] = None  # set name or CSV/JSONL file, train and dev splits (default: the world's)
    name: Optional[str] = None  # the run's name (default: derived from the config, so re-running resumes)
    iterations: int = 3
    judge: str = "rules"  # "rules" or a judge model spec
    teacher: Optional[str] = None  # grow with this stronger model; its steps train `model`
    samples: int = 4  # alternatives per step in Grow
    samples_by_kind: dict = field(default_factory=dict)  # K for some kinds in Grow, e.g. {"summarize": 8}
    per_question: int = 1
    grow_choose: str = "perplexity"  # which sample a grow trajectory continues with (AgentConfig.choose)
    trajectories: str = "all"  # which grow trajectories train: all | clean
    grow_questions: Optional[int] = None  # training questions per iteration (default all)
    eval_questions: Optional[int] = None  # held-out questions (default all)
    eval_split: str = "dev"
    eval_runs: int = 1
    concurrency: int = 8
    max_searches: int = 10
    top_k: int = 3
    epochs: float = 1.0
    learning_rate: float = 2e-4
    max_batch_tokens: int = 0  # 0 = off (trainer/batching.py)
    train: dict = field(default_factory=dict)  # further TrainConfig overrides (lora_r, ...)
    workdir: str = "runs"  # adapters and example files go under workdir/name/
    workers: int = 1  # rollout processes (agent/workers.py)
    train_processes: int = 1  # training processes, one per GPU (trainer/distributed.py)
    load_in_4bit: bool = False  # 4-bit rollouts of `model` and QLoRA training (CUDA)
    # With model "openai:NAME": the local copy of the served weights each adapter trains on
    # (default: the world's model); trainer/serving.py
    base_dir: Optional[str] = None
    report_to: str = "none"  # where each iteration's training reports (TrainConfig.report_to)
    log_dir: str = "tensorboard"  # TensorBoard's folder, one subfolder per run (trainer/tracking.py)

    def check(self) -> None:
        """Refuse options that cannot work, needing nothing but the options (ValueError)."""
        from agent.state import CHOOSERS

        if self.trajectories not in TRAJECTORY_FILTERS:
            raise ValueError(f"--trajectories must be one of {', '.join(TRAJECTORY_FILTERS)}, "
                             f"not {self.trajectories!r}")
        if self.grow_choose not in CHOOSERS:
            raise ValueError(f"--grow-choose must be one of {', '.join(CHOOSERS)}, "
                             f"not {self.grow_choose!r}")
        if self.samples_by_kind and self.samples < 2:  # grow is told apart from evaluation by K > 1
            raise ValueError("--samples-for applies to grow, which needs --samples 2 or more")
        if self.train_processes < 1:
            raise ValueError("--train-processes must be at least 1")
        if self.workers < 1:
            raise ValueError("--workers must be at least 1")
        from trainer.config import REPORT_TO

        if self.report_to not in REPORT_TO:
            raise ValueError(f"--report-to must be one of {', '.join(REPORT_TO)}, "
                             f"not {self.report_to!r}")

    def train_overrides(self) -> dict:
        """TrainConfig overrides; a setting left at its default is left out, so the names of
        runs that predate it keep their hash."""
        out = {"epochs": self.epochs, "learning_rate": self.learning_rate}
        if self.load_in_4bit:  # QLoRA: the adapter trains on a 4-bit base, as the rollouts run it
            out["load_in_4bit"] = True
        if self.max_batch_tokens:
            out["max_batch_tokens"] = self.max_batch_tokens
        if self.report_to != "none":
            out["report_to"] = self.report_to
        return {**out, **self.train}


@dataclass
class ImproveConfig:
    """The run's config as recorded with it; a derived run name hashes it (Improver.open)."""

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
    # Which sample a grow trajectory continues with (AgentConfig.choose); Improver.agent_options
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
    # Rollouts on an OpenAI-compatible server ("openai:NAME", trainer/serving.py) that serves
    # base_model and loads each adapter; None: base_model runs in this process
    rollout_model: Optional[str] = None
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
        if d["rollout_model"] is None:
            del d["rollout_model"]
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
    """The loop over one improve run, built from its options.

    `prepare()` resolves the options, loads (or, with workers, checks) every model and the
    judge, imports the questions and opens the run: whatever a bad option breaks, breaks
    there, before anything is written. `run()` prepares if needed and runs the iterations
    not done yet; each stage below is one method.

    Scaling out (docs/SCALING.md): with `workers` > 1 the grow and evaluate stages hand their
    items to worker processes (agent/workers.py) instead of an in-process agent; with
    `train_processes` > 1 the train stage runs under a multi-GPU launch (trainer/distributed.py).
    `make_judge(spec)` builds the ranker's judge (default agent.setup.make_judge).

    Watching it: `display` (agent/progress.py) draws the iteration, the stage and its
    progress. With `report_to` set, each iteration's training reports through TRL under the
    run's name and, once an iteration is done (the baseline is 0), its accuracy, keep-rate,
    stage times and example counts are logged beside it (trainer/tracking.py).
    """

    def __init__(self, store, opts: ImproveOptions, log: Callable[[str], None] = print,
                 make_judge: Optional[Callable] = None, display: Optional[Display] = None):
        from agent.setup import PolicyPool, make_judge as default_judge

        opts.check()
        self.store, self.opts, self.log = store, opts, log
        self.make_judge = make_judge or default_judge
        # The loaded rollout models: one on the card at a time (two with a teacher), freed
        # before training.
        self.pool = PolicyPool(store, max_models=2 if opts.teacher else 1)
        self.run_items: Optional[Callable] = None  # the workers' fan-out, with workers > 1
        self.cfg: Optional[ImproveConfig] = None  # the run's recorded config, once open
        self.improve_run = None  # the run row (store), once open
        self._base = None
        self.serving = None  # trainer.serving.ServedRollouts when rollouts run on a server
        self.display = display or Display(enabled=False)
        self.tracker = None  # trainer.tracking.Tracker while run() runs
        self._bar = Bar()  # the current stage's line (quiet until a stage begins)

    # --- setting up -----------------------------------------------------------------

    def prepare(self) -> "Improver":
        if self.improve_run is not None:
            return self
        from agent.questions_io import plan_questions

        self.base()
        self._check_4bit()
        self._check_serving()
        load_questions = plan_questions(self.store, self.opts.questions, self.opts.world)
        self._load_policies()
        self._check_judge()
        set_name, _ = load_questions()
        return self.open(set_name)

    def base(self):
        """The policy's resolved options: model, search and corpus (a world's, if named)."""
        if self._base is None:
            from agent.setup import AgentOptions, SetupError

            o = self.opts
            base = AgentOptions(model=o.model, search=o.search, corpus=o.corpus,
                                world=o.world).resolved()
            if not base.model:
                from agent.worlds import world_names

                raise SetupError(f"no model: pass --model PATH or --world {'/'.join(world_names())}")
            self._base = base
        return self._base

    def _check_4bit(self) -> None:
        if self.opts.load_in_4bit:  # before any run is written, also when workers load the models
            import torch

            if not torch.cuda.is_available():
                from agent.setup import SetupError

                raise SetupError("--4bit needs a CUDA GPU (bitsandbytes 4-bit); none is visible")

    def _check_serving(self) -> None:
        """With --model openai:NAME, rollouts run on that server, each adapter loaded into it."""
        from agent.setup import AgentOptions, SetupError
        from trainer.serving import ServingError, served_rollouts

        o = self.opts
        world_model = AgentOptions(world=o.world).resolved().model if o.world else None
        try:
            self.serving = served_rollouts(self.base().model, o.base_dir, world_model,
                                           o.load_in_4bit, o.workers)
        except ServingError as e:
            raise SetupError(str(e)) from None

    def _load_policies(self) -> None:
        """Load the policy (and teacher) now, or with workers check their options only."""
        o, model = self.opts, self.base().model
        if o.workers == 1:
            self.policy(model, None, 1, o.eval_runs == 1)
            if o.teacher:
                self.policy(o.teacher, None, o.samples, False)
            return
        from agent.workers import fan_out, prepare_options

        prepare_options(self.store, self.agent_options(model, None, 1), o.workers)
        if o.teacher:
            prepare_options(self.store, self.agent_options(o.teacher, None, o.samples), o.workers)
        spread = fan_out(self.store, o.workers, o.concurrency, log=self.log)

        def run_items(model_spec, adapter, k, greedy, run_id, items, mv_id):
            opts = self.agent_options(model_spec, adapter, k, greedy)
            return spread(opts, run_id, items, model_spec, mv_id)

        self.run_items = run_items

    def _check_judge(self) -> None:
        """Load the judge once so a bad one fails early; ranking loads its own."""
        from agent.llm.base import LLMError
        from agent.setup import SetupError

        try:
            judge = self.make_judge(self.opts.judge)
        except (LLMError, ValueError, OSError) as e:
            raise SetupError(f"judge: {e}") from None
        if hasattr(judge, "close"):
            judge.close()

    def open(self, question_set: str) -> "Improver":
        """Open (or resume) the run on this question set; its name follows from its config."""
        o = self.opts
        cfg = ImproveConfig(
            name="", base_model=self.serving.base if self.serving else self.base().model,
            rollout_model=self.serving.model if self.serving else None, question_set=question_set,
            iterations=o.iterations, eval_split=o.eval_split, grow_questions=o.grow_questions,
            eval_questions=o.eval_questions, per_question=o.per_question, samples=o.samples,
            eval_runs=o.eval_runs, concurrency=o.concurrency, judge=o.judge, teacher=o.teacher,
            samples_by_kind=o.samples_by_kind, trajectories=o.trajectories,
            grow_choose=o.grow_choose, workdir=o.workdir, train=o.train_overrides())
        cfg.name = o.name or run_name("improve", set=question_set, **{
            k: v for k, v in cfg.to_dict().items() if k not in ("iterations", "name")})
        self.cfg = cfg
        self.improve_run = self.store.get_or_create_run(cfg.name, "improve", cfg.to_dict())
        self.dir = Path(cfg.workdir) / _slug(cfg.name)
        return self

    def agent_options(self, model_spec: str, adapter: Optional[str], k: int, greedy: bool = True):
        """A policy's options: K samples a step in Grow, one greedy (or sampled) in evaluation."""
        from agent.setup import AgentOptions
        from agent.state import AgentConfig
        from reward.choosers import chooser_for

        o, base = self.opts, self.base()
        grow = k > 1  # evaluation stays one sample, chosen by perplexity
        if self.serving:
            model_spec, adapter = self.serving.route(model_spec, adapter)
        return AgentOptions(model=model_spec, adapter=adapter, search=base.search,
                            corpus=base.corpus,
                            load_in_4bit=o.load_in_4bit and model_spec == base.model,  # not the teacher
                            config=AgentConfig(max_searches=o.max_searches, top_k=o.top_k,
                                               samples=k, greedy=greedy,
                                               samples_by_kind=o.samples_by_kind if grow else {},
                                               choose=o.grow_choose if grow else "perplexity"),
                            chooser=chooser_for(o.grow_choose) if grow else None)

    def policy(self, model_spec: str, adapter: Optional[str], k: int, greedy: bool = True):
        """An agent for this policy, sharing loaded models (agent.setup.PolicyPool)."""
        return self.pool.get(self.agent_options(model_spec, adapter, k, greedy))

    def release(self) -> None:
        """Free the rollout models (training loads its own copy of the base)."""
        self.pool.release()

    # --- the loop -------------------------------------------------------------------

    def run(self) -> list[IterationResult]:
        from trainer.tracking import Tracker

        self.prepare()
        self.tracker = Tracker(self.opts.report_to, self.cfg.name, self.opts.log_dir,
                               config=self.cfg.to_dict())
        try:
            self.baseline()
            self.track(0)
            for it in range(1, self.cfg.iterations + 1):
                if not self.state("done", it):
                    self.iteration(it)
                self.display.iteration_done(it)
                self.track(it)
        finally:
            self.tracker.close()
        self.store.finish_run(self.improve_run.id)
        return self.results()

    def track(self, it: int) -> None:
        """Log iteration `it`'s numbers, read back from the store, to the tracker."""
        if self.tracker is None or self.tracker.report_to == "none":
            return
        from trainer.history import iterations
        from trainer.tracking import iteration_metrics

        row = next((r for r in iterations(self.store, self.improve_run) if r.iteration == it), None)
        if row is not None:
            self.tracker.log(it, iteration_metrics(row))

    def baseline(self) -> None:
        """Iteration 0: the base policy's held-out score, the bar the first adapter must beat."""
        if self.state("done", 0):
            return
        summary = self._timed("evaluate", 0, self.evaluate, 0, None)
        mv = self._model_version(0, None, [], {}, summary)
        self.store.update_model_version(mv.id, promoted=True)
        self.mark(0, "done", best=mv.id)

    def iteration(self, it: int) -> None:
        current = self.store.model_version(self.state_value("best"))
        grow_run = self._timed("grow", it, self.grow, it, current)
        self._timed("rank", it, self.rank, it, grow_run)
        examples, step_ids = self._timed("build", it, self.build, it)
        trained = self._timed("train", it, self.train, it, current, examples, step_ids)
        summary = self._timed("evaluate", it, self.evaluate, it, trained)
        self._timed("promote", it, self.promote, it, current, trained, summary)
        self.mark(it, "done")

    def _timed(self, name: str, it: int, fn, *args):
        """A stage, its wall time and peak memory stored (trainer/stage_stats.py), and its
        seconds in the run state (for the report and tracking); one a resumed run skips
        (marked done before) is not timed again. The one clock of a stage is this one."""
        if self.state(name, it):
            return fn(*args)
        from trainer.stage_stats import stage

        with stage(self.store, self.improve_run.id, name, it) as m:
            out = fn(*args)
        entry = self._state().get(f"it{it}", {})
        entry["seconds"] = {**entry.get("seconds", {}), name: round(m.wall_s, 3)}
        self.store.set_run_state(self.improve_run.id, **{f"it{it}": entry})
        return out

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
            agent = self.policy(model, adapter, cfg.samples, greedy=False)
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
        if self.cfg.teacher or self.cfg.rollout_model:  # a server stored the bare prompts
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
        """A model behind an API (a teacher, or served rollouts) stores the bare prompt; train
        on the text the student is fed at rollout (its chat template, which is also what a
        server applies to it), so training and rollout tokens agree."""
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
        tracked = self.tracker.train_args(f"train-it{it}") if self.tracker else {}
        tcfg = TrainConfig(base_model=self.cfg.base_model, output_dir=str(out),
                           **{**self.cfg.train, **tracked})
        if self.opts.train_processes > 1:  # one process per GPU; only the main one saves
            from trainer.distributed import launch_train

            result = launch_train(examples, tcfg, self.opts.train_processes)
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
            agent = self.policy(cfg.base_model, adapter, 1, greedy=cfg.eval_runs == 1)
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
            parent_id=parent.id if parent else None, iteration=it, run_id=self.improve_run.id,
            step_ids=step_ids, config=config, metrics=metrics)

    def _state(self) -> dict:
        return (self.store.get_run(self.improve_run.id).state or {})

    def state(self, stage: str, it: int) -> bool:
        return stage in self._state().get(f"it{it}", {})

    def state_value(self, key: str):
        return self._state().get(key)

    def _enter(self, stage: str, it: int) -> None:
        """A stage begins: its line on the display."""
        self._bar = self.display.stage(it, stage, self.cfg.iterations)

    def mark(self, it: int, stage: str, best: int | None = None, **info) -> None:
        st = self._state()
        entry = {**st.get(f"it{it}", {}), stage: info or True}
        update = {f"it{it}": entry}
        if best is not None:
            update["best"] = best
        self.store.set_run_state(self.improve_run.id, **update)

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
