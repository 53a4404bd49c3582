"""Does a pocket model copy a year out of the search result it cites?

For each logged summarize call of a store whose summary states "... in YYYY" citing one
result with a single year in its snippet, feed the call's prompt plus the summary up to
" in" (teacher forcing) and ask the model for the year: the probability it gives the
snippet's year (all of its tokens, so one-token-per-digit tokenizers score the same), and
whether greedy decoding writes exactly that year. It separates "cannot copy" (the right
year gets a small probability) from "copies, but sampling lost it", and shows which year
the model writes instead.

`seed` mode probes the scripted seed policy's summaries on pocket worlds (by world seed,
e.g. the pretrain worlds from agent.worlds.pocket.assets.PRETRAIN_SEED_BASE up), which tells a
model that never learned years from one that learned them only on its training worlds.
Both modes also print how close the model's year tokens sit in its embedding.

    python benchmarks/analysis/year_copy.py db DB MODEL_DIR [LIMIT]
    python benchmarks/analysis/year_copy.py seed MODEL_DIR WORLD_SEED [WORLD_SEED ...]
"""
import collections
import math
import re
import sqlite3
import statistics
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

SUMMARY_YEAR = re.compile(r'(summary="According to \[link_id=(\d+)\], [^"]*? in) (\d{4})')


def logged(db: str):
    """(prompt as the model saw it, response) of each summarize call in a store."""
    yield from sqlite3.connect(db).execute(
        "select prompt, response from llm_calls where purpose = 'summarize' order by id")


def seeded(tok, world_seeds):
    """(rendered prompt, completion) of the seed policy's summarize steps on these worlds."""
    from trainer.pocket import PocketConfig, render, world_steps

    for seed in world_seeds:
        steps, _ = world_steps(seed, PocketConfig())
        for s in steps:
            if "CURRENT_SEARCH_RESULTS" in s["prompt"]:
                yield render(tok, s["prompt"]), s["completion"]


def cases(pairs, limit: int):
    """(prompt + summary up to " in", the cited snippet's year) per usable summarize call."""
    for prompt, response in pairs:
        m = SUMMARY_YEAR.search(response or "")
        if not m:
            continue
        snippet = re.search(rf'Result\(link_id={m.group(2)}, title="[^"]*", snippet="([^"]*)"', prompt)
        years = set(re.findall(r"\b\d{4}\b", snippet.group(1))) if snippet else set()
        if len(years) == 1:  # the target is the snippet's year, whatever the summary wrote
            yield prompt + response[:m.end(1)], years.pop()
            limit -= 1
            if limit == 0:
                return


@torch.no_grad()
def probe(model, tok, prefix: str, year: str) -> tuple[float, str]:
    """(P(" year" | prefix), the greedy continuation of the same token count)."""
    p = tok(prefix, add_special_tokens=False)["input_ids"]
    y = tok(" " + year, add_special_tokens=False)["input_ids"]
    logp = model(torch.tensor([p + y])).logits[0].log_softmax(-1)
    right = sum(logp[len(p) - 1 + i, t].item() for i, t in enumerate(y))
    ids = torch.tensor([p])
    for _ in y:
        nxt = model(ids).logits[0, -1].argmax().view(1, 1)
        ids = torch.cat([ids, nxt], dim=1)
    return math.exp(right), tok.decode(ids[0, len(p):]).strip()


def year_token_closeness(model, tok) -> str:
    """Mean pairwise cosine of one-token years' embeddings, beside as many name tokens'."""
    from trainer.pocket import NAME_TOKEN, YEAR_TOKEN

    emb = model.get_input_embeddings().weight.detach()
    vocab = tok.get_vocab()
    years = [i for t, i in vocab.items() if re.fullmatch(YEAR_TOKEN, t)]
    names = [i for t, i in sorted(vocab.items()) if re.fullmatch(NAME_TOKEN, t)][:len(years)]

    def mean_cos(ids):
        x = torch.nn.functional.normalize(emb[ids], dim=-1)
        return ((x @ x.T).sum() - len(ids)).item() / (len(ids) * (len(ids) - 1))

    if len(years) < 2:
        return "no one-token years in the vocabulary"
    return (f"embedding cosine, mean over pairs: {len(years)} year tokens {mean_cos(years):.2f},"
            f" {len(names)} name tokens {mean_cos(names):.2f}")


def main(mode: str, model_dir: str, args: list[str]) -> None:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if mode == "db":
        pairs, limit, where = logged(args[0]), int(args[1]) if len(args) > 1 else 150, args[0]
    else:
        pairs, limit, where = seeded(tok, [int(a) for a in args]), 150, f"worlds {', '.join(args)}"
    probs, right, written = [], 0, collections.Counter()
    for prefix, year in cases(pairs, limit):
        p, greedy = probe(model, tok, prefix, year)
        probs.append(p)
        right += greedy == year
        written[greedy] += 1
    if not probs:
        sys.exit(f"{where}: no summarize call states a year from a one-year snippet")
    n = len(probs)
    print(f"{model_dir}: {n} summaries | greedy writes the snippet's year {right} ({right / n:.0%})"
          f" | P(right year) mean {statistics.mean(probs):.3f}, median {statistics.median(probs):.3f}")
    print("years written most:", ", ".join(f"{y} ×{k}" for y, k in written.most_common(6)))
    print(year_token_closeness(model, tok))


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] not in ("db", "seed"):
        sys.exit(__doc__)
    if sys.argv[1] == "db":
        main("db", sys.argv[3], [sys.argv[2], *sys.argv[4:]])
    else:
        main("seed", sys.argv[2], sys.argv[3:])
