"""Local Hugging Face causal LM backend, batched across concurrent callers.

`collect` runs many trajectories in threads; each step asks for K samples of one
prompt. Calling `model.generate` once per request would leave the accelerator idle,
so callers only *submit* requests: one worker thread gathers whatever is pending (up
to `max_batch` requests, waiting `batch_wait_s` for stragglers) and answers them all
with ONE `generate` call — the K samples of a request are K repeated rows of the same
left-padded batch.

Sampling rule (the paper's): n == 1 and temperature 0 → greedy; temperature 0 with
n > 1 → sample at temperature 0.5 (greedy K times would give K identical samples);
any other temperature is used as given. Sampling draws from the full distribution
(no top-k / top-p), so perplexities compare like with like.

Log-probabilities are those of the raw (temperature-1) distribution at the chosen
tokens. They are recorded by a logits processor that sees the raw logits of one step
at a time, so memory stays one step × rows × vocabulary instead of the whole
`output_logits` history (which for Llama-3's 128k vocabulary and 128 rows × 256
steps would be ~17 GB).

Token accounting: `n_tokens` counts the generated tokens that produced the returned
text, plus the end-of-sequence token when the model stopped by itself (stopping is
the model's decision, and the trainer trains it); tokens of a stop string are not
counted. `logprob` sums over exactly those tokens.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import time
import weakref
from concurrent.futures import Future, TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

from agent import interrupt
from agent.llm.base import LLMError
from store.records import Completion, GenRequest, Generation

PAPER_SAMPLING_TEMPERATURE = 0.5
_STOP = object()  # sentinel that ends the worker thread
_POLL_S = 0.1  # how often a caller waiting for its samples looks for a requested stop

# Backends still open. At exit each one's batching thread is stopped and joined: a daemon
# thread still inside torch when the interpreter shuts down aborts the process ("terminate
# called without an active exception"), which is what Ctrl-C mid-generation used to do.
_OPEN: "weakref.WeakSet[HFBackend]" = weakref.WeakSet()


@atexit.register
def _close_open_backends() -> None:
    for backend in list(_OPEN):
        backend.close()


def render_prompt(tokenizer, prompt: str, chat: bool | None = None) -> str:
    """A project prompt as a local model is fed it: its chat template when it has one
    (or `chat` says so), else BOS + the prompt. Rollout and training both use this."""
    if chat is None:
        chat = bool(getattr(tokenizer, "chat_template", None))
    if chat:
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             tokenize=False, add_generation_prompt=True)
    return (tokenizer.bos_token or "") + prompt


def effective_sampling(request: GenRequest) -> tuple[bool, float]:
    """(do_sample, temperature) for a request, applying the paper's rule."""
    if request.temperature > 0:
        return True, float(request.temperature)
    if request.n > 1:
        return True, PAPER_SAMPLING_TEMPERATURE
    return False, 0.0


def default_engine(device: str) -> str | None:
    """The rollout engine when none is passed: $RESTREACT_ENGINE, else 'auto'.

    'auto' is the CUDA-graph decode loop on a GPU (agent/llm/graph_engine.py; 2-4x the plain
    path's tokens/s there, docs/BENCHMARKS.md) and the plain generate path elsewhere.
    """
    spec = os.environ.get("RESTREACT_ENGINE", "auto").strip().lower() or "auto"
    if spec == "auto":
        return "graph" if str(device).startswith("cuda") else None
    return spec


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".strip()


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class _Pending:
    """One submitted request waiting for the worker."""

    request: GenRequest
    rendered: str
    future: Future
    submitted: float


@dataclass
class _Sample:
    text: str
    token_ids: list[int]
    token_logprobs: list[float]


class HFBackend:
    """A local causal LM (path or hub id, optional LoRA adapter) behind the LLM protocol."""

    def __init__(self, model: str, adapter: str | None = None, dtype: str = "auto",
                 load_in_4bit: bool = False, device: str | None = None, max_batch: int = 32,
                 batch_wait_s: float = 0.01, chat: bool | None = None, engine=None):
        # engine: None (the plain generate path), an agent.llm.engine.EngineOptions or its
        # spec string ("static+compile", "share-prefix", "continuous"); see engine.py.
        if max_batch < 1:
            raise LLMError(f"max_batch must be >= 1, got {max_batch}")
        self.model_id = str(model)
        self.adapter = str(adapter) if adapter else None
        self.name = self.model_id + (f"+{self.adapter}" if self.adapter else "")
        self.max_batch = int(max_batch)
        self.batch_wait_s = float(batch_wait_s)
        self.generate_calls = 0
        self.requests_served = 0
        self._lock = threading.Lock()  # guards the counters
        self.tokenizer, self.model, self.device, self.dtype_name = _load(
            self.model_id, self.adapter, dtype, load_in_4bit, device)
        self.chat = bool(self.tokenizer.chat_template) if chat is None else bool(chat)
        if self.chat and not self.tokenizer.chat_template:
            raise LLMError(f"model '{self.model_id}' has no chat template; use chat=False")
        self._eos_ids = _eos_ids(self.tokenizer, self.model)
        pad = self.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else sorted(self._eos_ids)[0]
        auto = engine is None
        if auto:
            engine = default_engine(self.device)
        try:
            self._engine, self._rows, self._pool, self.engine_label = self._make_engine(engine)
        except LLMError:
            if not auto or engine != "graph":
                raise
            # 'auto' chose the graph engine and this model cannot use it (its attention
            # implementation, say): the plain path serves it instead.
            self._engine, self._rows, self._pool, self.engine_label = self._make_engine(None)
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name=f"hf-batcher:{self.name}",
                                        daemon=True)
        self._worker.start()
        _OPEN.add(self)

    @property
    def _continuous(self):
        """The continuous-batching engine, when that is the rows engine."""
        return self._rows if getattr(self._rows, "kind", None) == "continuous" else None

    @property
    def _graph(self):
        """The CUDA-graph engine, when that is the rows engine."""
        return self._rows if getattr(self._rows, "kind", None) == "graph" else None

    @property
    def prefix_stats(self) -> dict | None:
        """The graph engine's prompt-token counters (graph_engine.py), else None."""
        g = self._graph
        if g is None:
            return None
        out = dict(g.prefix_stats)
        if g.prefix is not None:
            out.update(cache_bytes=g.prefix.bytes, cache_tokens=g.prefix.kv_tokens, **g.prefix.stats)
        return out

    # --- public ---------------------------------------------------------------

    def render(self, prompt: str) -> str:
        """The exact text the model is fed for a project prompt (trainer reuses it)."""
        return render_prompt(self.tokenizer, prompt, self.chat)

    def generate(self, request: GenRequest) -> Generation:
        return self.generate_detailed(request)[0]

    def generate_detailed(self, request: GenRequest) -> tuple[Generation, list[list[float]]]:
        """Like `generate`, also returning each completion's per-token log-probabilities."""
        if request.n < 1 or request.max_new_tokens < 1:
            raise LLMError(f"bad request: n={request.n}, max_new_tokens={request.max_new_tokens}")
        if self._closed:
            raise LLMError(f"backend {self.name} is closed")
        interrupt.raise_if_requested()
        pending = _Pending(request, self.render(request.prompt), Future(), time.monotonic())
        self._queue.put(pending)
        while True:  # a stop requested meanwhile abandons the samples (the batch stops too)
            try:
                return pending.future.result(timeout=_POLL_S)
            except FutureTimeout:
                interrupt.raise_if_requested()

    def score(self, prompt: str, continuations: list[str]) -> list[float]:
        """log P(continuation | rendered prompt) for each continuation (see score_pairs)."""
        return self.score_pairs([(prompt, c) for c in continuations])

    def score_pairs(self, pairs: list[tuple[str, str]], max_rows: int = 16) -> list[float]:
        """log P(continuation | rendered prompt) for each (prompt, continuation) pair.

        What a judge reads yes/no log-probabilities with (reward/llm_judge.py): forward passes
        of up to `max_rows` right-padded rows, no sampling. It runs on the caller's thread,
        beside the generation worker: a forward without a cache changes no state.
        """
        import torch

        tok = self.tokenizer
        rows = []
        for prompt, cont in pairs:
            head = tok(self.render(prompt), add_special_tokens=False)["input_ids"]
            tail = tok(cont, add_special_tokens=False)["input_ids"]
            if not tail:
                raise LLMError("score: every continuation needs at least one token")
            rows.append((head, tail))
        # Rows of like length share a forward: a long prompt no longer pads fifteen short ones.
        by_length = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
        out: list[float] = [0.0] * len(rows)
        for at in range(0, len(rows), max_rows):
            chunk = by_length[at:at + max_rows]
            for i, score in zip(chunk, self._score_rows([rows[i] for i in chunk], torch)):
                out[i] = score
        return out

    def _score_rows(self, rows, torch) -> list[float]:
        width = max(len(h) + len(t) for h, t in rows)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (h, t) in enumerate(rows):
            ids[i, :len(h) + len(t)] = torch.tensor(h + t)
            mask[i, :len(h) + len(t)] = 1
        with torch.no_grad():
            logits = self.model(input_ids=ids.to(self.device),
                                attention_mask=mask.to(self.device)).logits
        out = []
        for i, (h, t) in enumerate(rows):
            # The logits at position p predict token p + 1.
            lp = torch.log_softmax(logits[i, len(h) - 1:len(h) + len(t) - 1].float(), dim=-1)
            out.append(float(lp[torch.arange(len(t)), torch.tensor(t, device=lp.device)].sum()))
        return out

    def close(self) -> None:
        """Stop the worker thread; requests still queued fail with LLMError."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._worker.join(timeout=60)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._rows is not None:
            self._rows.close()

    def __enter__(self) -> "HFBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the worker -----------------------------------------------------------

    def _work(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch, stopping = self._gather(first)
            for group in _group_by_sampling(batch):
                if self._pool is not None:  # continuous: groups overlap inside the engine
                    self._pool.submit(self._serve, group)
                else:
                    self._serve(group)
        self._fail_leftovers()

    def _gather(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """Collect up to max_batch pending requests, waiting batch_wait_s for more."""
        batch = [first]
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _fail_leftovers(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                item.future.set_exception(LLMError(f"backend {self.name} is closed"))

    def _serve(self, group: list[_Pending]) -> None:
        try:
            samples, prompt_lens, rows = self._run_generate(group)
        except Exception as e:  # one bad batch must not kill the worker
            err = LLMError(f"generation failed on {self.name}: {_one_line(e)}")
            for p in group:
                p.future.set_exception(err)
            return
        with self._lock:
            self.generate_calls += 1
            self.requests_served += len(group)
        i = 0
        now = time.monotonic()
        for p, n_prompt in zip(group, prompt_lens):
            mine = samples[i:i + p.request.n]
            i += p.request.n
            do_sample, temperature = effective_sampling(p.request)
            gen = Generation(
                rendered_prompt=p.rendered,
                completions=[Completion(s.text, len(s.token_ids), float(sum(s.token_logprobs)))
                             for s in mine],
                prompt_tokens=n_prompt, duration_s=now - p.submitted, model=self.name,
                options={"do_sample": do_sample, "temperature": temperature, "n": p.request.n,
                         "max_new_tokens": p.request.max_new_tokens, "stop": list(p.request.stop),
                         "batch_rows": rows, "dtype": self.dtype_name, "chat": self.chat,
                         **({"engine": self.engine_label} if self.engine_label else {})})
            p.future.set_result((gen, [s.token_logprobs for s in mine]))

    def _run_generate(self, group: list[_Pending]) -> tuple[list[_Sample], list[int], int]:
        """One `model.generate` for every sample of every request in the group."""
        import torch

        do_sample, temperature = effective_sampling(group[0].request)
        # One call for the group: the fast tokenizer encodes a batch in parallel.
        prompt_ids = self.tokenizer([p.rendered for p in group], add_special_tokens=False)["input_ids"]
        row_ids, row_max, row_stop = [], [], []
        for p, ids in zip(group, prompt_ids):
            for _ in range(p.request.n):
                row_ids.append(ids)
                row_max.append(p.request.max_new_tokens)
                row_stop.append(tuple(s for s in p.request.stop if s))
        if self._rows is not None:  # an engine that takes token rows (continuous, graph)
            new, lps = self._rows.run(row_ids, row_max, do_sample, temperature,
                                      done_check=self._stop_check(row_stop))
            samples = [self._finish_row(new[r], lps[r], row_max[r], row_stop[r])
                       for r in range(len(row_ids))]
            return samples, [len(ids) for ids in prompt_ids], len(row_ids)
        width = max(len(ids) for ids in row_ids)
        # Left padding: every row's last prompt token sits in the same column, so the
        # new tokens line up; the attention mask hides the pads.
        input_ids = torch.tensor([[self._pad_id] * (width - len(ids)) + ids for ids in row_ids])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in row_ids])
        recorder = _LogprobRecorder()
        processors = [recorder]
        if do_sample and temperature != 1.0:
            from transformers import TemperatureLogitsWarper

            processors.append(TemperatureLogitsWarper(temperature))
        from transformers import LogitsProcessorList, StoppingCriteriaList

        stopper = _RowStopper(width, row_max, row_stop, self.tokenizer)
        # Neutral settings so generate adds no processor before the recorder: it must
        # see raw logits; the temperature is applied after it, by us. (A model's own
        # generation_config, e.g. Llama-3-Instruct's top_p=0.9, must not leak in.)
        neutral = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0}
        if do_sample:
            neutral.update(temperature=1.0, top_k=0, top_p=1.0, typical_p=1.0, min_p=None)
        kw = dict(max_new_tokens=max(row_max), do_sample=do_sample, **neutral,
                  use_cache=True,  # the Trainer may have turned it off on the shared config
                  logits_processor=LogitsProcessorList(processors),
                  stopping_criteria=StoppingCriteriaList([stopper]),
                  eos_token_id=sorted(self._eos_ids), pad_token_id=self._pad_id)
        with torch.inference_mode():
            if self._engine is None:
                seqs = self.model.generate(input_ids=input_ids.to(self.device),
                                           attention_mask=mask.to(self.device), **kw)
            else:
                seqs = self._engine.generate(self.model, row_ids, self._pad_id, **kw)
        new = seqs[:, width:].tolist()
        logprobs = recorder.finish(seqs[:, -1])
        if len(logprobs) != len(new[0]):  # guards the one-step-behind bookkeeping
            raise RuntimeError(f"recorded {len(logprobs)} log-probabilities for "
                               f"{len(new[0])} generated tokens")
        samples = [self._finish_row(new[r], [lp[r] for lp in logprobs], row_max[r], row_stop[r])
                   for r in range(len(row_ids))]
        return samples, [len(ids) for ids in prompt_ids], len(row_ids)

    def _stop_check(self, row_stop: list[tuple[str, ...]]):
        """For the graph engine: has row r's text so far reached one of its stop strings?"""
        def done(r: int, tokens: list[int]) -> bool:
            if interrupt.requested():  # the callers have gone: end every row now
                return True
            stops = row_stop[r]
            if not stops:
                return False
            text = self._decode(tokens)
            return any(s in text for s in stops)

        return done

    def _make_engine(self, engine):
        """(generate engine, rows engine, thread pool, label); all None on the plain path."""
        if engine is None:
            return None, None, None, None
        from agent.llm.engine import ContinuousEngine, EngineOptions, GenerateEngine

        try:
            opts = engine if isinstance(engine, EngineOptions) else EngineOptions.parse(str(engine))
        except ValueError as e:
            raise LLMError(str(e)) from None
        if opts.is_plain:
            return None, None, None, None
        if opts.kind == "continuous":
            from concurrent.futures import ThreadPoolExecutor

            cb = ContinuousEngine(self.model, opts, sorted(self._eos_ids), self._pad_id)
            pool = ThreadPoolExecutor(max_workers=max(4, self.max_batch), thread_name_prefix="hf-cb")
            return None, cb, pool, opts.label()
        if opts.kind == "graph":
            from agent.llm.graph_engine import GraphEngine

            try:
                graph = GraphEngine(self.model, opts, sorted(self._eos_ids), self._pad_id)
                return None, graph, None, opts.label()
            except ValueError as e:
                raise LLMError(str(e)) from None
        return GenerateEngine(opts), None, None, opts.label()

    def _finish_row(self, tokens: list[int], lps: list[float], max_new: int,
                    stops: tuple[str, ...]) -> _Sample:
        """Cut one row at EOS, its own max_new_tokens, and its first stop string."""
        end = min(len(tokens), max_new)
        keep = end
        for i, t in enumerate(tokens[:end]):
            if t in self._eos_ids:
                end, keep = i, i + 1  # the EOS token counts (see module docstring)
                break
        text = self._decode(tokens[:end])
        cut = _first_stop(text, stops)
        if cut is not None:
            text = text[:cut]
            keep = self._tokens_covering(tokens[:end], len(text))
        return _Sample(text, tokens[:keep], lps[:keep])

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _tokens_covering(self, tokens: list[int], n_chars: int) -> int:
        """Fewest leading tokens whose decoded text reaches n_chars characters."""
        for k in range(len(tokens) + 1):
            if len(self._decode(tokens[:k])) >= n_chars:
                return k
        return len(tokens)


# --- generate plumbing -------------------------------------------------------------


class _LogprobRecorder:
    """Logits processor that keeps log p(chosen token) of the raw distribution.

    At each step it sees the raw logits for the next token; the token chosen from
    them only shows up in input_ids at the *following* call, so it keeps one step of
    log-softmax and gathers the previous choice. `finish` gathers the last one.
    """

    def __init__(self):
        self.steps: list[list[float]] = []  # steps[t][row]
        self._prev = None

    def _gather(self, chosen):
        import torch

        picked = torch.gather(self._prev, 1, chosen.view(-1, 1).to(self._prev.device))
        self.steps.append(picked.view(-1).tolist())

    def __call__(self, input_ids, scores):
        import torch

        if self._prev is not None:
            self._gather(input_ids[:, -1])
        self._prev = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_tokens) -> list[list[float]]:
        if self._prev is not None:
            self._gather(last_tokens)
            self._prev = None
        return self.steps


class _RowStopper:
    """Stopping criterion with each row's own max_new_tokens and stop strings."""

    def __init__(self, prompt_width: int, row_max: list[int], row_stop: list[tuple[str, ...]],
                 tokenizer):
        self.width = prompt_width
        self.row_max = row_max
        self.row_stop = row_stop
        self.tok = tokenizer
        # A stop string of c characters spans at most 4c byte-level tokens (+1 partial).
        self.tail = [4 * max((len(s) for s in stops), default=0) + 2 for stops in row_stop]

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        n_new = input_ids.shape[1] - self.width
        if interrupt.requested():  # the callers have gone (Ctrl-C): stop the whole batch now
            return torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        done = [n_new >= m for m in self.row_max]
        rows = [r for r, stops in enumerate(self.row_stop) if stops and not done[r]]
        if rows:
            # One device-to-host copy per step for all rows (not one sync per row).
            longest = min(max(self.tail[r] for r in rows), n_new)
            tails = input_ids[:, input_ids.shape[1] - longest:].tolist()
            for r in rows:
                tail = tails[r][max(0, longest - self.tail[r]):]
                text = self.tok.decode(tail, skip_special_tokens=True)
                done[r] = any(s in text for s in self.row_stop[r])
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _group_by_sampling(batch: list[_Pending]) -> list[list[_Pending]]:
    """Requests sharing (do_sample, temperature) can share one generate call."""
    groups: dict[tuple[bool, float], list[_Pending]] = {}
    for p in batch:
        groups.setdefault(effective_sampling(p.request), []).append(p)
    return list(groups.values())


def _eos_ids(tokenizer, model) -> set[int]:
    """End ids from the tokenizer and the generation config (Llama-3-Instruct lists two)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(int(i) for i in gen_eos)
    if not ids:
        raise LLMError("model has no end-of-sequence token (tokenizer and generation config)")
    return ids


# --- loading -------------------------------------------------------------------------


_POINT = ("point --model at a local model directory (one holding config.json, the weights and "
          "the tokenizer files)")


def _missing_model(model: str, err: BaseException) -> LLMError:
    if Path(model).expanduser().exists():
        return LLMError(f"cannot load model from local directory '{model}' ({_one_line(err)}); "
                        f"{_POINT}")
    where = ("the hub is offline (HF_HUB_OFFLINE=1)" if _hub_offline()
             else "the hub could not provide it")
    return LLMError(f"cannot load model '{model}': it is not a local model directory and {where} "
                    f"({_one_line(err)}); {_POINT}")


def _resolve_dtype(dtype: str, device: str):
    import torch

    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
             "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in names:
        raise LLMError(f"unknown dtype '{dtype}' (use auto, bf16, fp16 or fp32)")
    return names[dtype]


def _load(model: str, adapter: str | None, dtype: str, load_in_4bit: bool,
          device: str | None):
    """(tokenizer, model, device, dtype name); every failure is one LLMError line."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = _resolve_dtype(dtype, device)
    local = Path(model).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise LLMError(f"'{model}' is a path but not a model directory (no config.json); {_POINT}")
    source = str(local) if local.exists() else model
    offline = _hub_offline() or local.exists()
    try:
        tok = AutoTokenizer.from_pretrained(source, local_files_only=offline)
    except Exception as e:
        raise _missing_model(model, e) from None
    kwargs = {"dtype": torch_dtype, "local_files_only": offline}
    if load_in_4bit:
        try:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dtype)
            kwargs["device_map"] = {"": device}
        except Exception as e:
            raise LLMError(f"4-bit loading needs bitsandbytes (pip install '.[gpu]'): "
                           f"{_one_line(e)}") from None
    try:
        lm = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except Exception as e:
        if load_in_4bit and "bitsandbytes" in str(e).lower():
            raise LLMError(f"4-bit loading failed: {_one_line(e)}") from None
        raise _missing_model(model, e) from None
    if not load_in_4bit:
        lm = lm.to(device)
    if adapter:
        lm = _attach_adapter(lm, adapter)
    lm.eval()
    return tok, lm, device, str(torch_dtype).replace("torch.", "") + ("-4bit" if load_in_4bit else "")


def _attach_adapter(lm, adapter: str):
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise LLMError(f"'{adapter}' is not a LoRA adapter directory (no adapter_config.json)")
    try:
        from peft import PeftModel

        return PeftModel.from_pretrained(lm, str(path), is_trainable=False)
    except Exception as e:
        raise LLMError(f"cannot load LoRA adapter '{adapter}': {_one_line(e)}") from None
