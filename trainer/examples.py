"""Training examples: one per step, prompt = what the model saw, completion = the best output.

The Improve phase of ReST-meets-ReAct turns every step of a finished trajectory into one
fine-tuning example. The prompt is the step's stored rendered prompt, verbatim (chat
template and BOS included, exactly the text the local backend tokenized with
`add_special_tokens=False`), so the tokens the model trains on are the tokens it saw at
rollout. The completion is the sample the ranker put first (off-policy: the rollout
itself followed the lowest-perplexity sample). Alpaca-format files (instruction, input,
output) become examples too.

`tokenize_example` tokenizes prompt and completion separately and concatenates the ids;
tokenizing the joined text instead could merge tokens across the boundary and shift the
prompt away from what the model saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence


@dataclass(frozen=True)
class Example:
    """One supervised example. The tokenizer's EOS is appended to `completion` at
    tokenization (the tokenizer is not known when examples are built from the store), so
    the model learns to stop after the chosen output."""

    step_id: int | None  # the store's step id; None for Alpaca or other external data
    prompt: str  # verbatim model input, special tokens included
    completion: str  # the chosen output text, without EOS


# --- from ranked steps ---------------------------------------------------------------


def ranking_of(step: Any, judge: str, prompt_version: str | None):
    """The newest ranking of this step by `judge` (and prompt version, when given)."""
    mine = [r for r in step.rankings
            if r.judge == judge and (prompt_version is None or r.prompt_version == prompt_version)]
    return max(mine, key=lambda r: r.id or 0) if mine else None


def _pick(step: Any, judge: str | None, prompt_version: str | None, use_unranked: bool,
          drop_bad: bool) -> int | None:
    """Index of the sample this step trains on, or None to leave the step out."""
    ranking = ranking_of(step, judge, prompt_version) if judge is not None else None
    if ranking is not None and ranking.status == "ok":
        best = ranking.best_index if ranking.best_index is not None else (
            ranking.order[0] if ranking.order else None)
        if best is None or (drop_bad and best in (ranking.bad or [])):
            return None  # the judge found nothing good here: keep it out of training
        return best
    # No usable ranking (unranked, or the judge's output could not be parsed).
    if judge is None or use_unranked:
        return step.chosen_index
    return None


def clean_trajectories(steps: Sequence[Any], judge: str, prompt_version: str | None) -> set[int]:
    """Ids of the trajectories whose own path the judge passes at every step.

    A trajectory is clean when, at each of its steps, the sample the rollout took (the
    step's chosen index) was ranked by `judge` and not marked bad. A step the judge did not
    rank, or whose reply could not be parsed, leaves its trajectory unverified, so not clean.

    Why: on the pocket world the rule judge's per-step picks come mostly from trajectories
    that end wrong (58 % of the examples of a 100-question CPU grow run), while the
    trajectories it passes end right 98 % of the time (84 of 86, over 300 grown). No
    reference answer is read to tell them apart (docs/NOTEBOOK.md, label-free filters).
    """
    verdicts: dict[int, bool] = {}
    for step in steps:
        ranking = ranking_of(step, judge, prompt_version)
        ok = (ranking is not None and ranking.status == "ok" and step.chosen_index is not None
              and step.chosen_index not in (ranking.bad or []))
        verdicts[step.trajectory_id] = verdicts.get(step.trajectory_id, True) and ok
    return {tid for tid, ok in verdicts.items() if ok}


def examples_from_steps(steps: Sequence[Any], judge: str | None, prompt_version: str | None,
                        use_unranked: bool = False, drop_bad: bool = True,
                        clean_only: bool = False) -> list[Example]:
    """One example per step, trained on the top-ranked sample of `judge`'s ranking.

    `steps` are store rows (`Store.steps_of_run(run_id, status="finished")`, which already
    leaves failed trajectories out), with their samples and rankings loaded.
    - judge: whose rankings to use; None = ignore rankings and train on each step's chosen
      (lowest-perplexity) sample, the paper's no-reranking baseline.
    - prompt_version: only rankings made with this ranker prompt version; None = any
      (the newest wins).
    - use_unranked: a step without a usable ranking trains on its chosen sample instead of
      being left out.
    - drop_bad: leave the step out when the judge marked its best sample bad.
    - clean_only: keep only the steps of `clean_trajectories` (needs a judge), a
      rejection-sampling filter on top of the per-step pick.
    Steps whose picked sample did not parse are left out; a step id appears at most once.
    """
    if clean_only:
        if judge is None:
            raise ValueError("clean_only needs a judge: a clean trajectory is one the judge passes")
        keep = clean_trajectories(steps, judge, prompt_version)
        steps = [s for s in steps if s.trajectory_id in keep]
    out: list[Example] = []
    seen: set[int] = set()
    for step in steps:
        if step.id in seen:
            continue
        seen.add(step.id)
        idx = _pick(step, judge, prompt_version, use_unranked, drop_bad)
        samples = {s.idx: s for s in step.samples}
        sample = samples.get(idx) if idx is not None else None
        if sample is None or sample.action is None:  # unparseable: never teach it
            continue
        out.append(Example(step_id=step.id, prompt=step.prompt, completion=sample.text))
    return out


# --- Alpaca-format files -------------------------------------------------------------


def _alpaca_records(path: Path) -> Iterable[tuple[str, Any]]:
    """(where, record) pairs from a JSON list or a JSONL file; `where` names file and line."""
    from agent.inputs import InputError, json_error, json_line, read_lines

    lines = list(read_lines(path, "Alpaca file"))  # InputError (a ValueError) names the line
    if "\n".join(line for _, line in lines).lstrip().startswith("["):
        try:
            items = json.loads("\n".join(line for _, line in lines))
        except json.JSONDecodeError as e:
            raise json_error(path, None, e) from None
        except RecursionError:
            raise InputError(f"{path}: invalid JSON (nested too deeply)") from None
        if not isinstance(items, list):
            raise InputError(f"{path}:1: expected a list of records")
        for i, rec in enumerate(items):
            yield f"{path}: item {i + 1}", rec
        return
    for n, line in lines:
        if line.strip():
            yield f"{path}:{n}", json_line(path, n, line)


def alpaca_prompt(instruction: str, input: str = "", tokenizer: Any = None) -> str:
    """The prompt text for one Alpaca record, rendered the way the model will see it.

    With a chat template: one user message (instruction, blank line, input) and the
    assistant header. Without: the plain "### Instruction / ### Input / ### Response"
    layout, after the tokenizer's BOS when it has one (tokenization adds no special tokens).
    """
    user = f"{instruction}\n\n{input}" if input else instruction
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": user}],
                                             add_generation_prompt=True, tokenize=False)
    body = f"### Instruction:\n{instruction}\n\n"
    if input:
        body += f"### Input:\n{input}\n\n"
    body += "### Response:\n"
    bos = getattr(tokenizer, "bos_token", None) if tokenizer is not None else None
    return (bos or "") + body


def load_alpaca(path: str | Path, tokenizer: Any = None) -> list[Example]:
    """Examples from an Alpaca-format JSONL file or JSON list (instruction, input?, output).

    Pass the tokenizer of the model to be trained so prompts use its chat template.
    A malformed file raises ValueError with one line naming the file and line.
    """
    from agent.inputs import InputError

    path = Path(path)
    out = []
    for where, rec in _alpaca_records(path):
        if not isinstance(rec, dict):
            raise InputError(f"{where}: expected an object with instruction/input/output")
        missing = [k for k in ("instruction", "output") if k not in rec]
        if missing:
            raise InputError(f"{where}: missing field(s) {', '.join(missing)}")
        fields = {k: rec.get(k, "") for k in ("instruction", "input", "output")}
        bad = [k for k, v in fields.items() if v is not None and not isinstance(v, str)]
        if bad:
            raise InputError(f"{where}: field(s) {', '.join(bad)} must be strings")
        prompt = alpaca_prompt(fields["instruction"], fields["input"] or "", tokenizer)
        out.append(Example(step_id=None, prompt=prompt, completion=fields["output"]))
    if not out:
        raise InputError(f"{path}: no Alpaca records")
    return out


# --- tokenization --------------------------------------------------------------------


def completion_ids(tok: Any, completion: str) -> list[int]:
    """The completion's token ids, ending in exactly one EOS."""
    return _with_eos(tok, tok(completion, add_special_tokens=False)["input_ids"])


def _with_eos(tok: Any, ids: list[int]) -> list[int]:
    eos = tok.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids = ids + [eos]
    return ids


def tokenize_example(tok: Any, ex: Example, max_length: int) -> dict[str, list[int]]:
    """input_ids = prompt ids + completion ids (+ EOS); completion_mask 0 on the prompt, 1 after.

    Prompt ids are `tok(prompt, add_special_tokens=False)`, the same call the local backend
    makes at rollout. Too long: the prompt loses its left end (the completion is what is
    learned); a completion longer than max_length alone keeps its first max_length tokens.
    """
    p = tok(ex.prompt, add_special_tokens=False)["input_ids"]
    return _join(p, completion_ids(tok, ex.completion), max_length)


def tokenize_examples(tok: Any, examples: Sequence[Example], max_length: int,
                      chunk: int = 2048) -> list[dict[str, list[int]]]:
    """`tokenize_example` for many examples, the same rows, through batched tokenizer calls.

    Why: a fast tokenizer encodes a list in parallel in Rust, while one call per example is
    bound by Python overhead; the pocket warm start tokenizes ~200k examples.
    """
    rows = []
    for i in range(0, len(examples), chunk):
        part = examples[i:i + chunk]
        prompts = tok([ex.prompt for ex in part], add_special_tokens=False)["input_ids"]
        completions = tok([ex.completion for ex in part], add_special_tokens=False)["input_ids"]
        rows += [_join(p, _with_eos(tok, c), max_length) for p, c in zip(prompts, completions)]
    return rows


def _join(p: list[int], c: list[int], max_length: int) -> dict[str, list[int]]:
    c = c[:max_length]
    keep = max_length - len(c)
    p = p[max(0, len(p) - keep):] if keep > 0 else []
    return {"input_ids": p + c, "completion_mask": [0] * len(p) + [1] * len(c)}
