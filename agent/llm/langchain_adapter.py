"""Any LangChain chat model (ChatOpenAI, ChatOllama, ChatAnthropic ...) as an LLM backend.

LangChain models carry their sampling settings as fields, so each request runs on a
copy of the model with `temperature` and the max-token field set when the model has
them (the project's sampling rule applies: n > 1 at temperature 0 → 0.5). A model
without such fields samples with its own settings; `options` then says so (None).
The K samples are K `invoke` calls — not every provider supports `n`.

Log-probabilities come from `response_metadata["logprobs"]` where the model returns
them (ChatOpenAI(logprobs=True) does); otherwise `logprob` is None. Stop strings are
passed to the model and also enforced here, since some models ignore them.
`rendered_prompt` is the user message text: the provider applies its own template.
"""

from __future__ import annotations

import time

from agent.llm.base import LLMError
from store.records import Completion, GenRequest, Generation
from agent.llm.hf import effective_sampling

_MAX_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "num_predict", "max_output_tokens")


class LangChainBackend:
    """Adapter from a langchain_core BaseChatModel to the project's LLM protocol."""

    def __init__(self, chat_model):
        self.chat_model = chat_model
        label = (getattr(chat_model, "model_name", None) or getattr(chat_model, "model", None)
                 or getattr(chat_model, "_llm_type", None) or type(chat_model).__name__)
        self.name = f"langchain:{label}"

    def generate(self, request: GenRequest) -> Generation:
        from langchain_core.messages import HumanMessage

        if request.n < 1 or request.max_new_tokens < 1:
            raise LLMError(f"bad request: n={request.n}, max_new_tokens={request.max_new_tokens}")
        do_sample, temperature = effective_sampling(request)
        model, applied = self._configured(temperature, request.max_new_tokens)
        start = time.monotonic()
        completions, prompt_tokens = [], 0
        for _ in range(request.n):
            try:
                msg = model.invoke([HumanMessage(request.prompt)],
                                   stop=list(request.stop) or None)
            except Exception as e:  # providers raise their own types
                from agent.cassette import scrub_secrets

                first = (str(e).strip().splitlines() or [""])[0]
                raise LLMError(scrub_secrets(f"{self.name} failed: {type(e).__name__}: {first}")) from None
            usage = getattr(msg, "usage_metadata", None) or {}
            prompt_tokens = prompt_tokens or int(usage.get("input_tokens") or 0)
            completions.append(_completion(msg, request.stop, int(usage.get("output_tokens") or 0)))
        return Generation(
            rendered_prompt=request.prompt, completions=completions, prompt_tokens=prompt_tokens,
            duration_s=time.monotonic() - start, model=self.name,
            options={"do_sample": do_sample, "n": request.n, "stop": list(request.stop),
                     "max_new_tokens": request.max_new_tokens, **applied})

    def _configured(self, temperature: float, max_new_tokens: int):
        """A copy of the model with this request's settings, and what was set."""
        fields = getattr(type(self.chat_model), "model_fields", {})
        update, applied = {}, {"temperature": None, "max_tokens_field": None}
        if "temperature" in fields:
            update["temperature"] = applied["temperature"] = temperature
        for name in _MAX_TOKEN_FIELDS:
            if name in fields:
                update[name] = max_new_tokens
                applied["max_tokens_field"] = name
                break
        if not update:
            return self.chat_model, applied
        return self.chat_model.model_copy(update=update), applied


def _token_logprobs(meta) -> list[tuple[str | None, float]] | None:
    """(token, logprob) pairs from the shapes providers put in response_metadata."""
    raw = meta.get("logprobs") if isinstance(meta, dict) else None
    if isinstance(raw, dict):
        raw = raw.get("content")
    if not isinstance(raw, list) or not raw:
        return None
    out = []
    for item in raw:
        if isinstance(item, dict) and item.get("logprob") is not None:
            out.append((item.get("token"), float(item["logprob"])))
        elif isinstance(item, (int, float)):
            out.append((None, float(item)))
    return out or None


def _completion(msg, stops: tuple[str, ...], output_tokens: int) -> Completion:
    text = msg.text if isinstance(msg.text, str) else str(msg.content)
    pairs = _token_logprobs(getattr(msg, "response_metadata", None))
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if hits:
        text = text[:min(hits)]
        pairs = _covering(pairs, len(text))
    if pairs is None:
        return Completion(text, 0 if hits else output_tokens, None)
    return Completion(text, len(pairs), sum(lp for _, lp in pairs))


def _covering(pairs, n_chars: int):
    """The leading tokens that spell the kept text; None when tokens are unknown."""
    if not pairs or any(tok is None for tok, _ in pairs):
        return None
    kept, length = [], 0
    for tok, lp in pairs:
        if length >= n_chars:
            break
        kept.append((tok, lp))
        length += len(tok)
    return kept
