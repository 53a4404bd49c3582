"""How often each grounding check catches an unsupported answer, and rejects a good one.

    python benchmarks/grounding_check.py --db /tmp/grounding.db --questions 320

Collects one trajectory per pocket test question (the CLI's `collect`, resumable) with the
pocket world's scripted reader at --error-rate, a seeded, imperfect policy whose summaries
sometimes miscopy years and names: its searches and summaries are the evidence (a 2-core CPU
collects 300 of them in a minute; the pocket model's own rollouts take about a second a
step). On that evidence the shipped pocket model writes the answer, from the answer prompt
the agent gives it, and the table asks of each answer:

- the oracle (the same reader with no mistakes, agent/worlds/pocket/policy.py, on the grounding
  prompt): is the answer stated by the trajectory's summaries? Revise = unsupported.
- the reference answer (normalised exact match, reward/autoeval.py): is it correct?
- the pocket model's own grounding step on that prompt (before): does it pass the answer?
- the evidence check (agent/evidence.py): does a cited source state the answer's claim?

and prints a Markdown table: unsupported answers caught, and correct answers wrongly
rejected, by the model's check alone (before) and with the evidence check beside it
(after: the agent as it is). Writes the counts and every case to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def collect(db: str, questions: int, split: str, error_rate: float) -> str:
    run = f"grounding-check:{split}:{error_rate:g}"
    cmd = [sys.executable, str(ROOT / "cli.py"), "--db", db, "collect", "--world", "pocket",
           "--model", f"scripted:pocket:{error_rate:g}", "--split", split,
           "--limit", str(questions), "--concurrency", "1", "--run", run]
    subprocess.run(cmd, check=True)
    return run


def model_actions(kind: str, prompts: list[str], concurrency: int) -> list:
    """The shipped pocket model's action for each prompt of one step kind (greedy, as the
    agent asks; None where it wrote nothing parseable)."""
    from concurrent.futures import ThreadPoolExecutor

    from store.records import GenRequest
    from agent.llm.hf import HFBackend
    from agent.parsing import parse_action
    from agent.worlds.pocket.assets import pocket_assets
    from agent.state import AgentConfig

    llm = HFBackend(str(pocket_assets().model_dir), max_batch=concurrency)
    budget = AgentConfig().max_new_tokens

    def act(prompt: str):
        gen = llm.generate(GenRequest(prompt=prompt, max_new_tokens=budget, purpose=kind))
        return parse_action(kind, gen.completions[0].text)[0]

    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:  # batched by the backend
            return list(pool.map(act, prompts))
    finally:
        llm.close()


def grounding_cases(store, run_name: str, concurrency: int) -> list[dict]:
    """One row per finished trajectory: the pocket model's answer and every verdict on it.

    The searches and summaries are the scripted reader's; the answer and its grounding
    verdict are the pocket model's, from the prompts the agent would give it."""
    from store.records import GenRequest
    from agent.worlds.pocket.assets import pocket_assets
    from agent.worlds.pocket.policy import ScriptedPolicy
    from agent.prompts import render_answer, render_check
    from store.records import Answer, CheckAnswer, SearchResult, SelectLink
    from reward.autoeval import exact_match
    from agent.evidence import check_answer

    oracle = ScriptedPolicy(pocket_assets().world_dir, error_rate=0.0, seed=0)
    run = store.get_run(run_name)
    refs = {q.id: q.answer for q in store.questions(pocket_assets().question_set)}
    cases = []
    for t in store.trajectories(run_id=run.id, status="finished"):
        t = store.trajectory(t.id)
        steps = [s for s in t.steps if s.chosen_index is not None]
        if not any(s.kind == "answer" for s in steps):
            continue
        from store.records import action_from_dict

        past = [action_from_dict(s.action) for s in steps if s.kind in ("decide", "summarize")
                and s.action["name"] != "Terminate"]
        sources = [[SearchResult.from_dict(r) for r in c.results] for c in t.searches if c.step_id]
        cases.append((t, past, sources))
    answers = model_actions("answer", [render_answer(t.question, past) for t, past, _ in cases],
                            concurrency)
    kept = [(c, a.answer) for c, a in zip(cases, answers) if isinstance(a, Answer)]
    prompts = [render_check("grounding", t.question, past, a) for (t, past, _), a in kept]
    verdicts = model_actions("grounding", prompts, concurrency)
    rows = []
    for ((t, past, sources), answer), prompt, verdict in zip(kept, prompts, verdicts):
        summaries = [a for a in past if isinstance(a, SelectLink)]
        said = oracle.generate(GenRequest(prompt=prompt)).completions[0].text
        rows.append({
            "trajectory": t.id, "answer": answer, "reference": refs.get(t.question_id),
            "unsupported": said.startswith("Revise_Answer"),
            "correct": bool(exact_match(answer, refs.get(t.question_id) or "")),
            "model_passes": isinstance(verdict, CheckAnswer) and verdict.passed,
            "evidence_passes": check_answer(answer, summaries, sources).ok,
        })
    return rows


def table(rows: list[dict]) -> tuple[str, dict]:
    bad = [r for r in rows if r["unsupported"]]
    good = [r for r in rows if r["correct"] and not r["unsupported"]]
    checks = {
        "model's grounding step alone (before)": lambda r: r["model_passes"],
        "evidence check alone": lambda r: r["evidence_passes"],
        "model's step + evidence check (after: the agent now)":
            lambda r: r["model_passes"] and r["evidence_passes"],
    }
    counts = {"trajectories": len(rows), "unsupported": len(bad), "correct_supported": len(good)}
    lines = ["| check | unsupported answers caught | correct answers wrongly rejected |",
             "|---|---|---|"]
    for name, passes in checks.items():
        caught = sum(not passes(r) for r in bad)
        rejected = sum(not passes(r) for r in good)
        counts[name] = {"caught": caught, "wrongly_rejected": rejected}
        lines.append(f"| {name} | {caught} of {len(bad)} ({_pct(caught, len(bad))}) "
                     f"| {rejected} of {len(good)} ({_pct(rejected, len(good))}) |")
    return "\n".join(lines), counts


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.0f}%" if b else "–"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", required=True, help="SQLite file or URL (resumable).")
    p.add_argument("--questions", type=int, default=320, help="Pocket test questions (one trajectory each).")
    p.add_argument("--split", default="test")
    p.add_argument("--error-rate", type=float, default=0.5, help="The scripted reader's mistake rate.")
    p.add_argument("--concurrency", type=int, default=32, help="Grounding prompts batched at once.")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "grounding_check.json"))
    args = p.parse_args()
    run = collect(args.db, args.questions, args.split, args.error_rate)
    from store.api import Store

    rows = grounding_cases(Store(args.db), run, args.concurrency)
    text, counts = table(rows)
    print(f"{len(rows)} finished trajectories; {counts['unsupported']} answers the oracle finds "
          f"unsupported, {counts['correct_supported']} correct and supported\n")
    print(text)
    command = " ".join([str(Path(sys.argv[0]).resolve().relative_to(ROOT)), *sys.argv[1:]])
    Path(args.out).write_text(json.dumps({"provenance": {"command": command, **provenance()},
                                          "counts": counts, "cases": rows}, indent=1) + "\n")


def provenance() -> dict:
    """What the numbers were measured with: commit, machine, versions, the model's hash."""
    import hashlib
    import platform

    import torch
    import transformers

    from agent.worlds.pocket.assets import pocket_assets

    weights = pocket_assets().model_dir / "model.safetensors"
    from benchmarks.provenance import commit

    return {"commit": commit(), "machine": f"{platform.processor() or platform.machine()}, "
            f"{__import__('os').cpu_count()} cores, no GPU",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "model_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}


if __name__ == "__main__":
    main()
