"""restreact: a self-improving web-search QA agent (ReST meets ReAct, on open parts).

Every command stores what it does in one SQL database (--db / RESTREACT_DB, default
./restreact.db). Heavy libraries (torch, transformers, trl, peft) are imported inside the
commands that need them, so `--help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
questions_app = typer.Typer(help="Import and list question sets.", no_args_is_help=True)
app.add_typer(questions_app, name="questions")


class Ctx:
    db: Optional[str] = None


def fail(message: str, code: int = 1) -> None:
    """One clear line on stderr and a non-zero exit: how every user error ends."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def open_store():
    from store.api import Store
    from store.db import StoreError

    try:
        return Store(Ctx.db)
    except StoreError as e:
        fail(str(e))


@app.callback()
def _root(db: Optional[str] = typer.Option(None, "--db", envvar="RESTREACT_DB",
                                           help="Database URL or SQLite file (default ./restreact.db).")):
    Ctx.db = db


# --- store browsing: logs, show, questions ---------------------------------------------


# --- agent: ask, collect -----------------------------------------------------------------

# Options shared by every command that runs the agent.
MODEL = typer.Option(None, "--model", "-m", help="Local model dir or hub id, openai:NAME for an OpenAI-compatible server (OPENAI_BASE_URL), or replay:CASSETTE.")
ADAPTER = typer.Option(None, "--adapter", help="LoRA adapter directory (or a model version name) on top of --model.")
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


def agent_options(model, adapter, search, corpus, record, replay, world, samples, max_searches,
                  top_k, fewshot, load_in_4bit, default_samples: int = 1):
    from agent.setup import AgentOptions
    from agent.state import AgentConfig

    if record and replay:
        fail("--record and --replay cannot be used together")
    cfg = AgentConfig(max_searches=max_searches, top_k=top_k,
                      samples=samples or default_samples, fewshot=fewshot)
    if cfg.samples < 1 or max_searches < 0 or top_k < 1:
        fail("--samples and --top-k must be at least 1, --max-searches at least 0")
    return AgentOptions(model=model, adapter=adapter, search=search, corpus=corpus,
                        record=record, replay=replay, world=world,
                        load_in_4bit=load_in_4bit, config=cfg)


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
        load_in_4bit: bool = FOURBIT):
    """Ask one question (or several, interactively); the steps appear as they happen."""
    from agent.live import LiveSteps, console, render_final

    store = open_store()
    opts = agent_options(model, adapter, search, corpus, record, replay, world, samples,
                         max_searches, top_k, fewshot, load_in_4bit)
    view = LiveSteps()
    agent = make_agent(store, opts, on_event=view)
    run = store.get_or_create_run("ask", "ask", {})
    questions = [question] if question else _prompt_loop()
    for q in questions:
        if not q.strip():
            fail("the question is empty")
        tid = store.start_trajectory(run.id, q, model=opts.model)
        console.print(f"[bold]Q:[/bold] {q}  [dim](trajectory {tid})[/dim]")
        state = agent.run(q, tid)
        render_final(state)
        if state["status"] != "finished" and question:
            raise typer.Exit(2)


def _prompt_loop():
    from rich.prompt import Prompt

    while True:
        try:
            q = Prompt.ask("[bold cyan]question[/bold cyan] (empty to quit)", default="")
        except (EOFError, KeyboardInterrupt):
            return
        if not q.strip():
            return
        yield q


def resolve_questions(store, questions: Optional[str], world: Optional[str], split: Optional[str],
                      limit: Optional[int]):
    """A question set name, or a CSV/JSONL file imported (idempotently) as a set."""
    from agent.questions_io import QuestionFileError, read_question_file

    if questions is None and world == "pocket":
        from agent.pocket.assets import ensure_pocket_questions

        questions = ensure_pocket_questions(store)
    if questions is None:
        fail("--questions SET_OR_FILE is required")
    path = Path(questions)
    if path.suffix.lower() in (".csv", ".jsonl", ".json") or path.is_file():
        if not path.is_file():
            fail(f"question file not found: {questions}")
        try:
            rows = read_question_file(path)
        except QuestionFileError as e:
            fail(str(e))
        store.import_questions(path.stem, rows, source=str(path))
        questions = path.stem
    elif not store.has_question_set(questions):
        fail(f"no question set named {questions!r} (import one with: questions import FILE --set NAME)")
    rows = store.questions(questions, split=split, limit=limit)
    if not rows:
        fail(f"question set {questions!r}{f' split {split!r}' if split else ''} has no questions")
    return questions, rows


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
            load_in_4bit: bool = FOURBIT):
    """Collect trajectories over a question set; re-running the same command resumes."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from agent.collect import collect as run_collect, items_for, run_name
    from agent.live import console

    store = open_store()
    opts = agent_options(model, adapter, search, corpus, record, replay, world, samples,
                         max_searches, top_k, fewshot, load_in_4bit)
    set_name, rows = resolve_questions(store, questions, world, split, limit)
    agent = make_agent(store, opts)
    name = run_name_opt or run_name("collect", set=set_name, split=split, limit=limit,
                                    per_question=per_question, **opts.describe())
    run = store.get_or_create_run(name, "collect", {"questions": set_name, "split": split,
                                                    **opts.describe()})
    items = items_for(rows, per_question)
    t0 = time.perf_counter()
    with Progress(TextColumn("[bold]collect[/bold]"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("collect", total=len(items), rate="")
        bar.update(task, completed=len(store.finished_keys(run.id)))

        def tick(stats):
            rate = stats.done / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, advance=1, rate=f"{rate:.2f} traj/s")

        stats = run_collect(agent, run.id, items, concurrency=concurrency, model=opts.model,
                            on_done=tick)
    store.finish_run(run.id)
    console.print(f"run [bold]{name}[/bold] (id {run.id}): {stats.finished} finished, "
                  f"{stats.failed} failed, {stats.skipped} skipped (already done)")


# --- loop: rank, train, eval, improve, report --------------------------------------------


# --- pocket world ---------------------------------------------------------------------------


def main() -> None:
    app()


if __name__ == "__main__":
    main()
