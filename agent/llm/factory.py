"""`--model SPEC` → an LLM backend.

    openai:MODEL      an OpenAI-compatible server (base URL from opts["base_url"] or
                      OPENAI_BASE_URL; key from opts["api_key"] or OPENAI_API_KEY);
                      "openai:" alone uses the first model the server lists
    replay:PATH       answers from a recorded cassette (fails on unrecorded requests)
    hf:PATH | PATH    a local Hugging Face model directory or hub id (with --adapter)

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
        _check(spec, opts, _OPENAI_OPTS)
        from agent.llm.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(model=spec[len("openai:"):] or None, **opts)
    if spec.startswith("replay:"):
        _check(spec, opts, _REPLAY_OPTS)
        from agent.cassette import Cassette, ReplayLLM

        return ReplayLLM(Cassette(Path(spec[len("replay:"):]).expanduser()), **opts)
    _check(spec, opts, _HF_OPTS)
    from agent.llm.hf import HFBackend

    return HFBackend(spec[len("hf:"):] if spec.startswith("hf:") else spec, **opts)


def wrap_record(llm: LLM, path: str | Path) -> LLM:
    """Record every request and answer of `llm` to the cassette at `path`."""
    from agent.cassette import Cassette, RecordingLLM

    return RecordingLLM(llm, Cassette(Path(path).expanduser()))


def _check(spec: str, opts: dict, allowed: set[str]) -> None:
    extra = sorted(set(opts) - allowed)
    if extra:
        raise LLMError(f"option(s) {', '.join(extra)} do not apply to model '{spec}'")
