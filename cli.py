"""restreact: a self-improving web-search QA agent (ReST meets ReAct, on open parts).

Every command stores what it does in one SQL database: --db, else
RESTREACT_DB, else restreact.db in your data folder (shown under --db).
Nothing is written into the current folder unless an option asks for it.
Heavy libraries (torch, transformers, trl, peft) are imported inside the
commands that need them, so `--help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
questions_app = typer.Typer(help="Import and list question sets.", no_args_is_help=True)
app.add_typer(questions_app, name="questions")


class Ctx:
    db: Optional[str] = None
    # What `main` tells a user who stopped the command with Ctrl-C or SIGTERM.
    resume_hint: str = "what was finished is kept; re-run the same command to resume"


def fail(message: str, code: int = 1) -> None:
    """One clear line on stderr and a non-zero exit: how every user error ends.

    After a stop was requested, an error is the signal's doing (it broke off a read or an
    import), so the command ends as interrupted instead."""
    from agent import interrupt

    interrupt.raise_if_requested()
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def one_line_errors(*kinds: type[BaseException]):
    """Errors of these kinds end the command as fail() does, with their first line."""
    try:
        yield
    except kinds as e:
        fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)


def open_store():
    from store.api import Store
    from store.db import StoreError

    try:
        return Store(Ctx.db)
    except StoreError as e:
        fail(str(e))


def _db_help() -> str:
    from store.paths import DB_ENV, chosen_db

    where = "from RESTREACT_DB" if os.environ.get(DB_ENV) else "the default"
    return f"Database URL or SQLite file (now: {chosen_db()}, {where})."


@app.callback()
def _root(db: Optional[str] = typer.Option(None, "--db", help=_db_help(), show_envvar=False)):
    Ctx.db = db


# --- store browsing: logs, show, questions ---------------------------------------------


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@app.command()
def logs(count: int = typer.Option(3, "--count", "-n", help="How many calls, newest last (0 = all)."),
         query: Optional[str] = typer.Option(None, "--query", "-q", help="Only calls whose prompt or response contains this text (any case)."),
         trajectory: Optional[int] = typer.Option(None, "--trajectory", "-t", help="Only calls of this trajectory."),
         as_json: bool = typer.Option(False, "--json", help="Print a JSON array instead."),
         full: bool = typer.Option(False, "--full", help="Print prompts and responses whole.")):
    """List and search the LLM calls: every prompt and response the models saw and wrote."""
    if count < 0:
        fail("--count must be 0 (all) or more")
    store = open_store()
    rows = store.llm_calls(limit=count, query=query, trajectory_id=trajectory)[::-1]  # oldest first
    if as_json:
        from agent.console import llm_call_to_dict

        return _print_json([llm_call_to_dict(r) for r in rows])
    from rich.console import Console

    from agent.console import render_llm_calls

    if not rows:
        typer.echo("no LLM calls" + (f" matching {query!r}" if query else ""))
        return
    Console(highlight=False).print(render_llm_calls(rows, full=full))


@app.command()
def show(trajectory_id: Optional[int] = typer.Argument(None, help="Trajectory id (default: the newest)."),
         as_json: bool = typer.Option(False, "--json", help="Print the trajectory as JSON instead."),
         full: bool = typer.Option(False, "--full", help="Also print step prompts, and samples whole.")):
    """Show one trajectory: its steps and every sample, rankings, searches and the answer."""
    store = open_store()
    tid = trajectory_id if trajectory_id is not None else store.latest_trajectory_id()
    if tid is None:
        fail("no trajectories yet (run `ask` or `collect` first)")
    t = store.trajectory(tid)
    if t is None:
        fail(f"no trajectory {tid}")
    if as_json:
        from agent.console import trajectory_to_dict

        return _print_json(trajectory_to_dict(t))
    from rich.console import Console

    from agent.console import render_trajectory

    Console(highlight=False).print(render_trajectory(t, full=full))


@questions_app.command("import")
def questions_import(file: Path = typer.Argument(..., help="CSV (header: question, answer?, id?, split?) or JSONL of objects with those keys."),
                     set_name: str = typer.Option(..., "--set", "-s", help="Question set to add to (created if new)."),
                     split: str = typer.Option("train", "--split", help="Split for rows that do not name one.")):
    """Import questions into a set, all or nothing: a bad line names itself and adds nothing."""
    from agent.questions_io import QuestionFileError, read_question_file

    try:
        rows = read_question_file(file)
    except QuestionFileError as e:
        fail(str(e))
    store = open_store()
    try:
        added = store.import_questions(set_name, rows, split=split, source=str(file))
    except ValueError as e:
        fail(f"{file}: {e}")
    have = dict(store.question_sets())[set_name]
    typer.echo(f"added {added} of {len(rows)} questions to set {set_name!r} "
               f"({len(rows) - added} already there; {have} in the set)")


@questions_app.command("list")
def questions_list():
    """List the question sets and how many questions each holds."""
    sets = open_store().question_sets()
    if not sets:
        typer.echo("no question sets (import one with: questions import FILE --set NAME)")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("set", "questions")
    for name, n in sets:
        table.add_row(name, str(n))
    Console(highlight=False).print(table)



# --- agent: ask, collect -----------------------------------------------------------------

# Options shared by every command that runs the agent.
MODEL = typer.Option(None, "--model", "-m", help="Local model dir or hub id, openai:NAME for an OpenAI-compatible server (OPENAI_BASE_URL), or replay:CASSETTE.")
ADAPTER = typer.Option(None, "--adapter", help="LoRA adapter directory (or a model version name) on top of --model; with openai:NAME it is loaded into the server (vLLM runtime LoRA).")
SEARCH = typer.Option(None, "--search", help="web | corpus | frozen (default: corpus when --corpus is given, else web).")
CORPUS = typer.Option(None, "--corpus", help="JSONL of {id, title, url, text} for local BM25 search.")
RECORD = typer.Option(None, "--record", help="Record all LLM and search traffic to this cassette (JSONL).")
REPLAY = typer.Option(None, "--replay", help="Answer LLM and search calls only from this cassette.")
WORLD = typer.Option(None, "--world", help="'pocket': the offline pocket world's model, corpus and questions.")
SAMPLES = typer.Option(None, "--samples", "-k", help="Samples per step; the lowest-perplexity parseable one continues.")
MAX_SEARCHES = typer.Option(10, "--max-searches", help="Search budget per trajectory.")
TOP_K = typer.Option(3, "--top-k", help="Search results shown to the model per search.")
FEWSHOT = typer.Option(False, "--fewshot/--zeroshot", help="Prepend worked examples (for prompted, not fine-tuned, models).")
FOURBIT = typer.Option(False, "--4bit", help="Load a local model in 4-bit (bitsandbytes, CUDA).")
SAMPLES_FOR = typer.Option(None, "--samples-for", help="K for one step kind, e.g. summarize=8 (repeatable); other kinds use --samples.")
CHOOSE = typer.Option("perplexity", "--choose", help="Which of a step's K samples the trajectory continues with: 'perplexity' (the lowest) or 'rules' (the rule judge's pick: search guided by the judge, no reference read).")
WORKERS = typer.Option(1, "--workers", help="Worker processes sharing the run through the store, one per GPU (each loads its own model; see docs/SCALING.md).")


def samples_by_kind(specs: Optional[list[str]]) -> dict:
    """`--samples-for summarize=8 --samples-for answer=4` → {"summarize": 8, "answer": 4}."""
    from agent.state import parse_samples_by_kind

    try:
        return parse_samples_by_kind(specs)
    except ValueError as e:
        fail(str(e))


def agent_options(model, adapter, search, corpus, record, replay, world, samples, max_searches,
                  top_k, fewshot, load_in_4bit, default_samples: int = 1, samples_for=None,
                  choose: str = "perplexity"):
    from agent.setup import AgentOptions
    from agent.state import CHOOSERS, AgentConfig

    if record and replay:
        fail("--record and --replay cannot be used together")
    if choose not in CHOOSERS:
        fail(f"--choose must be one of {', '.join(CHOOSERS)}, not {choose!r}")
    cfg = AgentConfig(max_searches=max_searches, top_k=top_k,
                      samples=samples or default_samples, fewshot=fewshot,
                      samples_by_kind=samples_by_kind(samples_for), choose=choose)
    if cfg.samples < 1 or max_searches < 0 or top_k < 1:
        fail("--samples and --top-k must be at least 1, --max-searches at least 0")
    return AgentOptions(model=model, adapter=adapter, search=search, corpus=corpus,
                        record=record, replay=replay, world=world,
                        load_in_4bit=load_in_4bit, config=cfg, chooser=step_chooser(choose))


def step_chooser(name: str):
    """The chooser a --choose name stands for, injected into the agent (None: perplexity)."""
    if name == "perplexity":  # the reward package is imported only when a judge chooses
        return None
    from reward.choosers import chooser_for

    return chooser_for(name)


def make_agent(store, opts, on_event=None):
    """Build the agent, turning every setup problem into one clear line."""
    from agent.llm.base import LLMError
    from agent.setup import SetupError, build_agent

    try:
        if opts.adapter and not Path(opts.adapter).exists():
            mv = store.model_version(opts.adapter)
            if mv is None or not mv.adapter_path:
                fail(f"adapter not found: {opts.adapter} (neither a directory nor a model version)")
            opts.adapter = mv.adapter_path
        return build_agent(opts, store, on_event=on_event)
    except (SetupError, LLMError, ValueError, OSError) as e:
        fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)


@app.command()
def ask(question: Optional[str] = typer.Argument(None, help="The question; omit for an interactive loop."),
        model: Optional[str] = MODEL, adapter: Optional[str] = ADAPTER,
        search: Optional[str] = SEARCH, corpus: Optional[str] = CORPUS,
        record: Optional[str] = RECORD, replay: Optional[str] = REPLAY,
        world: Optional[str] = WORLD, samples: Optional[int] = SAMPLES,
        max_searches: int = MAX_SEARCHES, top_k: int = TOP_K, fewshot: bool = FEWSHOT,
        load_in_4bit: bool = FOURBIT, choose: str = CHOOSE):
    """Ask one question (or several, interactively); the steps appear as they happen."""
    if question is not None and not question.strip():
        fail("the question is empty (omit it for the interactive prompt)")
    opts = agent_options(model, adapter, search, corpus, record, replay, world, samples,
                         max_searches, top_k, fewshot, load_in_4bit, choose=choose)
    ok = ask_many(open_store(), opts, [question] if question is not None else _prompt_loop())
    if question is not None and not ok:
        raise typer.Exit(2)


def ask_many(store, opts, questions, references=None) -> bool:
    """Run and show each question; True when every trajectory finished.

    A question whose earlier `ask` was interrupted (same question, same model) continues
    that trajectory from its last stored step instead of starting again.
    """
    from agent.live import LiveSteps, console, render_final

    agent = make_agent(store, opts, on_event=LiveSteps())
    run = store.get_or_create_run("ask", "ask", {})
    all_ok = True
    for i, q in enumerate(questions):
        if not q.strip():
            fail("the question is empty")
        tid = store.resume_interrupted(run.id, q, model=opts.model)
        resumed = tid is not None
        if not resumed:
            tid = store.start_trajectory(run.id, q, model=opts.model)
        Ctx.resume_hint = (f"trajectory {tid} is kept as interrupted; ask the same question "
                           "again to resume it")
        note = f"trajectory {tid}, resumed" if resumed else f"trajectory {tid}"
        console.print(f"[bold]Q:[/bold] {escape(q)}  [dim]({note})[/dim]")
        state = agent.run(q, tid, resume=resumed)
        render_final(state)
        if references:
            console.print(f"[dim]reference answer: {escape(str(references[i]))}[/dim]")
        all_ok = all_ok and state["status"] == "finished"
    return all_ok


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _prompt_loop():
    from rich.prompt import Prompt

    from agent import interrupt

    while True:
        try:  # no default: rich would show an empty one as "()"
            q = Prompt.ask("[bold cyan]question[/bold cyan] (empty to quit)")
        except (EOFError, KeyboardInterrupt, interrupt.Interrupted):
            interrupt.reset()  # Ctrl-C at the idle prompt just ends the loop
            return
        if not q.strip():
            return
        yield q


def plan_questions(store, questions: Optional[str], world: Optional[str], split: Optional[str],
                   limit: Optional[int]):
    """agent.questions_io.plan_questions (checks now, imports later), its errors one line."""
    from agent.questions_io import plan_questions as plan

    with one_line_errors(ValueError):
        return plan(store, questions, world, split, limit)


@app.command()
def collect(questions: Optional[str] = typer.Option(None, "--questions", "-q", help="Question set name or CSV/JSONL file."),
            split: Optional[str] = typer.Option(None, "--split", help="Only this split (train/dev/test)."),
            limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N questions."),
            per_question: int = typer.Option(1, "--per-question", help="Trajectories per question."),
            concurrency: int = typer.Option(4, "--concurrency", "-c", help="Trajectories run at once (batched on a local model)."),
            run_name_opt: Optional[str] = typer.Option(None, "--run", help="Run name (default: derived from the options, so re-running resumes)."),
            model: Optional[str] = MODEL, adapter: Optional[str] = ADAPTER,
            search: Optional[str] = SEARCH, corpus: Optional[str] = CORPUS,
            record: Optional[str] = RECORD, replay: Optional[str] = REPLAY,
            world: Optional[str] = WORLD, samples: Optional[int] = SAMPLES,
            max_searches: int = MAX_SEARCHES, top_k: int = TOP_K, fewshot: bool = FEWSHOT,
            load_in_4bit: bool = FOURBIT, workers: int = WORKERS,
            samples_for: Optional[list[str]] = SAMPLES_FOR, choose: str = CHOOSE):
    """Collect trajectories over a question set; re-running the same command resumes."""
    from agent.collect import collect as run_collect, items_for, run_name
    from agent.live import console
    from agent.progress import display

    store = open_store()
    opts = agent_options(model, adapter, search, corpus, record, replay, world, samples,
                         max_searches, top_k, fewshot, load_in_4bit, samples_for=samples_for,
                         choose=choose)
    load_questions = plan_questions(store, questions, world, split, limit)
    agent = make_agent(store, opts) if workers == 1 else check_workers(store, opts, workers)
    set_name, rows = load_questions()
    name = run_name_opt or run_name("collect", set=set_name, split=split, limit=limit,
                                    per_question=per_question, **opts.describe())
    run = store.get_or_create_run(name, "collect", {"questions": set_name, "split": split,
                                                    **opts.describe()})
    items = items_for(rows, per_question)
    if workers != 1:
        return collect_workers(store, opts, run, items, workers, concurrency)
    with display() as d:
        bar = d.bar("collect", total=len(items), done=len(store.finished_keys(run.id)))
        stats = run_collect(agent, run.id, items, concurrency=concurrency, model=opts.model,
                            on_done=bar.on_collected)
    store.finish_run(run.id)
    console.print(f"run [bold]{name}[/bold] (id {run.id}): {stats.finished} finished, "
                  f"{stats.failed} failed, {stats.skipped} skipped (already done)")


def check_workers(store, opts, workers: int) -> None:
    """Several workers: check the options here, load no model (each worker loads its own)."""
    from agent.setup import SetupError
    from agent.workers import prepare_options

    try:
        prepare_options(store, opts, workers)
    except (SetupError, ValueError, OSError) as e:
        fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)


def collect_workers(store, opts, run, items, workers: int, concurrency: int) -> None:
    """`collect --workers N`: N processes claim the run's items; one progress bar for all."""
    from agent.live import console
    from agent.workers import WorkersError, collect_in_workers, describe

    try:
        result = collect_in_workers(store, opts, run, items, workers, concurrency)
    except WorkersError as e:
        fail(str(e))
    store.finish_run(run.id)
    console.print(f"run [bold]{run.name}[/bold] (id {run.id}): {describe(result)}")


# --- loop: rank, train, eval, improve, report --------------------------------------------

MAX_BATCH_TOKENS = typer.Option(0, "--max-batch-tokens", min=0, help="Cap on padded tokens (rows x longest row) per training forward pass, which sets peak memory; rows of similar length are batched together. 0 = off.")


LOG_DIR = typer.Option("tensorboard", "--log-dir", help="TensorBoard's folder (one subfolder per run; view with `tensorboard --logdir DIR`).")


def check_report_to(value: str) -> str:
    """A --report-to value whose package is installed, or one error line before any work."""
    from trainer.tracking import TrackingError, check

    try:
        check(value)
    except TrackingError as e:
        fail(str(e))
    return value


def make_tracker(report_to: str, run_name: str, log_dir: str):
    """`train`'s Tracker for --report-to (`improve`'s Improver opens its own)."""
    from trainer.tracking import Tracker

    return Tracker(check_report_to(report_to), run_name, log_dir)


def make_judge(spec: str):
    """'rules' → None (the rule judge needs no model); anything else is a model spec."""
    from agent.llm.base import LLMError
    from agent.setup import make_judge as judge

    try:
        return judge(spec)
    except (LLMError, ValueError, OSError) as e:
        fail(f"judge: {e}")


@app.command()
def rank(run: str = typer.Option(..., "--run", help="Run name or id whose steps to rank."),
         judge: str = typer.Option("rules", "--judge", help="'rules', cite:MODEL or yesno:MODEL (a small model scoring by log-probabilities), or a judge model that writes rankings (local dir, openai:NAME, replay:PATH).")):
    """Rank the sampled alternatives of every step of a run (resumable)."""
    from agent.live import console
    from reward.ranker import rank_run

    store = open_store()
    r = store.get_run(run)
    if r is None:
        fail(f"no run named {run!r}")
    from agent.llm.base import LLMError
    from agent.progress import display

    llm = make_judge(judge)
    try:
        with display() as d:
            counts = rank_run(store, r.id, llm, judge, progress=d.bar("rank").on_count)
    except LLMError as e:
        fail(f"judge: {e}")
    console.print(f"ranked steps of run {r.name}: {counts}")


@app.command()
def train(run: Optional[str] = typer.Option(None, "--run", help="Train on the ranked steps of this run."),
          alpaca: Optional[str] = typer.Option(None, "--alpaca", help="Or on an Alpaca-format JSONL (instruction, input, output)."),
          model: str = typer.Option(..., "--model", "-m", help="Base model (local dir or hub id)."),
          judge: str = typer.Option("rules", "--judge", help="Whose rankings pick the best sample."),
          use_unranked: bool = typer.Option(False, "--use-unranked", help="Use the chosen sample of unranked steps."),
          out: str = typer.Option(..., "--out", help="Output directory for the adapter (or model)."),
          name: Optional[str] = typer.Option(None, "--name", help="Model version name (default: the output dir)."),
          epochs: float = typer.Option(1.0, "--epochs"), lr: float = typer.Option(2e-4, "--lr"),
          full: bool = typer.Option(False, "--full", help="Full fine-tuning instead of LoRA."),
          load_in_4bit: bool = FOURBIT, max_batch_tokens: int = MAX_BATCH_TOKENS,
          processes: int = typer.Option(1, "--processes", help="Train on this many GPUs (processes, DDP under accelerate launch); the global batch grows with them."),
          report_to: str = typer.Option("none", "--report-to", help="Where TRL reports training: none, tensorboard or wandb."),
          log_dir: str = LOG_DIR):
    """Fine-tune a LoRA adapter (or the full model) and record it as a model version."""
    from agent.live import console
    from agent.progress import display
    from reward.ranker import prompt_version
    from trainer.config import TrainConfig
    from trainer.examples import examples_from_steps, load_alpaca
    from trainer.sft import TrainError, train as run_train

    store = open_store()
    if bool(run) == bool(alpaca):
        fail("give exactly one of --run and --alpaca")
    Ctx.resume_hint = "training stopped; no model version was recorded: re-run the same command to train again"
    step_ids: list[int] = []
    if run:
        r = store.get_run(run)
        if r is None:
            fail(f"no run named {run!r}")
        examples = examples_from_steps(store.steps_of_run(r.id), judge, prompt_version(judge),
                                       use_unranked=use_unranked)
        step_ids = [e.step_id for e in examples if e.step_id is not None]
    else:
        try:
            examples = load_alpaca(alpaca)
        except (ValueError, OSError) as e:
            fail(str(e))
    tracker = make_tracker(report_to, name or out, log_dir)
    cfg = TrainConfig(base_model=model, output_dir=out, method="full" if full else "lora",
                      epochs=epochs, learning_rate=lr, load_in_4bit=load_in_4bit,
                      max_batch_tokens=max_batch_tokens, **tracker.train_args())
    try:
        if processes != 1:  # one process per GPU; the main one saves, this one registers
            from trainer.distributed import launch_train

            result = launch_train(examples, cfg, processes)
        else:
            with display() as d:
                result = run_train(examples, cfg, on_log=d.bar("train", total=epochs).on_train_log)
    except TrainError as e:
        fail(str(e))
    finally:
        tracker.close()
    from dataclasses import asdict

    mv = store.add_model_version(name or out, base=model, adapter_path=str(result.output_dir),
                                 step_ids=step_ids, config=asdict(cfg),
                                 metrics={"train": result.metrics})
    console.print(f"model version [bold]{mv.name}[/bold]: {len(examples)} examples, "
                  f"loss {result.metrics.get('train_loss')}")


@app.command("eval")
def eval_cmd(questions: Optional[str] = typer.Option(None, "--questions", "-q", help="Question set name or CSV/JSONL file (with answers)."),
             split: Optional[str] = typer.Option(None, "--split"), limit: Optional[int] = typer.Option(None, "--limit"),
             runs: int = typer.Option(1, "--runs", help="Runs per question (sampled when > 1); mean ± std over runs."),
             judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Also ask this LLM whether each answer implies the reference."),
             concurrency: int = typer.Option(4, "--concurrency", "-c"),
             as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
             model: Optional[str] = MODEL, adapter: Optional[str] = ADAPTER,
             search: Optional[str] = SEARCH, corpus: Optional[str] = CORPUS,
             record: Optional[str] = RECORD, replay: Optional[str] = REPLAY,
             world: Optional[str] = WORLD, max_searches: int = MAX_SEARCHES, top_k: int = TOP_K,
             fewshot: bool = FEWSHOT, load_in_4bit: bool = FOURBIT):
    """Run the agent on questions with reference answers and score it."""
    import json as _json

    from agent.collect import run_name
    from agent.live import console
    from agent.progress import display
    from reward.evaluate import evaluate

    store = open_store()
    if runs < 1:
        fail("--runs must be at least 1")
    opts = agent_options(model, adapter, search, corpus, record, replay, world, 1,
                         max_searches, top_k, fewshot, load_in_4bit)
    opts.config.greedy = runs == 1
    load_questions = plan_questions(store, questions, world, split, limit)
    agent = make_agent(store, opts)
    set_name, rows = load_questions()
    if not any(q.answer for q in rows):
        fail(f"question set {set_name!r} has no reference answers to evaluate against")
    name = run_name("eval", set=set_name, split=split, limit=limit, runs=runs, **opts.describe())
    run = store.get_or_create_run(name, "eval", {"questions": set_name, **opts.describe()})
    judge = make_judge(judge_model) if judge_model else None
    from agent.llm.base import LLMError

    try:
        with display(as_json) as d:
            bar = d.bar("eval", total=len(rows) * runs)
            summary = evaluate(agent, run.id, rows, runs=runs, concurrency=concurrency,
                               judge=judge, model=opts.model, on_done=bar.on_collected)
    except LLMError as e:  # the judge failed; finished trajectories stay stored for a re-run
        fail(f"judge: {e}")
    store.finish_run(run.id)
    if as_json:
        typer.echo(_json.dumps({"run": name, **summary.to_dict()}))
        return
    from rich.table import Table

    table = Table(title=f"eval {set_name} ({len(rows)} questions × {runs} runs)")
    for col in ("metric", "mean", "std"):
        table.add_column(col)
    table.add_row("exact match", f"{summary.exact_mean:.3f}", f"{summary.exact_std:.3f}")
    table.add_row("token F1", f"{summary.f1_mean:.3f}", "")
    if summary.judge_mean is not None:
        table.add_row("LLM judge", f"{summary.judge_mean:.3f}", f"{summary.judge_std or 0:.3f}")
    console.print(table)


@app.command()
def improve(iterations: int = typer.Option(3, "--iterations", "-n"),
            questions: Optional[str] = typer.Option(None, "--questions", "-q", help="Question set (train and dev splits)."),
            name: Optional[str] = typer.Option(None, "--name", help="Improve run name; the same name resumes."),
            model: Optional[str] = MODEL, world: Optional[str] = WORLD,
            base_dir: Optional[str] = typer.Option(None, "--base", help="With --model openai:NAME: the local model directory the server serves (default: the --world's model). Each adapter trains on it here and is loaded into the server (vLLM runtime LoRA, docs/SCALING.md)."),
            search: Optional[str] = SEARCH, corpus: Optional[str] = CORPUS,
            judge: str = typer.Option("rules", "--judge", help="'rules', cite:MODEL, yesno:MODEL or a judge model spec (see `rank --help`)."),
            teacher: Optional[str] = typer.Option(None, "--teacher", help="Grow with this stronger model; its steps train --model."),
            samples: int = typer.Option(4, "--samples", "-k", help="Alternatives per step in Grow."),
            per_question: int = typer.Option(1, "--per-question"),
            grow_choose: str = typer.Option("perplexity", "--grow-choose", help="Which of the K samples a grow trajectory continues with: 'perplexity' (the lowest, the paper) or 'rules' (the rule judge's pick)."),
            trajectories: str = typer.Option("all", "--trajectories", help="Which grow trajectories train: 'all' (the paper) or 'clean' (only those whose every taken step the judge passes)."),
            grow_questions: Optional[int] = typer.Option(None, "--grow-questions", help="Training questions per iteration (default all)."),
            eval_questions: Optional[int] = typer.Option(None, "--eval-questions", help="Held-out questions (default all)."),
            eval_split: str = typer.Option("dev", "--eval-split"),
            eval_runs: int = typer.Option(1, "--eval-runs"),
            concurrency: int = typer.Option(8, "--concurrency", "-c"),
            max_searches: int = MAX_SEARCHES, top_k: int = TOP_K,
            epochs: float = typer.Option(1.0, "--epochs"), lr: float = typer.Option(2e-4, "--lr"),
            max_batch_tokens: int = MAX_BATCH_TOKENS,
            workdir: Optional[str] = typer.Option(None, "--workdir", help="Where adapters and example files go (default: runs/ in the data folder, beside the default database)."),
            workers: int = WORKERS,
            train_processes: int = typer.Option(1, "--train-processes", help="Train on this many GPUs (processes, DDP under accelerate launch); the global batch grows with them."),
            load_in_4bit: bool = typer.Option(False, "--4bit", help="4-bit rollouts of --model and QLoRA training (bitsandbytes, CUDA): the loop fits a 24 GB card."),
            samples_for: Optional[list[str]] = SAMPLES_FOR,
            report_to: str = typer.Option("none", "--report-to", help="Where TRL reports each iteration's training: none, tensorboard or wandb."),
            log_dir: str = LOG_DIR):
    """Grow → rank → build → train → evaluate → promote, N times (re-run to resume)."""
    from agent.live import console
    from agent.llm.base import LLMError
    from agent.progress import display
    from agent.setup import SetupError
    from agent.workers import WorkersError
    from trainer.improve import ImproveOptions, Improver
    from trainer.report import results_table
    from trainer.sft import TrainError

    opts = ImproveOptions(
        model=model, world=world, search=search, corpus=corpus, questions=questions, name=name,
        iterations=iterations, judge=judge, teacher=teacher, samples=samples,
        samples_by_kind=samples_by_kind(samples_for), per_question=per_question,
        grow_choose=grow_choose, trajectories=trajectories, grow_questions=grow_questions,
        eval_questions=eval_questions, eval_split=eval_split, eval_runs=eval_runs,
        concurrency=concurrency, max_searches=max_searches, top_k=top_k, epochs=epochs,
        learning_rate=lr, max_batch_tokens=max_batch_tokens, workdir=workdir or default_workdir(),
        workers=workers,
        train_processes=train_processes, load_in_4bit=load_in_4bit, base_dir=base_dir,
        report_to=check_report_to(report_to), log_dir=log_dir)
    with one_line_errors(ValueError):
        opts.check()  # before the store is opened: nothing written
    with display() as d:
        improver = Improver(open_store(), opts, log=console.print, display=d)
        with one_line_errors(SetupError, LLMError, ValueError, OSError):  # before anything is written
            improver.prepare()
        with one_line_errors(SetupError, LLMError, WorkersError, TrainError):
            results = improver.run()
    console.print(results_table(improver.cfg, results))


def default_workdir() -> str:
    from store.paths import data_dir

    return str(data_dir() / "runs")


@app.command()
def report(name: Optional[str] = typer.Option(None, "--name", help="Improve run (default: the latest)."),
           out: Optional[str] = typer.Option(None, "--out", help="PNG file to write (default improve.png when --html is not given)."),
           html: Optional[str] = typer.Option(None, "--html", help="Also (or only) write one self-contained HTML page: accuracy, judge keep-rate, stage times, flipped questions and their trajectories side by side.")):
    """Report on an improve run: accuracy per iteration as a PNG, and/or the HTML page."""
    from trainer.history import improve_run

    store = open_store()
    run = improve_run(store, name)
    if run is None:
        fail(f"no improve run {name!r}" if name else "no improve run in this database")
    try:
        if html:
            from trainer.report_page import write_html

            typer.echo(f"wrote {write_html(store, run, html)}")
        if out or not html:
            from trainer.report import plot_improve

            typer.echo(f"wrote {plot_improve(store, run, out or 'improve.png')}")
            from trainer.stage_stats import format_rows

            rows = store.stage_stats(run.id)
            if rows:  # where each iteration's time and memory went (the page shows its own)
                typer.echo("\n".join(format_rows(rows)))
    except (ValueError, OSError) as e:
        fail(str(e))


# --- export and browse ---------------------------------------------------------------------

export_app = typer.Typer(help="Export the improved model (merged) or the collected data (a datasets folder).",
                         no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("model")
def export_model_cmd(out: str = typer.Option(..., "--out", help="Folder for the merged model."),
                     iteration: Optional[int] = typer.Option(None, "--iteration", "-i", help="Which iteration of the improve run (default: the last promoted)."),
                     name: Optional[str] = typer.Option(None, "--name", help="Improve run (default: the latest)."),
                     version: Optional[str] = typer.Option(None, "--version", help="Or any model version by name (e.g. one `train` made).")):
    """Write a plain Hugging Face model: the LoRA folded into the base, tokenizer and chat
    template included (transformers and vLLM load it as is)."""
    from agent.progress import display
    from trainer.export import ExportError, export_model, model_version_for
    from trainer.history import improve_run

    store = open_store()
    try:
        if version:
            mv = store.model_version(version)
            if mv is None:
                fail(f"no model version {version!r}")
        else:
            run = improve_run(store, name)
            if run is None:
                fail(f"no improve run {name!r}" if name else "no improve run in this database (or pass --version)")
            mv = model_version_for(store, run, iteration)
        with display() as d:
            bar = d.bar("export model")
            path = export_model(mv, out, stage=lambda s: bar.update(info=s))
    except ExportError as e:
        fail(str(e))
    typer.echo(f"wrote {path} ({mv.name}{', merged' if mv.adapter_path else ', base as is'})")


@export_app.command("data")
def export_data_cmd(run: Optional[str] = typer.Option(None, "--run", help="An improve run (all its grow runs) or any collect run; default the latest improve run."),
                    out: str = typer.Option(..., "--out", help="Folder for the dataset (load with datasets.load_from_disk)."),
                    judge: Optional[str] = typer.Option(None, "--judge", help="Whose rankings (default: the run's judge, else 'rules').")):
    """Write the ranked steps and the SFT examples as a Hugging Face datasets folder (+ JSONL)."""
    from agent.progress import display
    from trainer.export import ExportError, export_data
    from trainer.history import improve_run

    store = open_store()
    r = store.get_run(run) if run else improve_run(store)
    if r is None:
        fail(f"no run named {run!r}" if run else "no improve run in this database (pass --run)")
    try:
        with display() as d:
            bar = d.bar("export data")
            counts = export_data(store, r, out, judge=judge, stage=lambda s: bar.update(info=s))
    except ExportError as e:
        fail(str(e))
    typer.echo(f"wrote {out}: {counts['steps']} ranked steps, {counts['sft']} SFT examples")


@app.command()
def browse(port: int = typer.Option(8001, "--port", "-p"),
           open_browser: bool = typer.Option(True, "--open/--no-open", help="Open a web browser on the page."),
           dry_run: bool = typer.Option(False, "--dry-run", help="Print the datasette command and metadata as JSON; start nothing.")):
    """Open the store in Datasette with canned queries: worst questions, steps the judge
    rejected, searches that returned nothing, the slowest LLM calls."""
    from store.browse import BrowseError, datasette_command, metadata, sqlite_path

    try:
        db = sqlite_path(Ctx.db)
        meta = metadata(db)
        if dry_run:
            return _print_json({"command": datasette_command(db, "METADATA.json", port, open_browser),
                                "metadata": meta})
        import subprocess
        import tempfile

        with tempfile.TemporaryDirectory(prefix="restreact-browse-") as tmp:
            meta_file = Path(tmp) / "metadata.json"
            meta_file.write_text(json.dumps(meta, indent=2))
            cmd = datasette_command(db, str(meta_file), port, open_browser)
            try:
                code = subprocess.call(cmd)
            except KeyboardInterrupt:  # Ctrl-C is how one stops a server
                code = 0
            raise typer.Exit(code)
    except BrowseError as e:
        fail(str(e))




# --- pocket world ---------------------------------------------------------------------------

pocket_app = typer.Typer(help="The offline pocket world: build worlds, warm-start the pocket model.",
                         no_args_is_help=True)
app.add_typer(pocket_app, name="pocket")


@pocket_app.command("build")
def pocket_build(seed: int = typer.Option(7, "--seed", help="World seed: same seed, same bytes."),
                 out: str = typer.Option(..., "--out", help="Output directory."),
                 size: str = typer.Option("default", "--size", help="World size preset.")):
    """Generate a fictional world: corpus.jsonl, questions.jsonl, world.json, MANIFEST.json."""
    from agent.worlds import get_world

    with one_line_errors(ValueError):
        info = get_world("pocket").build(seed, Path(out), size=size)
    typer.echo(json.dumps(info.get("counts", info), default=str))


DEMO_QUESTION_SEED = 0  # which questions the demo asks: the same ones on every machine


@pocket_app.command("demo")
def pocket_demo(n: int = typer.Option(1, "-n", help="How many questions to ask."),
                split: str = typer.Option("test", "--split"),
                seed: int = typer.Option(DEMO_QUESTION_SEED, "--seed", help="Picks the n questions from the split: the same seed, the same questions."),
                samples: Optional[int] = SAMPLES,
                model: Optional[str] = typer.Option(None, "--model", help="Another policy on the same world, e.g. 'smollm2' (the real SmolLM2-135M-Instruct with its shipped warm-start adapter)."),
                adapter: Optional[str] = typer.Option(None, "--adapter", help="LoRA adapter for --model (default for smollm2: the shipped warm start)."),
                compare: Optional[str] = typer.Option(None, "--compare", help="An adapter directory or model version (e.g. an improve iteration, 'improve:NAME:it3'): answer the same questions with the warm start and with it, side by side.")):
    """Ask the pocket model questions about a world it never trained on, step by step
    (with --compare: the warm start and an adapter on the same questions, side by side)."""
    from agent.worlds.pocket.assets import SMOLLM2_ADAPTER

    if n < 1:
        fail("-n must be at least 1")
    if model == "smollm2" and adapter is None and (SMOLLM2_ADAPTER / "adapter_config.json").is_file():
        adapter = str(SMOLLM2_ADAPTER)
    store = open_store()
    rows = demo_questions(store, split, n, seed)
    if compare:
        base = agent_options(model, adapter, None, None, None, None, "pocket", samples, 10, 3, False, False)
        other = agent_options(model, compare, None, None, None, None, "pocket", samples, 10, 3, False, False)
        raise typer.Exit(compare_answers(store, rows, base, other, compare, seed))
    opts = agent_options(model, adapter, None, None, None, None, "pocket", samples, 10, 3, False, False)
    ok = ask_many(store, opts, [q.text for q in rows], [q.answer for q in rows])
    raise typer.Exit(0 if ok else 2)


def demo_questions(store, split: str, n: int, seed: int) -> list:
    """`n` questions of the pocket world's `split`, drawn by `seed` (never picked by hand)."""
    import random

    from agent.worlds import get_world

    rows = store.questions(get_world("pocket").ensure_questions(store), split=split)
    if not rows:
        fail(f"the pocket world has no {split!r} questions")
    return random.Random(seed).sample(rows, min(n, len(rows)))


def compare_answers(store, rows, base_opts, other_opts, other_name: str, seed: int) -> int:
    """Answer `rows` with both policies (greedy, quietly), show the answers side by side with
    the reference and each one's exact-match count; the exit code is 0 when all finished."""
    from rich.table import Table

    from agent.live import console
    from reward.autoeval import exact_match

    run = store.get_or_create_run("ask", "ask", {})
    other = make_agent(store, other_opts)  # first: a bad adapter name fails before any model loads
    agents = [make_agent(store, base_opts), other]
    table = Table(title=f"{len(rows)} {rows[0].split} questions drawn with seed {seed}")
    for col in ("question", "reference", "warm start", escape(other_name)):
        table.add_column(col, overflow="fold")
    right, all_ok = [0, 0], True
    for q in rows:
        cells = []
        for i, (agent, opts) in enumerate(zip(agents, (base_opts, other_opts))):
            tid = store.start_trajectory(run.id, q.text, model=opts.model)
            state = agent.run(q.text, tid)
            all_ok = all_ok and state["status"] == "finished"
            answer = state.get("final_answer") or f"({state['status']})"
            ok = exact_match(answer, q.answer)
            right[i] += ok
            cells.append(("[green]✓[/green] " if ok else "[red]✗[/red] ") + escape(answer))
        table.add_row(escape(q.text), escape(str(q.answer)), *cells)
    console.print(table)
    console.print(f"exact match: warm start {right[0]}/{len(rows)}, {escape(other_name)} {right[1]}/{len(rows)}")
    return 0 if all_ok else 2


@pocket_app.command("pretrain")
def pocket_pretrain(out: str = typer.Option("data/pocket/model", "--out"),
                    worlds: int = typer.Option(1000, "--worlds", help="Fresh worlds for seed data."),
                    epochs: float = typer.Option(2.0, "--epochs"),
                    error_rate: float = typer.Option(0.3, "--error-rate", help="Seed policy's mistake rate."),
                    questions_per_world: int = typer.Option(20, "--questions-per-world"),
                    batch: int = typer.Option(128, "--batch"),
                    workers: int = typer.Option(0, "--workers", help="Processes for seed data (0 = all cores)."),
                    time_limit: float = typer.Option(0, "--time-limit", help="Stop training after this many seconds (still saves)."),
                    lr: float = typer.Option(2e-3, "--lr"),
                    init_from: str = typer.Option("", "--init-from", help="Continue training this pocket model (keeps its tokenizer)."),
                    split_digits: bool = typer.Option(False, "--split-digits", help="New tokenizer: one token per digit, so years are copied digit by digit (ignored with --init-from)."),
                    seed: int = typer.Option(0, "--seed", help="Picks the seed worlds: a new seed gives worlds never trained on."),
                    loss: str = typer.Option("full", "--loss", help="'full' (whole sequence) or 'completion' (the steps' outputs only)."),
                    doc_fraction: float = typer.Option(0.3, "--doc-fraction", min=0, help="Corpus documents mixed in, per seed step."),
                    untie: bool = typer.Option(False, "--untie", help="With --init-from: give the model its own output matrix (untied embeddings)."),
                    reinit_years: bool = typer.Option(False, "--reinit-years", help="With --init-from: re-draw the one-token years' embedding rows, as spread out as names'."),
                    year_boost: int = typer.Option(1, "--year-boost", min=1, help="Each seed step of --year-boost-kinds that states a year appears this many times."),
                    year_boost_kinds: str = typer.Option("summarize", "--year-boost-kinds", help="Comma-separated step kinds --year-boost repeats (summarize, answer, ...)."),
                    mistake_weights: str = typer.Option("", "--mistake-weights", help="KIND=W,...: the seed policy's mistake chance at a step of KIND is --error-rate x W, at most 1 (defaults: decide 0.55, summarize 0.8, answer 0.45, relevance and grounding 0.15).")):
    """Warm-start the pocket model from scratch (a GPU makes this minutes instead of hours)."""
    from store.records import STEP_KINDS
    from agent.worlds.pocket.policy import parse_kind_weights
    from trainer.pocket import PocketConfig, pretrain

    if loss not in ("full", "completion"):
        fail(f"--loss must be 'full' or 'completion', not {loss!r}")
    if (untie or reinit_years) and not init_from:
        fail("--untie and --reinit-years change an existing model: give --init-from")
    kinds = tuple(k.strip() for k in year_boost_kinds.split(",") if k.strip())
    if not kinds or set(kinds) - set(STEP_KINDS):
        fail(f"--year-boost-kinds takes step kinds from {sorted(STEP_KINDS)}, not {year_boost_kinds!r}")
    with one_line_errors(ValueError):
        weights = parse_kind_weights(mistake_weights, option="--mistake-weights")
    cfg = PocketConfig(worlds=worlds, epochs=epochs, error_rate=error_rate, mistake_weights=weights,
                       questions_per_world=questions_per_world, batch=batch, workers=workers,
                       time_limit_s=time_limit, learning_rate=lr, init_from=init_from, seed=seed,
                       split_digits=split_digits, loss=loss, doc_fraction=doc_fraction,
                       untie=untie, reinit_years=reinit_years, year_boost=year_boost,
                       year_boost_kinds=kinds)
    from agent.progress import display

    with display() as d:
        bar = d.bar("pretrain", total=epochs)
        bar.update(info="seed data")
        metrics = pretrain(cfg, Path(out), log=typer.echo, on_train_log=bar.on_train_log)
    typer.echo(json.dumps({k: v for k, v in metrics.items() if k != "config"}, default=str))


@pocket_app.command("distill")
def pocket_distill(out: str = typer.Option(..., "--out", help="Folder for the LoRA adapter and its warmstart.json."),
                   model: str = typer.Option("smollm2", "--model", help="The student: any local model spec (smollm2, gguf:PATH, a folder)."),
                   teacher: str = typer.Option("", "--teacher", help="A model spec that walks the worlds; default: the world's scripted reader."),
                   worlds: int = typer.Option(150, "--worlds", min=1, help="Fresh training worlds the teacher walks."),
                   questions_per_world: int = typer.Option(20, "--questions-per-world", min=1),
                   error_rate: float = typer.Option(0.3, "--error-rate", min=0, max=1, help="The scripted teacher's mistake rate."),
                   mistake_weights: str = typer.Option("summarize=2,answer=1.5", "--mistake-weights", help="KIND=W,...: the scripted teacher's mistake chance per step kind is --error-rate x W."),
                   epochs: float = typer.Option(1.0, "--epochs"),
                   lr: float = typer.Option(5e-4, "--lr"),
                   lora_r: int = typer.Option(8, "--lora-r", min=1),
                   batch: int = typer.Option(16, "--batch", min=1),
                   workers: int = typer.Option(0, "--workers", help="Processes for the teacher's walks (0 = all cores)."),
                   seed: int = typer.Option(1, "--seed", help="Picks the training worlds."),
                   time_limit: float = typer.Option(0.0, "--time-limit", min=0, help="Stop training after this many seconds and still save the adapter (0 = no limit).")):
    """Warm-start a pretrained model (SmolLM2 by default) on a teacher's steps: LoRA distillation."""
    from agent.worlds.pocket.policy import parse_kind_weights
    from trainer.warmstart import DistillConfig, distill

    cfg = DistillConfig(model=model, worlds=worlds, questions_per_world=questions_per_world,
                        teacher=teacher, error_rate=error_rate,
                        mistake_weights=parse_kind_weights(mistake_weights, option="--mistake-weights"), lora_r=lora_r,
                        learning_rate=lr, epochs=epochs, batch=batch, workers=workers, seed=seed,
                        time_limit_s=time_limit)
    metrics = distill(cfg, Path(out), log=typer.echo)
    typer.echo(json.dumps({k: v for k, v in metrics.items() if k != "config"}, default=str))



def _check_loads(spec: str, what: str) -> None:
    """A local model spec whose config does not load fails here, in a second, instead of after
    minutes of sampling; other specs (scripted:, openai:, ...) fail when first used."""
    if ":" in spec and not spec.startswith(("hf:", "gguf:")):
        return
    from transformers import AutoConfig

    from agent.llm.factory import local_model_path

    try:
        AutoConfig.from_pretrained(local_model_path(spec))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load {what} {spec!r}: {e}") from None


@pocket_app.command("judge-distill")
def pocket_judge_distill(policy: str = typer.Option(..., "--policy", help="The model whose sampled steps the judge learns to grade (e.g. runs/smol-warm)."),
                         out: str = typer.Option(..., "--out", help="Folder for the judge's LoRA adapter, its judge_warmstart.json (the graded samples go beside it, OUT.samples.db)."),
                         model: str = typer.Option("smollm2", "--model", help="The judge's base model: any local model spec."),
                         merged: str = typer.Option("", "--merged", help="Also write the judge merged into its base here, for --judge yesno-strict:FOLDER."),
                         worlds: int = typer.Option(4, "--worlds", min=1, help="Fresh training worlds the policy samples on."),
                         questions_per_world: int = typer.Option(150, "--questions-per-world", min=1),
                         samples: int = typer.Option(4, "--samples", min=2, help="Sampled outputs per step."),
                         concurrency: int = typer.Option(64, "--concurrency", min=1, help="Trajectories sampled at once."),
                         max_examples: int = typer.Option(20000, "--max-examples", min=1),
                         epochs: float = typer.Option(1.0, "--epochs"),
                         lr: float = typer.Option(3e-4, "--lr"),
                         lora_r: int = typer.Option(8, "--lora-r", min=1),
                         batch: int = typer.Option(32, "--batch", min=1),
                         time_limit: float = typer.Option(0.0, "--time-limit", min=0, help="Stop training after this many seconds and still save the adapter (0 = no limit).")):
    """Warm-start the yes/no judge: the policy's samples on training worlds, graded by their oracle."""
    from agent.llm.base import LLMError
    from agent.llm.factory import local_model_path
    from trainer.judge_warmstart import JudgeDistillConfig, distill_judge
    from trainer.sft import TrainError

    cfg = JudgeDistillConfig(policy=policy, model=model, worlds=worlds,
                             questions_per_world=questions_per_world, samples=samples,
                             concurrency=concurrency,
                             max_examples=max_examples, lora_r=lora_r, learning_rate=lr,
                             epochs=epochs, batch=batch, time_limit_s=time_limit)
    try:
        _check_loads(model, "the judge's base model")
        _check_loads(policy, "the policy")
        record = distill_judge(cfg, Path(out), log=typer.echo)
    except (ValueError, TrainError, LLMError, OSError) as e:
        raise SystemExit(f"error: {e}")
    if merged:
        from trainer.warmstart import merge

        merge(local_model_path(model), out, Path(merged))
        typer.echo(f"merged judge: {merged} (use --judge yesno-strict:{merged})")
    typer.echo(json.dumps({k: v for k, v in record.items() if k not in ("judge", "by_kind")}, default=str))



def quiet_library_deprecations() -> None:
    """Deprecation notices that libraries raise about each other's calls (peft and TRL calling
    renamed transformers methods) are for those libraries' authors; on a user's terminal they
    read like errors, so the CLI keeps them off stderr. Our own warnings still show."""
    import warnings

    for lib in ("transformers", "peft", "trl", "torch"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=lib + r"(\.|$)")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=lib + r"(\.|$)")


def main() -> None:
    from agent import interrupt

    quiet_library_deprecations()
    with interrupt.handling():
        try:
            app()
        except interrupt.Interrupted as e:
            _leave_interrupted(e.signum)
        except Exception:
            # A signal that lands inside a library's lazy import comes back as that library's
            # ImportError or RuntimeError. Once a stop was requested, it is still the stop.
            if not interrupt.requested():
                raise
            _leave_interrupted(interrupt.requested_signal())


def _leave_interrupted(signum: int) -> None:
    """One line, and the exit code shells expect (130 for Ctrl-C, 143 for SIGTERM).

    Typer has finished with the command: its trajectories are marked, its store writes are
    committed or rolled back. The process leaves without the interpreter's shutdown: a model
    thread may still be inside a prefill, and finalising under it aborts. Nothing is left to
    write."""
    typer.echo(f"\ninterrupted ({signal_name(signum)}): {Ctx.resume_hint}", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)


def signal_name(signum: int) -> str:
    import signal

    return {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}.get(signum, f"signal {signum}")


if __name__ == "__main__":
    main()
