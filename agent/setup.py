"""From command-line options to a ready agent: model, search backend, cassettes, world.

The CLI's `ask`, `collect`, `eval` and `improve` share these options, so they are
resolved in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from agent.state import AgentConfig


class SetupError(ValueError):
    """Options that cannot work together; the message is one line for the user."""


@dataclass
class AgentOptions:
    model: Optional[str] = None  # local dir / hub id / openai:NAME / replay:PATH
    adapter: Optional[str] = None  # LoRA adapter directory for a local model
    search: Optional[str] = None  # web | corpus | frozen (default: corpus if given, else web)
    corpus: Optional[str] = None  # JSONL of {id, title, url, text} for local search
    record: Optional[str] = None  # write all LLM and search traffic to this cassette
    replay: Optional[str] = None  # answer LLM and search calls from this cassette only
    world: Optional[str] = None  # a world's name (agent/worlds): its model, corpus and questions
    load_in_4bit: bool = False
    config: AgentConfig = field(default_factory=AgentConfig)
    # The step chooser config.choose names (agent.graph.Chooser), injected by the caller:
    # the CLI passes reward.choosers.chooser_for(choose); None for "perplexity".
    chooser: Optional[Callable] = None

    def resolved(self) -> "AgentOptions":
        """Fill in what a --world implies (its model, corpus and search); explicit options win."""
        if not self.world:
            return self
        from agent.worlds import UnknownWorld, get_world

        try:
            world = get_world(self.world)
        except UnknownWorld as e:
            raise SetupError(str(e)) from None
        self.model = self.model or str(world.model_dir)
        self.corpus = self.corpus or str(world.corpus)
        self.search = self.search or world.search
        return self

    def describe(self) -> dict:
        return {"model": self.model, "adapter": self.adapter, "search": self.search,
                "corpus": self.corpus, "world": self.world, "agent": self.config.to_dict()}


def make_model(spec: str, **opts):
    """The LLM a model spec names: a world's scripted teacher (`scripted:WORLD[:RATE]`,
    agent/worlds) or any backend agent.llm.factory builds."""
    if (spec or "").strip().startswith("scripted:"):
        from agent.worlds import scripted_model

        return scripted_model(spec.strip(), **opts)
    from agent.llm.factory import make_llm

    return make_llm(spec, **opts)


def make_judge(spec: str):
    """'rules' -> None (the rule judge needs no model); 'yesno:MODEL', 'yesno-strict:MODEL'
    or 'cite:MODEL' -> MODEL (it scores candidates by log-probabilities, reward/llm_judge.py
    and reward/evidence_judge.py); anything else is a model spec."""
    if spec == "rules":
        return None
    for prefix in ("yesno:", "yesno-strict:", "cite:"):
        if spec.startswith(prefix):
            return make_model(spec[len(prefix):])
    return make_model(spec)


def build_llm(opts: AgentOptions, cassette=None):
    if opts.replay:
        from agent.cassette import ReplayLLM

        return ReplayLLM(cassette)
    if not opts.model:
        from agent.worlds import world_names

        raise SetupError("no model: pass --model PATH_OR_ID (or openai:NAME), or --world "
                         + "/".join(world_names()))
    # None, not False, when unset: make_llm refuses options that do not apply (openai:, replay:)
    llm = make_model(opts.model, adapter=opts.adapter, load_in_4bit=opts.load_in_4bit or None)
    if opts.record:
        from agent.cassette import RecordingLLM

        llm = RecordingLLM(llm, cassette)
    return llm


def build_search(opts: AgentOptions, store=None, cassette=None):
    from agent.search.factory import make_search

    if opts.replay:
        from agent.cassette import ReplaySearch

        return ReplaySearch(cassette)
    spec = opts.search or ("corpus" if opts.corpus else "web")
    if spec == "corpus" and not opts.corpus:
        raise SetupError("--search corpus needs --corpus FILE.jsonl")
    if spec == "corpus" and not Path(opts.corpus).is_file():
        raise SetupError(f"corpus file not found: {opts.corpus}")
    search = make_search(spec, corpus=opts.corpus, store=store)
    if opts.record:
        from agent.cassette import RecordingSearch

        search = RecordingSearch(search, cassette)
    return search


def check_inputs(opts: AgentOptions) -> AgentOptions:
    """Read every file the options name, load nothing: a bad corpus, cassette or model
    config fails here in a second, not after the model has loaded (SetupError or
    agent.inputs.InputError, one line naming the file and line)."""
    from agent.inputs import json_file

    opts = opts.resolved()
    if opts.replay:
        from agent.cassette import Cassette

        if not Path(opts.replay).is_file():
            raise SetupError(f"cassette not found: {opts.replay}")
        Cassette(opts.replay).records()
    if opts.record:
        parent = Path(opts.record).expanduser().resolve().parent
        if parent.exists() and not parent.is_dir():
            raise SetupError(f"cannot record to {opts.record}: {parent} is not a folder")
        if Path(opts.record).is_dir():
            raise SetupError(f"cannot record to {opts.record}: it is a folder")
    spec = opts.search or ("corpus" if opts.corpus else "web")
    if spec == "corpus" and opts.corpus and not opts.replay:
        from agent.search.corpus import load_documents

        load_documents(Path(opts.corpus).expanduser())
    for folder, config in ((opts.model, "config.json"), (opts.adapter, "adapter_config.json")):
        path = Path(folder).expanduser() / config if folder and ":" not in folder else None
        if path is not None and path.is_file():
            json_file(path, "model config")
    return opts


def build_agent(opts: AgentOptions, store, on_event=None):
    """The LLM, search and Agent for these options (loads the model: slow on first call).

    Files are checked and the search backend is built first: a bad corpus is reported
    before the model, the slow part, is loaded."""
    from agent.graph import Agent

    opts = check_inputs(opts)
    cassette = None
    if opts.record or opts.replay:
        from agent.cassette import Cassette

        cassette = Cassette(opts.replay or opts.record)
    search = build_search(opts, store, cassette)
    llm = build_llm(opts, cassette)
    return Agent(llm=llm, search=search, store=store, config=opts.config, on_event=on_event,
                 chooser=opts.chooser)


class PolicyPool:
    """Agents for the improve loop that share loaded models, at most `max_models` at a time.

    One loaded LLM serves every sampling setting of the same (model, adapter): the grow stage's
    K samples and the evaluation's greedy runs are only request options. When a new model is
    needed and the pool is full, the least recently used one is closed and its memory freed,
    so an 8B loop does not keep a copy per iteration on the card. `release()` frees them all,
    e.g. before training loads its own copy of the base model.
    """

    def __init__(self, store, build=None, max_models: int = 1):
        self.store, self.max_models = store, max(1, max_models)
        self._build = build or build_agent  # (opts, store) -> Agent; the CLI's adds one-line errors
        self._llms: dict = {}  # model key -> (llm, search), most recent last
        self._agents: dict = {}  # model key + agent config -> Agent

    def get(self, opts: AgentOptions):
        from agent.graph import Agent

        opts = opts.resolved()
        # Everything the loaded backend and search depend on; the agent adds its whole config.
        model_key = (opts.model, opts.adapter, opts.load_in_4bit, opts.search, opts.corpus,
                     opts.record, opts.replay)
        key = (*model_key, json.dumps(opts.config.to_dict(), sort_keys=True))
        if key in self._agents and model_key in self._llms:
            self._llms[model_key] = self._llms.pop(model_key)  # mark as most recently used
            return self._agents[key]
        if model_key in self._llms:
            llm, search = self._llms.pop(model_key)
        else:
            self._evict(self.max_models - 1)
            first = self._build(opts, self.store)
            llm, search = first.llm, first.search
        self._llms[model_key] = (llm, search)
        self._agents[key] = Agent(llm=llm, search=search, store=self.store, config=opts.config,
                                  chooser=opts.chooser)
        return self._agents[key]

    def release(self) -> None:
        """Close every loaded model (the next `get` loads again)."""
        self._evict(0)

    def _evict(self, keep: int) -> None:
        while len(self._llms) > keep:
            model_key = next(iter(self._llms))
            llm, _ = self._llms.pop(model_key)
            for key in [k for k in self._agents if k[:-1] == model_key]:
                del self._agents[key]
            close = getattr(llm, "close", None)
            if close is not None:
                close()
            del llm
        _free_accelerator_memory()


def _free_accelerator_memory() -> None:
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")  # only when a model was ever loaded
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
