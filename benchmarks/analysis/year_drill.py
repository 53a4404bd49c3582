"""Can a pocket model learn to copy years at all, and does it need distinct year embeddings?

A small CPU experiment behind the year cap (docs/NOTEBOOK.md, a year drill): fine-tune a pocket
model for a few steps on the seed policy's summaries that state a year, then probe year
copying on other worlds with `year_copy.py`'s probe. Three arms, same data, same steps:

  as-is     the model as it is (its year embeddings sit close together: cosine ~0.4)
  reinit    year rows re-drawn as distinct as names are (`pocket pretrain --reinit-years`)
  frozen    re-drawn and frozen: training cannot pull them back together
  as-names  the model as it is, but every year in the text (training and probes alike) is
            written as a one-token name that the prompt does not otherwise use
  verbatim  the model as it is, but each year summary is the cited snippet's sentence that
            states the year, word for word (probes cut it right before the year)

If only `frozen` learns to copy, years fail because their embeddings collapse, and the
warm start should keep them apart. If only `as-names` does, the model's copying works for
name-like tokens in that slot, and a world that writes years as names would lift the cap.
If `verbatim` does, copying needs the snippet's own word order, and the seed policy could
quote instead of rephrasing.

    python benchmarks/analysis/year_drill.py MODEL_DIR [STEPS] [ARMS] [TRAIN_WORLDS]
    YEAR_DRILL_SAVE=DIR ...   also saves each arm's model to DIR/ARM
"""
import math
import os
import random
import re
import statistics
import sys
import time
import zlib
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from year_copy import cases, probe, seeded, year_token_closeness  # noqa: E402

TRAIN_WORLDS = range(9200000, 9200024)  # fresh worlds, none of them the probe's (4th argument: how many)
PROBE_WORLDS = (9100000, 9100001, 5100000)
YEAR_SUMMARY = re.compile(r'summary="According to \[link_id=\d+\], [^"]*? in \d{4}')
YEAR = re.compile(r"\b\d{4}\b")


def year_rows(tok) -> list[int]:
    from trainer.pocket import YEAR_TOKEN

    return [i for t, i in tok.get_vocab().items() if re.fullmatch(YEAR_TOKEN, t)]


def redraw(model, tok, seed: int = 0) -> None:
    """Year rows get the years' mean plus the spread name tokens have (as reshape_start does)."""
    from trainer.pocket import NAME_TOKEN

    emb = model.get_input_embeddings().weight
    names = [i for t, i in tok.get_vocab().items() if re.fullmatch(NAME_TOKEN, t)]
    years = year_rows(tok)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        emb[years] = emb[years].mean(0) + torch.randn(len(years), emb.shape[1], generator=gen) * emb[names].std(0)


def freeze(model, tok) -> None:
    """Zero the year rows' gradient (tied embeddings: input and output rows at once)."""
    rows = torch.tensor(year_rows(tok))
    model.get_input_embeddings().weight.register_hook(lambda g: g.index_fill(0, rows, 0.0))


def one_token_names(tok) -> list[str]:
    from trainer.pocket import NAME_TOKEN

    return sorted(t[1:] for t in tok.get_vocab() if re.fullmatch(NAME_TOKEN, t))


def as_names(texts: tuple[str, ...], names: list[str]) -> tuple[tuple[str, ...], dict[str, str]]:
    """The texts with each year written as a one-token name they do not otherwise use.

    One mapping for texts that belong together (a prompt and its summary); which names,
    varies from prompt to prompt, so a year's name cannot be learnt by heart.
    """
    joined = " ".join(texts)
    used = set(re.findall(r"[A-Z][a-z]+", joined))
    turn = zlib.crc32(joined[:400].encode()) % len(names)
    free = [n for n in names[turn:] + names[:turn] if n not in used]
    mapping = dict(zip(sorted(set(YEAR.findall(joined))), free))
    return tuple(YEAR.sub(lambda m: mapping[m.group(0)], t) for t in texts), mapping


SUMMARY = re.compile(r'summary="According to \[link_id=(\d+)\], ([^"]*)"')


def year_sentence(prompt: str, link: str) -> str | None:
    """The one sentence of result `link`'s snippet that states a year, if exactly one does."""
    m = re.search(rf'Result\(link_id={link}, title="[^"]*", snippet="([^"]*)"', prompt)
    said = [x for x in re.split(r"(?<=\.) ", m.group(1)) if YEAR.search(x)] if m else []
    return said[0] if len(said) == 1 and len(YEAR.findall(said[0])) == 1 else None


def quoted(prompt: str, completion: str) -> str | None:
    """The completion with its summary replaced by the year sentence of the cited snippet."""
    m = SUMMARY.search(completion)
    sentence = m and year_sentence(prompt, m.group(1))
    if not sentence:
        return None
    return completion[:m.start(2)] + sentence + completion[m.end(2):]


def _example(tok, prompt: str, completion: str) -> tuple[list[int], int]:
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"]
    return p + c + [tok.eos_token_id], len(p)


def verbatim_examples(tok) -> list[tuple[list[int], int]]:
    """As `examples`, each summary quoting its snippet's year sentence."""
    return [_example(tok, prompt, q) for prompt, completion in seeded(tok, TRAIN_WORLDS)
            if YEAR_SUMMARY.search(completion) and (q := quoted(prompt, completion))]


def examples(tok, names: list[str] | None = None) -> list[tuple[list[int], int]]:
    """(token ids of rendered prompt + summary, where the summary starts) for year summaries,
    with years written as names when `names` is given."""
    out = []
    for pair in seeded(tok, TRAIN_WORLDS):
        if YEAR_SUMMARY.search(pair[1]):
            out.append(_example(tok, *(as_names(pair, names)[0] if names else pair)))
    return out


def train(model, data, steps: int, batch: int, lr: float) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    rng = random.Random(0)
    model.train()
    losses = []
    for _ in range(steps):
        rows = rng.sample(data, batch)
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((batch, width), 0)
        labels = torch.full((batch, width), -100)
        mask = torch.zeros(batch, width, dtype=torch.long)
        for r, (seq, start) in enumerate(rows):
            ids[r, :len(seq)] = torch.tensor(seq)
            labels[r, start:len(seq)] = torch.tensor(seq[start:])
            mask[r, :len(seq)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    model.eval()
    return statistics.mean(losses[-10:])


def verbatim_cases(tok):
    """(prompt + summary quoted up to the year, the year) for the probe worlds."""
    for prompt, completion in seeded(tok, PROBE_WORLDS):
        q = YEAR_SUMMARY.search(completion) and quoted(prompt, completion)
        if q:
            m = SUMMARY.search(q)
            year = YEAR.search(m.group(2))
            yield prompt + q[:m.start(2) + year.start()].rstrip(), year.group(0)


def score(model, tok, names: list[str] | None = None, verbatim: bool = False) -> str:
    probs, right = [], 0
    for prefix, year in (verbatim_cases(tok) if verbatim else cases(seeded(tok, PROBE_WORLDS), 150)):
        if names is not None:
            (prefix,), mapping = as_names((prefix,), names)
            year = mapping[year]
        p, greedy = probe(model, tok, prefix, year)
        probs.append(p)
        right += greedy == year
    return (f"{len(probs)} probes, greedy right {right} ({right / len(probs):.0%}), "
            f"P(right year) mean {statistics.mean(probs):.3f}")


def main(model_dir: str, steps: int, arms: list[str]) -> None:
    tok = AutoTokenizer.from_pretrained(model_dir)
    data = examples(tok)
    print(f"{len(data)} year summaries from {len(TRAIN_WORLDS)} worlds; {steps} steps of 8", flush=True)
    names = one_token_names(tok) if "as-names" in arms else None
    for arm in arms:
        arm_data, arm_names = (examples(tok, names), names) if arm == "as-names" else (data, None)
        if arm == "verbatim":
            arm_data = verbatim_examples(tok)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        if arm in ("reinit", "frozen"):
            redraw(model, tok)
        if arm == "frozen":
            freeze(model, tok)
        t0 = time.perf_counter()
        loss = train(model, arm_data, steps, batch=8, lr=5e-4) if steps else math.nan
        if os.environ.get("YEAR_DRILL_SAVE"):  # keep the drilled model, e.g. to evaluate the agent with it
            out = Path(os.environ["YEAR_DRILL_SAVE"]) / arm
            model.save_pretrained(out)
            tok.save_pretrained(out)
        print(f"{arm:8s} loss {loss:.3f} in {time.perf_counter() - t0:.0f} s | {score(model, tok, arm_names, arm == 'verbatim')} | "
              f"{year_token_closeness(model, tok)}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if len(sys.argv) > 4:
        TRAIN_WORLDS = range(TRAIN_WORLDS.start, TRAIN_WORLDS.start + int(sys.argv[4]))
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 60,
         sys.argv[3].split(",") if len(sys.argv) > 3 else ["as-is", "reinit", "frozen"])
