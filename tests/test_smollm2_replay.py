"""The shipped SmolLM2 warm start's traffic, replayed: one pocket question through the whole
graph in seconds, no model needed.

The cassette (tests/cassettes/smollm2_pocket_ask.jsonl) was recorded from a real run of
SmolLM2-135M-Instruct with the shipped adapter (data/pocket/smollm2) on the demo world:

    cli.py ask --world pocket --model smollm2 --adapter data/pocket/smollm2 \
        --record tests/cassettes/smollm2_pocket_ask.jsonl "Where were The Silent Lanterns formed?"

Its prompts carry SmolLM2's own ChatML template, which is how the test knows the traffic is the
real model's. Re-record after changing a prompt (tests/test_smollm2.py runs the model live).
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

from tests.harness import cli_env, run_cli

CASSETTE = Path(__file__).parent / "cassettes" / "smollm2_pocket_ask.jsonl"
QUESTION = "Where were The Silent Lanterns formed?"


def _recorded():
    return [json.loads(line) for line in CASSETTE.read_text().splitlines() if line.strip()]


def _recorded_answer() -> str:
    """The answer the model wrote in the recorded answer step."""
    for rec in _recorded():
        if rec["type"] == "llm" and rec["request"]["prompt"].startswith("# restreact answer"):
            text = rec["generation"]["completions"][0]["text"]
            return re.search(r'answer="([^"]*)"', text).group(1)
    raise AssertionError("no answer step in the cassette")


def test_the_cassette_is_smollm2s_own_traffic():
    llm = [r for r in _recorded() if r["type"] == "llm"]
    assert llm and all(r["generation"]["rendered_prompt"].startswith("<|im_start|>system")
                       for r in llm)


def test_the_recorded_warm_start_answers_through_the_graph(tmp_path):
    db = tmp_path / "replay.db"
    r = run_cli(["--db", str(db), "ask", "--world", "pocket", "--model", "smollm2",
                 "--replay", str(CASSETTE), QUESTION], cli_env(tmp_path), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    con = sqlite3.connect(db)
    status, final = con.execute("select status, final_answer from trajectories").fetchone()
    steps = con.execute("select kind, status, action is not null from steps order by id").fetchall()
    assert status == "finished" and final == _recorded_answer()
    assert all(ok == "ok" and parsed for _, ok, parsed in steps)
    kinds = [k for k, _, _ in steps]
    assert kinds[0] == "decide" and kinds[-3:] == ["answer", "relevance", "grounding"]
    assert "summarize" in kinds
