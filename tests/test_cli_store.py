"""The store-browsing commands driven like a user: `questions import/list`, `logs`, `show`."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from store.api import Store
from tests.conftest import REPO, write_trajectory
from tests.harness import HANG_S

HEAVY = ("torch", "transformers", "trl", "peft")


def run_cli(*args: str, db: str) -> subprocess.CompletedProcess:
    """`python cli.py --db DB ARGS…` from the repository root, as a user types it."""
    return subprocess.run([sys.executable, "cli.py", "--db", db, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=HANG_S)


def invoke(*args: str, db: str):
    """The same command in-process (faster) for the tests that read its output."""
    from cli import app

    return CliRunner().invoke(app, ["--db", db, *args], catch_exceptions=False)


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "cli.db")


def populate(url: str) -> dict:
    """Two finished trajectories, the first with a ranking; closed before the CLI reads them."""
    store = Store(url)
    first = write_trajectory(store, "Who founded Acme?")
    second = write_trajectory(store, "Where is Lowtown?", run_name="collect-2")
    store.add_ranking(first["step_ids"][0], "rule", "v1", "ok", best_index=0, order=[0, 1], bad=[1],
                      explanation="#2 does not parse")
    store.close()
    return {"first": first, "second": second}


@pytest.fixture
def populated(db) -> dict:
    return populate(db)


# --- start-up ---------------------------------------------------------------------------


def test_importing_cli_loads_no_heavy_library():
    code = f"import sys, cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=HANG_S)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_help_lists_the_store_commands(db):
    out = run_cli("--help", db=db)
    assert out.returncode == 0, out.stderr
    for command in ("logs", "show", "questions"):
        assert command in out.stdout
    sub = run_cli("questions", "--help", db=db)
    assert "import" in sub.stdout and "list" in sub.stdout


# --- questions import / list ------------------------------------------------------------

# shared/ sits beside the clone here, inside it on some machines
BAMTWOOGLE = next((p for p in (REPO / "shared" / "data" / "bamtwoogle.csv",
                               REPO.parent / "shared" / "data" / "bamtwoogle.csv") if p.exists()),
                  REPO.parent / "shared" / "data" / "bamtwoogle.csv")


@pytest.mark.skipif(not BAMTWOOGLE.exists(), reason=f"BamTwoogle CSV not found at {BAMTWOOGLE}")
def test_bamtwoogle_imports_once(db):
    with open(BAMTWOOGLE, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))

    out = run_cli("questions", "import", str(BAMTWOOGLE), "--set", "bamtwoogle", "--split", "test", db=db)
    assert out.returncode == 0, out.stderr
    assert f"added {len(rows)} of {len(rows)}" in out.stdout
    again = run_cli("questions", "import", str(BAMTWOOGLE), "--set", "bamtwoogle", db=db)
    assert f"added 0 of {len(rows)}" in again.stdout

    store = Store(db)
    stored = store.questions("bamtwoogle")
    assert [(q.text, q.answer, q.split) for q in stored] == [(r["question"], r["answer"], "test") for r in rows]
    listed = invoke("questions", "list", db=db)
    assert "bamtwoogle" in listed.stdout and str(len(rows)) in listed.stdout


def test_jsonl_import_keeps_ids_splits_and_extra_fields(tmp_path, db):
    path = tmp_path / "qs.jsonl"
    path.write_text('{"id": "a", "question": "Who?", "answer": "Ada", "hops": 2}\n\n'
                    '{"id": "b", "question": "Where?", "split": "dev"}\n')
    out = invoke("questions", "import", str(path), "--set", "mine", db=db)
    assert out.exit_code == 0 and "added 2 of 2" in out.stdout
    a, b = Store(db).questions("mine")
    assert (a.ext_id, a.answer, a.split, a.meta) == ("a", "Ada", "train", {"hops": 2})
    assert (b.ext_id, b.answer, b.split) == ("b", None, "dev")


MALFORMED = {
    "no_question_column.csv": ("id,query_text\n1,Who?\n", ":1:"),
    "empty_question.csv": ("question,answer\nWho?,Ada\n  ,Bob\n", ":3:"),
    "bad_json.jsonl": ('{"question": "Who?"}\n{"question": "Where?"}\n{"question": \n', ":3:"),
    "not_an_object.jsonl": ('{"question": "Who?"}\n["Where?"]\n', ":2:"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_file_names_the_line_and_imports_nothing(tmp_path, db, name):
    good = tmp_path / "good.csv"
    good.write_text("question,answer\nFirst?,One\n")
    assert run_cli("questions", "import", str(good), "--set", "s", db=db).returncode == 0

    body, where = MALFORMED[name]
    path = tmp_path / name
    path.write_text(body)
    out = run_cli("questions", "import", str(path), "--set", "s", db=db)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"{path}{where}" in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert [q.text for q in Store(db).questions("s")] == ["First?"]  # nothing of the bad file


def test_missing_file_is_one_line_and_creates_no_set(tmp_path, db):
    out = run_cli("questions", "import", str(tmp_path / "nope.csv"), "--set", "s", db=db)
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0 and "nope.csv" in out.stderr
    assert Store(db).question_sets() == []


def test_questions_list_on_an_empty_store(db):
    out = invoke("questions", "list", db=db)
    assert out.exit_code == 0 and "no question sets" in out.stdout


# --- logs -------------------------------------------------------------------------------


def test_logs_shows_the_newest_calls_last(db, populated):
    out = invoke("logs", db=db)
    assert out.exit_code == 0
    shown = [line for line in out.stdout.splitlines() if line.startswith("╭─ #")]
    assert [s.split()[1] for s in shown] == ["#2", "#3", "#4"]  # default -n 3, oldest first
    assert "tiny" in shown[0] and "Where is Lowtown?" in out.stdout
    assert "31+13 tokens" in out.stdout and "0.25 s" in out.stdout


def test_logs_json_filters(db, populated):
    def logs_json(*args):
        out = invoke("logs", "--json", *args, db=db)
        assert out.exit_code == 0
        return json.loads(out.stdout)

    every = logs_json("-n", "0")
    assert [c["id"] for c in every] == [1, 2, 3, 4]
    assert every[0]["responses"][1] == "Serch(broken" and every[0]["purpose"] == "decide"
    assert [c["id"] for c in logs_json("-n", "0", "-q", "LOWTOWN")] == [3, 4]
    tid = populated["first"]["trajectory_id"]
    assert {c["trajectory_id"] for c in logs_json("-n", "0", "--trajectory", str(tid))} == {tid}
    assert logs_json("-q", "nothing like this") == []


def test_logs_truncates_long_prompts_unless_full(db):
    from store.records import Completion, Generation

    store = Store(db)
    prompt = "FEWSHOTSTART " + "example " * 200 + " QUESTIONEND"
    store.log_llm_call(Generation(prompt, [Completion("RESPONSE")], model="m"), purpose="rank")
    store.close()
    short = invoke("logs", db=db).stdout
    assert "QUESTIONEND" in short and "FEWSHOTSTART" not in short  # the end of a prompt matters
    assert "FEWSHOTSTART" in invoke("logs", "--full", db=db).stdout


def test_logs_on_an_empty_store_and_bad_count(db):
    assert "no LLM calls" in invoke("logs", db=db).stdout
    out = run_cli("logs", "-n", "-1", db=db)
    assert out.returncode != 0 and "--count" in out.stderr


# --- show -------------------------------------------------------------------------------


def test_show_draws_the_whole_trajectory(db, populated):
    out = invoke("show", str(populated["first"]["trajectory_id"]), db=db)
    assert out.exit_code == 0
    text = out.stdout
    for expected in ("Who founded Acme?", "finished", "decide", "answer", "✔ #1", "ppl 1.25",
                     "unknown action 'Serch'", "ranked by rule (v1) ok: best #1 · #1 > #2 · bad #2",
                     "search 'Acme founder'", "[1] Acme Corp", "https://pocket.example/acme",
                     "Acme was founded by Ada Quill.", "final answer  Ada Quill [link_id=1]"):
        assert expected in text, expected


def test_show_without_id_shows_the_newest(db, populated):
    out = invoke("show", db=db)
    assert out.exit_code == 0
    assert "Where is Lowtown?" in out.stdout and "Who founded Acme?" not in out.stdout


def test_show_json_and_unknown_ids(db_url):
    """Real subprocesses, on both backends: --db takes a PostgreSQL URL as well."""
    populate(db_url)
    out = run_cli("show", "1", "--json", db=db_url)
    assert out.returncode == 0, out.stderr
    t = json.loads(out.stdout)
    assert (t["id"], t["status"], t["final_answer"]) == (1, "finished", "Ada Quill [link_id=1]")
    assert [s["kind"] for s in t["steps"]] == ["decide", "answer"]
    assert t["steps"][0]["samples"][1]["parse_error"] == "unknown action 'Serch'"
    assert t["steps"][0]["rankings"][0]["order"] == [0, 1]
    assert t["searches"][0]["results"][0]["url"] == "https://pocket.example/acme"

    missing = run_cli("show", "999", db=db_url)
    assert missing.returncode == 1 and missing.stderr.strip() == "error: no trajectory 999"


def test_show_on_an_empty_store(db):
    out = run_cli("show", db=db)
    assert out.returncode == 1 and out.stderr.strip().startswith("error: no trajectories yet")


def test_live_steps_render_like_stored_ones():
    """`ask` draws store.records objects with the same functions `show` uses for rows."""
    from rich.console import Console

    from agent.console import render_search, render_step
    from store.records import Sample, Search, SearchCall, SearchResult, Step

    step = Step("decide", "p", [Sample("[bold]x[/bold]", 2, -1.0, action=Search("q", "t")),
                                Sample("junk", 1, -5.0, parse_error="no call")], chosen=0, index=3)
    call = SearchCall("q", "web", [SearchResult(1, "T [link_id=1]", "https://x.example", "snip")])
    out = Console(record=True, width=100)
    out.print(render_step(step))
    out.print(render_search(call))
    text = out.export_text()
    assert "step 3 decide" in text and "✔ #1" in text and "[bold]x[/bold]" in text  # markup kept as text
    assert "✗ no call" in text and "[1] T [link_id=1]  https://x.example" in text
