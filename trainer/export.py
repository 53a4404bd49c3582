"""Export: the improved model as a plain Hugging Face model, the collected data as a dataset.

    python cli.py export model --iteration 2 --out merged/    # LoRA folded into the base
    python cli.py export data --run NAME --out data/          # ranked steps + SFT examples

The model folder is what `AutoModelForCausalLM.from_pretrained` and vLLM load as is:
config, safetensors weights, tokenizer and its chat template, no adapter left. The data
folder is a `datasets.DatasetDict` (`load_from_disk`) with two splits, `steps` (every ranked
step: its samples, the judge's ranking and the trajectory it came from) and `sft` (the
examples training takes from them, with the judge's pick), and the same rows as JSONL.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Optional

MARKER = "restreact_export.json"


class ExportError(RuntimeError):
    """The export cannot be made; the message is one line for the user."""


def _fresh_dir(out: Path) -> Path:
    """Refuse to write into a folder that holds something other than an earlier export."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise ExportError(f"{out} exists and is not an earlier export; choose another --out or remove it")
    return out


# --- model ---------------------------------------------------------------------------------


def merge_model(base: str, adapter: Optional[str], out: str | Path, lineage: dict,
                stage: Callable[[str], None] = lambda s: None) -> Path:
    """Load `base`, fold the LoRA `adapter` into it (none: the base as is) and save to `out`.

    Written to a sibling `.partial` folder first and renamed into place, so a crash never
    leaves a half-written model where a loader would find it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = _fresh_dir(Path(out))
    stage("load base")
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
        tok = AutoTokenizer.from_pretrained(adapter if adapter and _has_tokenizer(adapter) else base)
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot load base model {base!r}: {str(e).splitlines()[0]}") from None
    if adapter:
        from peft import PeftModel

        stage("merge adapter")
        if not Path(adapter, "adapter_config.json").is_file():
            raise ExportError(f"no LoRA adapter in {adapter} (adapter_config.json missing)")
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    stage("save")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model.save_pretrained(partial)
        tok.save_pretrained(partial)
        (partial / MARKER).write_text(json.dumps(lineage, indent=2, default=str))
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise ExportError(f"cannot save the model to {out}: {e.strerror or e}") from None
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return out


def _has_tokenizer(folder: str) -> bool:
    return any(Path(folder, f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))


def model_version_for(store, run, iteration: Optional[int]):
    """The improve run's model version of `iteration` (default: the best, i.e. promoted last)."""
    mvs = sorted((mv for mv in store.model_versions() if mv.run_id == run.id), key=lambda m: m.iteration)
    if not mvs:
        raise ExportError(f"improve run {run.name} has no model versions yet")
    if iteration is None:
        promoted = [mv for mv in mvs if mv.promoted]
        return (promoted or mvs)[-1]
    mv = next((m for m in mvs if m.iteration == iteration), None)
    if mv is None:
        have = ", ".join(str(m.iteration) for m in mvs)
        raise ExportError(f"improve run {run.name} has no iteration {iteration} (it has {have})")
    return mv


def export_model(mv, out: str | Path, stage: Callable[[str], None] = lambda s: None) -> Path:
    """A model version as a plain model: base + adapter merged, or a fully trained one as is."""
    lineage = {"model_version": mv.name, "iteration": mv.iteration, "base": mv.base,
               "adapter": mv.adapter_path, "run_id": mv.run_id, "promoted": mv.promoted,
               "metrics": mv.metrics}
    path = mv.adapter_path
    if path and not Path(path, "adapter_config.json").is_file() and Path(path, "config.json").is_file():
        return merge_model(path, None, out, lineage, stage)  # `train --full`: already whole
    return merge_model(mv.base, path, out, lineage, stage)


# --- data ----------------------------------------------------------------------------------


def source_runs(store, run) -> list[tuple[Optional[int], object]]:
    """(iteration, run) whose steps are exported: an improve run's grow runs, or the run itself."""
    if run.kind != "improve":
        return [(None, run)]
    from trainer.history import grow_runs

    return sorted(grow_runs(store, run).items(), key=lambda kv: kv[0])


def step_rows(store, run, judge: str, version: str) -> tuple[list[dict], list[dict]]:
    """(steps, sft): one row per step the judge ranked, one per example training takes."""
    from trainer.examples import examples_from_steps

    clean = (run.config or {}).get("trajectories") == "clean"
    steps_out, sft_out = [], []
    for it, src in source_runs(store, run):
        steps = store.steps_of_run(src.id, status="finished", min_samples=1)
        questions = {t.id: (t.question_id, t.question) for t in store.trajectories(run_id=src.id)}
        by_id = {s.id: s for s in steps}
        for s in steps:
            r = _ranking(s, judge, version)
            if r is None:
                continue
            qid, question = questions.get(s.trajectory_id, (None, ""))
            steps_out.append({
                "run": src.name, "iteration": it, "trajectory_id": s.trajectory_id,
                "question_id": qid, "question": question, "step_id": s.id, "step_index": s.idx,
                "kind": s.kind, "prompt": s.prompt, "chosen_index": s.chosen_index,
                "samples": [x.text for x in s.samples],
                "perplexities": [x.perplexity for x in s.samples],
                "parsed": [x.action is not None for x in s.samples],
                "judge": r.judge, "prompt_version": r.prompt_version, "ranking_status": r.status,
                "best_index": r.best_index, "order": list(r.order or []), "bad": list(r.bad or []),
                "explanation": r.explanation or ""})
        for ex in examples_from_steps(steps, judge, version, clean_only=clean):
            s = by_id[ex.step_id]
            r = _ranking(s, judge, version)
            qid, question = questions.get(s.trajectory_id, (None, ""))
            sft_out.append({
                "prompt": ex.prompt, "completion": ex.completion, "run": src.name,
                "iteration": it, "trajectory_id": s.trajectory_id, "question_id": qid,
                "question": question, "step_id": s.id, "kind": s.kind,
                "judge": judge, "prompt_version": version,
                "picked_index": r.best_index if r else None,
                "rank_order": list(r.order or []) if r else [],
                "bad": list(r.bad or []) if r else []})
    return steps_out, sft_out


def _ranking(step, judge: str, version: str):
    mine = [r for r in step.rankings if r.judge == judge and r.prompt_version == version]
    return max(mine, key=lambda r: r.id) if mine else None


def export_data(store, run, out: str | Path, judge: Optional[str] = None,
                stage: Callable[[str], None] = lambda s: None) -> dict:
    """Write `out/` (a DatasetDict: steps, sft) and `out/jsonl/{steps,sft}.jsonl`; row counts."""
    from reward.ranker import prompt_version

    judge = judge or (run.config or {}).get("judge") or "rules"
    version = prompt_version(judge)
    out = _fresh_dir(Path(out))
    stage("read the store")
    steps, sft = step_rows(store, run, judge, version)
    if not steps:
        raise ExportError(f"run {run.name} has no steps ranked by {judge} ({version}): "
                          f"run `rank --run {run.name}` first")
    stage("write dataset")
    from datasets import Dataset, DatasetDict

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    DatasetDict({"steps": Dataset.from_list(steps), "sft": Dataset.from_list(sft)}).save_to_disk(str(partial))
    (partial / "jsonl").mkdir()
    for name, rows in (("steps", steps), ("sft", sft)):
        with open(partial / "jsonl" / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts = {"steps": len(steps), "sft": len(sft)}
    (partial / MARKER).write_text(json.dumps({"run": run.name, "judge": judge,
                                              "prompt_version": version, "rows": counts}, indent=2))
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return counts
