"""Warm-starting the pocket model: a small Llama that has learnt to read its search results.

Recipe (docs/NOTEBOOK.md records what each part was measured to do):
  1. seed data — on many freshly generated worlds, run the deliberately imperfect scripted
     policy through the real agent graph and keep every step (prompt, chosen output);
     fresh worlds make memorising impossible, so the model must copy from its snippets;
  2. a byte-level BPE tokenizer trained on those worlds' text and the prompt formats, with
     Llama-3's special tokens and chat template;
  3. a LlamaForCausalLM (same class as Llama-3-8B) trained from scratch by the project's
     own trainer, with loss on the whole sequence (what taught a tiny model to copy);
  4. saved in bf16 under data/pocket/model (small enough to ship in the repository);
  5. optionally continued on fresh worlds (`--init-from`), e.g. with loss on the outputs
     only (`--loss completion --doc-fraction 0`). Years are learnt from many small steps
     with year-stating steps repeated, and a plain replay at a larger batch brings the other
     steps back. The shipped model's last stage ran on seed data whose reader misreads more
     often (`--mistake-weights`), so the warm start's mistakes are mostly ones the loop can
     undo (docs/BENCHMARKS.md sections 1 and 2).

    python cli.py pocket pretrain --worlds 1000 --out data/pocket/model   # on a GPU: minutes
"""

from __future__ import annotations

import json
import random
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from agent.worlds.pocket.assets import PRETRAIN_SEED_BASE

# Llama-3's chat layout; {% generation %} marks what the model writes (TRL's assistant mask).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' }}"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + '<|eot_id|>' }}{% endgeneration %}"
    "{% else %}{{ m['content'] + '<|eot_id|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|pad|>"]


@dataclass
class PocketConfig:
    worlds: int = 1000  # fresh worlds for seed data (more worlds: less memorising)
    world_size: str = "small"  # size preset of each pretraining world
    questions_per_world: int = 20
    error_rate: float = 0.3  # the seed policy's mistake rate: keeps the warm start imperfect
    # Per step kind, a weight on error_rate (agent.worlds.pocket.policy.KIND_WEIGHT when not given).
    # Raising summarize makes a warm start misread more often, a mistake the rule judge sees
    # and another sample avoids: headroom the label-free loop can take (docs/BENCHMARKS.md §2).
    mistake_weights: dict = field(default_factory=dict)
    vocab_size: int = 6000
    # One token per digit, so a year is copied digit by digit. Off by default: whole-number
    # year tokens are learnt from many small steps (docs/BENCHMARKS.md section 1), and a
    # split-digit start with half the shipped budget copied years no better (docs/NOTEBOOK.md).
    split_digits: bool = False
    hidden: int = 256
    layers: int = 6
    heads: int = 8
    kv_heads: int = 4
    max_length: int = 768
    epochs: float = 2.0
    batch: int = 128
    learning_rate: float = 2e-3
    doc_fraction: float = 0.3  # corpus documents mixed in as plain language-modelling text
    # "full": loss on the whole sequence, what first taught the model to copy names at all.
    # "completion": loss on the steps' outputs only. Continuing a full-loss model this way
    # teaches it the relations it still misreads (studied at, works for, a city's country),
    # but not years (docs/NOTEBOOK.md).
    loss: str = "full"
    workers: int = 0  # processes for seed data (0 = all cores)
    time_limit_s: float = 0.0  # stop training after this long (the model is still saved)
    teacher: str = ""  # a model spec that writes the seed steps; "" = the scripted reader
    init_from: str = ""  # continue training this pocket model (its tokenizer too) instead of a fresh one
    # Aimed at the year cap (docs/NOTEBOOK.md): the tied embedding keeps the
    # year tokens bunched together, so a continued model may get its own output matrix
    # (`untie`), fresh, spread-out year rows (`reinit_years`), and more of the summaries that
    # state a year (`year_boost`: each such step appears this many times in the data).
    # In batches of 256 none of the three teaches years; in batches of 8, a boost of 6 on
    # summaries and answers does (docs/BENCHMARKS.md section 1, stage 5).
    untie: bool = False
    reinit_years: bool = False
    year_boost: int = 1
    # Which step kinds the boost repeats. Many small steps on summaries teach years
    # (benchmarks/analysis/year_drill.py); answers copy years too (a comparison's thoughts
    # list both years).
    year_boost_kinds: tuple[str, ...] = ("summarize",)
    seed: int = 0


# --- 1. seed data ---------------------------------------------------------------------


def world_steps(world_seed: int, cfg: PocketConfig) -> tuple[list[dict], list[str]]:
    """Run the scripted policy through the real graph on one fresh world.

    Returns (steps as {kind, prompt, completion}, corpus texts).
    """
    from agent.graph import Agent
    from agent.worlds.pocket.build import build_world
    from agent.worlds.pocket.policy import ScriptedPolicy
    from agent.search.corpus import CorpusSearch
    from agent.state import AgentConfig

    steps: list[dict] = []

    def capture(kind: str, payload: dict) -> None:
        step = payload.get("step") if kind == "step" else None
        if step is not None and step.chosen is not None:
            steps.append({"kind": step.kind, "prompt": step.prompt,
                          "completion": step.samples[step.chosen].text})

    with tempfile.TemporaryDirectory(prefix="pocket-world-") as tmp:
        build_world(world_seed, Path(tmp), size=cfg.world_size)
        questions = [json.loads(x) for x in (Path(tmp) / "questions.jsonl").read_text().splitlines()]
        docs = [json.loads(x)["text"] for x in (Path(tmp) / "corpus.jsonl").read_text().splitlines()]
        if cfg.teacher:
            from agent.llm.factory import make_llm

            policy = make_llm(cfg.teacher)
        else:
            policy = ScriptedPolicy(Path(tmp), error_rate=cfg.error_rate, seed=world_seed,
                                    kind_weights=cfg.mistake_weights)
        agent = Agent(llm=policy, search=CorpusSearch(Path(tmp) / "corpus.jsonl"), store=None,
                      config=AgentConfig(samples=1), on_event=capture)
        rng = random.Random(world_seed)
        for q in rng.sample(questions, min(cfg.questions_per_world, len(questions))):
            agent.run(q["question"])
    return steps, docs


def seed_data(cfg: PocketConfig) -> tuple[list[dict], list[str]]:
    """Seed steps and documents from cfg.worlds fresh worlds, in parallel processes."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    seeds = [PRETRAIN_SEED_BASE + cfg.seed * 1_000_000 + i for i in range(cfg.worlds)]
    workers = cfg.workers or os.cpu_count() or 1
    steps, docs = [], []
    if workers == 1:
        results: Iterator = (world_steps(s, cfg) for s in seeds)
    else:
        pool = ProcessPoolExecutor(workers)
        results = pool.map(world_steps, seeds, [cfg] * len(seeds), chunksize=4)
    for s, d in results:
        steps += s
        docs += d
    return steps, docs


# --- 2. tokenizer ---------------------------------------------------------------------


def train_tokenizer(texts: list[str], vocab_size: int, out: Path, split_digits: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = byte_level if not split_digits else pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                                   eos_token="<|eot_id|>", pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def render(tok, prompt: str) -> str:
    """What the local backend feeds the model for this prompt (the chat template)."""
    from agent.llm.hf import render_prompt

    return render_prompt(tok, prompt)


# --- 3. model and training -----------------------------------------------------------


def init_model(tok, cfg: PocketConfig, out: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    mcfg = LlamaConfig(vocab_size=len(tok), hidden_size=cfg.hidden,
                       intermediate_size=int(cfg.hidden * 2.75) // 32 * 32,
                       num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                       num_key_value_heads=cfg.kv_heads, max_position_embeddings=2048,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(mcfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def pretrain(cfg: PocketConfig, out: Path, log=print) -> dict:
    """The whole warm start; returns metrics. `out` receives a bf16 model + tokenizer."""
    import time

    from trainer.config import TrainConfig
    from trainer.examples import Example
    from trainer.sft import train

    t0 = time.perf_counter()
    steps, docs = seed_data(cfg)
    log(f"seed data: {len(steps)} steps, {len(docs)} documents from {cfg.worlds} worlds "
        f"in {time.perf_counter() - t0:.0f}s")
    rng = random.Random(cfg.seed)
    with tempfile.TemporaryDirectory(prefix="pocket-init-") as tmp:
        if cfg.init_from:  # more training for an existing model: same tokenizer, its weights
            from transformers import AutoTokenizer

            tok, base = AutoTokenizer.from_pretrained(cfg.init_from), cfg.init_from
            if cfg.untie or cfg.reinit_years:
                base = str(reshape_start(cfg, Path(tmp) / "start"))
        else:
            tok_texts = docs[:50_000] + [s["prompt"] + s["completion"]
                                         for s in rng.sample(steps, min(20_000, len(steps)))]
            tok = train_tokenizer(tok_texts, cfg.vocab_size, Path(tmp), cfg.split_digits)
            base = str(init_model(tok, cfg, Path(tmp)))
        examples = [Example(None, render(tok, s["prompt"]), s["completion"])
                    for s in steps for _ in range(repeats(s, cfg.year_boost, cfg.year_boost_kinds))]
        n_docs = int(len(examples) * cfg.doc_fraction)
        examples += [Example(None, tok.bos_token, d) for d in rng.sample(docs, min(n_docs, len(docs)))]
        rng.shuffle(examples)
        tcfg = TrainConfig(base_model=base, output_dir=str(out), method="full", loss=cfg.loss,
                           learning_rate=cfg.learning_rate, epochs=cfg.epochs,
                           per_device_batch=cfg.batch, grad_accum=1, warmup_steps=50,
                           max_length=cfg.max_length, gradient_checkpointing=False,
                           use_unsloth=False, optim="adamw_torch", weight_decay=0.0,
                           lr_scheduler="cosine", logging_steps=50, seed=cfg.seed,
                           time_limit_s=cfg.time_limit_s)
        result = train(examples, tcfg, on_log=lambda d: log(json.dumps(d)) if "loss" in d else None)
    _to_bf16(out)
    metrics = {**result.metrics, "seed_steps": len(steps), "documents": len(docs),
               "examples": len(examples), "config": asdict(cfg),
               "wall_s": time.perf_counter() - t0}
    (out / "pocket_pretrain.json").write_text(json.dumps(metrics, indent=1, default=str))
    return metrics


YEAR_TOKEN = r"Ġ(1[89]|20)\d\d"  # how the byte-level tokenizer spells a one-token year
NAME_TOKEN = r"Ġ[A-Z][a-z]{3,}"  # a one-token capitalised name, the spread years are held to
_STATES_YEAR = re.compile(r"\b(1[89]|20)\d\d\b")


def repeats(step: dict, year_boost: int, kinds: tuple[str, ...] = ("summarize",)) -> int:
    """How often a seed step appears in the training data (year_boost for a step of one of
    `kinds` whose output states a year, once otherwise)."""
    if year_boost > 1 and step["kind"] in kinds and _STATES_YEAR.search(step["completion"]):
        return year_boost
    return 1


def reshape_start(cfg: PocketConfig, out: Path) -> Path:
    """cfg.init_from with an untied output matrix and/or re-drawn year rows, saved to `out`.

    Re-drawn rows keep the years' mean (the model still knows "a year goes here") and get
    the spread that name tokens have, so each year starts out as distinct as a name does.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.init_from)
    model = AutoModelForCausalLM.from_pretrained(cfg.init_from, dtype=torch.float32)
    emb = model.get_input_embeddings().weight
    if cfg.untie:
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(emb.detach().clone())
    if cfg.reinit_years:
        vocab = tok.get_vocab()
        years = [i for t, i in vocab.items() if re.fullmatch(YEAR_TOKEN, t)]
        names = [i for t, i in vocab.items() if re.fullmatch(NAME_TOKEN, t)]
        if len(years) < 2 or len(names) < 2:
            raise ValueError("reinit_years: the tokenizer has no one-token years to re-draw")
        gen = torch.Generator().manual_seed(cfg.seed)
        with torch.no_grad():
            mean, spread = emb[years].mean(0), emb[names].std(0)
            fresh = mean + torch.randn(len(years), emb.shape[1], generator=gen) * spread
            emb[years] = fresh
            if cfg.untie:
                model.lm_head.weight[years] = fresh
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _to_bf16(out: Path) -> None:
    """Re-save in bf16: half the bytes, so the checkpoint ships in the repository."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    for f in out.glob("*.safetensors"):
        f.unlink()
    model.save_pretrained(out)
