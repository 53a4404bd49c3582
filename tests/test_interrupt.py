"""Ctrl-C and SIGTERM: real signals sent to the real CLI while a CPU model is generating.

Each test starts `cli.py` in a child process over a real SQLite file, waits until the store
shows work under way (a step written: the next one is being generated), sends SIGINT or
SIGTERM, and checks what a user sees and what the store keeps: exit 130 (143 for SIGTERM),
one line saying how to resume, no abort ("terminate called ..."), no traceback, no
trajectory left `running`, nothing finished lost. Then the same command runs again and
resumes to the end. The moments are points in the work, never wall-clock delays, so a
loaded machine changes the timing but not the outcome.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from agent.worlds.pocket.assets import MODEL_DIR
from tests.harness import audit, cli_env, query, run_cli, signal_when, snapshot, sqlite_count

pytestmark = pytest.mark.skipif(not (MODEL_DIR / "config.json").is_file(),
                                reason="the pocket model is not in data/pocket/model")

STEPS = "SELECT COUNT(*) FROM steps"


def _assert_clean_stop(out, code: int, hint: str) -> None:
    assert out.killed, "the work finished before the signal's moment"
    assert out.returncode == code, (out.returncode, out.stderr[-2000:])
    assert "terminate called" not in out.stderr and "Aborted" not in out.stderr
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted (") and hint in last, last


def _statuses(db: Path) -> dict[str, int]:
    return dict(query(db, "SELECT status, COUNT(*) FROM trajectories GROUP BY status"))


def test_ctrl_c_during_ask_keeps_the_trajectory_and_a_rerun_resumes_it(tmp_path):
    db = tmp_path / "ask.db"
    env = cli_env(tmp_path)
    from agent.worlds.pocket.assets import pocket_question_rows

    question = next(r["question"] for r in pocket_question_rows() if r["split"] == "test")
    args = ["--db", str(db), "ask", "--world", "pocket", "--max-searches", "2", question]
    out = signal_when(args, env, tmp_path / "logs", "ask", lambda: sqlite_count(db, STEPS) >= 1)
    _assert_clean_stop(out, 130, "ask the same question again to resume it")
    assert _statuses(db) == {"interrupted": 1}
    kept = query(db, "SELECT id, idx, kind FROM steps ORDER BY idx")
    assert kept and [r[1] for r in kept] == list(range(len(kept)))

    again = run_cli(args, env)
    assert again.returncode in (0, 2), again.stderr[-2000:]  # 2: the model found no answer
    assert "resumed" in again.stdout
    assert set(_statuses(db)) <= {"finished", "failed"} and sum(_statuses(db).values()) == 1
    steps = query(db, "SELECT id, idx, kind FROM steps ORDER BY idx")
    assert steps[:len(kept)] == kept  # the steps before the signal were kept, not redone
    assert [r[1] for r in steps] == list(range(len(steps)))
    assert not audit(db, complete=True)


def test_sigterm_during_collect_stops_every_thread_and_a_rerun_finishes(tmp_path):
    db = tmp_path / "collect.db"
    env = cli_env(tmp_path)
    args = ["--db", str(db), "collect", "--world", "pocket", "--split", "dev", "--limit", "3",
            "--concurrency", "2", "--max-searches", "2", "--run", "sigterm"]
    out = signal_when(args, env, tmp_path / "logs", "collect",
                      lambda: sqlite_count(db, STEPS) >= 2, sig=signal.SIGTERM)
    _assert_clean_stop(out, 143, "re-run the same command to resume")
    statuses = _statuses(db)
    assert "running" not in statuses and statuses.get("interrupted", 0) >= 1, statuses
    assert not audit(db, complete=False)
    before = snapshot(db)

    again = run_cli(args, env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert set(_statuses(db)) <= {"finished", "failed"} and sum(_statuses(db).values()) == 3
    assert not before.lost_in(snapshot(db))
    assert not audit(db, complete=True)


def test_ctrl_c_during_eval_and_a_rerun_scores_each_question_once(tmp_path):
    db = tmp_path / "eval.db"
    env = cli_env(tmp_path)
    args = ["--db", str(db), "eval", "--world", "pocket", "--split", "dev", "--limit", "2",
            "--concurrency", "2", "--max-searches", "2", "--json"]
    out = signal_when(args, env, tmp_path / "logs", "eval", lambda: sqlite_count(db, STEPS) >= 1)
    _assert_clean_stop(out, 130, "re-run the same command to resume")
    assert "running" not in _statuses(db)
    assert sqlite_count(db, "SELECT COUNT(*) FROM evaluations") == 0  # nothing scored half-way

    again = run_cli(args, env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["questions"] == 2
    assert query(db, "SELECT COUNT(DISTINCT question_id), COUNT(*) FROM evaluations") == [(2, 2)]
    assert not audit(db, complete=True)


@pytest.mark.slow
def test_ctrl_c_during_training_records_no_model_version_and_leaves_no_half_model(tmp_path):
    from tests.tiny import build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny", hidden=32, layers=1)
    data = tmp_path / "alpaca.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Say {i}.", "output": f"{i} " * 20}) + "\n"
                            for i in range(64)))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    db, out_dir = tmp_path / "train.db", tmp_path / "adapter"
    env = cli_env(tmp_path, TMPDIR=str(scratch))
    args = ["--db", str(db), "train", "--alpaca", str(data), "--model", str(tiny),
            "--out", str(out_dir), "--epochs", "200"]
    # The trainer's scratch folder exists from the first training step to the end.
    out = signal_when(args, env, tmp_path / "logs", "train",
                      lambda: any(scratch.glob("restreact-trainer-*")))
    _assert_clean_stop(out, 130, "train")
    assert sqlite_count(db, "SELECT COUNT(*) FROM model_versions") == 0
    assert not out_dir.exists() and not out_dir.with_name("adapter.partial").exists()

    again = run_cli(args[:-1] + ["1"], env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out_dir / "adapter_config.json").is_file()
    assert sqlite_count(db, "SELECT COUNT(*) FROM model_versions") == 1


@pytest.mark.slow
def test_ctrl_c_during_improve_resumes_the_loop_where_it_stopped(tmp_path):
    from tests.tiny import build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny", hidden=32, layers=1)
    db, name = tmp_path / "improve.db", "sigint-improve"
    env = cli_env(tmp_path)
    args = ["--db", str(db), "improve", "--world", "pocket", "--model", str(tiny),
            "--teacher", "scripted:pocket:0.3", "--iterations", "1", "--grow-questions", "2",
            "--eval-questions", "2", "--samples", "2", "--concurrency", "2", "--max-searches", "2",
            "--workdir", str(tmp_path / "work"), "--name", name]
    # The baseline evaluation runs the tiny model: stop it after its first stored step.
    out = signal_when(args, env, tmp_path / "logs", "improve", lambda: sqlite_count(db, STEPS) >= 1)
    _assert_clean_stop(out, 130, "re-run the same command to resume")
    assert "running" not in _statuses(db)
    state = query(db, "SELECT state FROM runs WHERE name = :n", n=name)
    assert state and "done" not in json.loads(state[0][0] or "{}").get("it0", {})

    again = run_cli(args, env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not audit(db, complete=True)
    assert query(db, "SELECT COUNT(*) FROM model_versions") == [(2,)]  # baseline and iteration 1


@pytest.mark.parametrize("broken_by, sig, code, name", [
    (RuntimeError, signal.SIGINT, 130, "Ctrl-C"), (ModuleNotFoundError, signal.SIGINT, 130, "Ctrl-C"),
    (ValueError, signal.SIGINT, 130, "Ctrl-C"), (RuntimeError, signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_that_a_library_turns_into_its_own_error_still_ends_as_interrupted(
        monkeypatch, capsys, broken_by, sig, code, name):
    """A signal inside transformers' lazy import comes back as that library's error; after a
    stop was requested, the CLI still ends with the interrupted line and exit 130, whether the
    error escapes the command or reaches one of its one-line error handlers."""
    import os

    import cli
    from agent import interrupt

    def command():
        interrupt.request(sig)
        try:
            raise broken_by("Could not import module 'Trainer'")
        except ValueError as e:  # what a command's own handler does with a ValueError
            cli.fail(str(e))

    class Left(Exception):
        pass

    def fake_exit(code):
        raise Left(code)

    monkeypatch.setattr(cli, "app", command)
    monkeypatch.setattr(os, "_exit", fake_exit)
    try:
        with pytest.raises(Left) as left:
            cli.main()
    finally:
        interrupt.reset()
    assert left.value.args == (code,)
    err = capsys.readouterr().err
    assert f"interrupted ({name})" in err and "error:" not in err, err
    assert interrupt.requested_signal() == signal.SIGINT  # reset forgets which signal it was


def test_an_error_without_a_signal_is_not_taken_for_one(monkeypatch):
    import cli

    def command():
        raise RuntimeError("a real bug")

    monkeypatch.setattr(cli, "app", command)
    with pytest.raises(RuntimeError, match="a real bug"):
        cli.main()
