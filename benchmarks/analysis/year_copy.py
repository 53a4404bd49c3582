"""Does a pocket model copy a year out of the search result it cites?

For each logged summarize call of a store whose summary states "... in YYYY" citing one
result with a single year in its snippet, feed the call's prompt plus the summary up to
" in" (teacher forcing) and ask the model for the year: the probability it gives the
snippet's year (all of its tokens, so one-token-per-digit tokenizers score the same), and
whether greedy decoding writes exactly that year. It separates "cannot copy" (the right
year gets a small probability) from "copies, but sampling lost it", and shows which year
the model writes instead.

    python benchmarks/analysis/year_copy.py DB MODEL_DIR [LIMIT]
"""
import collections
import math
import re
import sqlite3
import statistics
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

SUMMARY_YEAR = re.compile(r'(summary="According to \[link_id=(\d+)\], [^"]*? in) (\d{4})')


def cases(db: str, limit: int):
    """(prompt + summary up to " in", the cited snippet's year) per usable summarize call."""
    rows = sqlite3.connect(db).execute(
        "select prompt, response from llm_calls where purpose = 'summarize' order by id")
    for prompt, response in rows:
        m = SUMMARY_YEAR.search(response or "")
        if not m:
            continue
        snippet = re.search(rf'Result\(link_id={m.group(2)}, title="[^"]*", snippet="([^"]*)"', prompt)
        years = set(re.findall(r"\b\d{4}\b", snippet.group(1))) if snippet else set()
        if len(years) == 1:
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


def main(db: str, model_dir: str, limit: int = 150) -> None:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    probs, right, written = [], 0, collections.Counter()
    for prefix, year in cases(db, limit):
        p, greedy = probe(model, tok, prefix, year)
        probs.append(p)
        right += greedy == year
        written[greedy] += 1
    if not probs:
        sys.exit(f"{db}: no summarize call states a year from a one-year snippet")
    n = len(probs)
    print(f"{model_dir}: {n} summaries | greedy writes the snippet's year {right} ({right / n:.0%})"
          f" | P(right year) mean {statistics.mean(probs):.3f}, median {statistics.median(probs):.3f}")
    print("years written most:", ", ".join(f"{y} ×{k}" for y, k in written.most_common(6)))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 150)
