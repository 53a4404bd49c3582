"""Progress (agent/progress.py): drawn on a terminal, silent under --json or off a terminal."""

from __future__ import annotations

import io
import json

import pytest

from agent.progress import ENV, Display, wanted
from tests.harness import cli_env, run_cli


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_wanted_only_on_a_terminal_and_never_under_json(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert wanted(stream=_Tty()) and not wanted(stream=io.StringIO())
    assert not wanted(as_json=True, stream=_Tty())
    monkeypatch.setenv(ENV, "0")
    assert not wanted(stream=_Tty())
    monkeypatch.setenv(ENV, "1")
    assert wanted(stream=io.StringIO()) and not wanted(as_json=True)


def test_a_quiet_display_takes_every_call_and_draws_nothing(capsys):
    with Display(enabled=False) as d:
        bar = d.stage(1, "train", 3, total=2)
        bar.on_train_log({"epoch": 1.0, "loss": 2.5, "num_input_tokens_seen": 100})
        d.bar("collect", total=4, done=1).on_collected()
        d.bar("rank").on_count(3, 5)
        d.iteration_done(1)
    assert capsys.readouterr() == ("", "")


def _drawn(run) -> str:
    from rich.console import Console

    out = io.StringIO()
    with Display(console=Console(file=out, force_terminal=True, width=150)) as d:
        run(d)
    return out.getvalue()


def test_train_bar_shows_loss_and_tokens_per_second():
    text = _drawn(lambda d: d.bar("train", total=2).on_train_log(
        {"epoch": 1.0, "loss": 1.2345, "num_input_tokens_seen": 5000}))
    assert "train" in text and "loss 1.234" in text and "tok/s" in text


def test_improve_shows_iteration_and_stage():
    def run(d):
        d.stage(0, "evaluate", 2, total=4).on_collected()
        bar = d.stage(2, "grow", 2, total=3)
        bar.on_collected()
        bar.on_collected()

    text = _drawn(run)
    assert "iteration 2/2: grow" in text and "2/3" in text and "traj/s" in text


COLLECT = ["collect", "--world", "pocket", "--model", "scripted:pocket:0.3", "--split", "train",
           "--limit", "3", "--concurrency", "1"]


def test_collect_off_a_terminal_prints_no_progress(tmp_path):
    res = run_cli(["--db", str(tmp_path / "a.db")] + COLLECT, cli_env(tmp_path))
    assert res.returncode == 0, res.stderr[-1500:]
    assert "━" not in res.stdout + res.stderr and "traj/s" not in res.stdout + res.stderr
    assert "3 finished" in res.stdout


def test_collect_draws_its_bar_where_progress_is_wanted(tmp_path):
    res = run_cli(["--db", str(tmp_path / "a.db")] + COLLECT, cli_env(tmp_path, **{ENV: "1"}))
    assert res.returncode == 0, res.stderr[-1500:]
    assert "collect" in res.stderr and "traj/s" in res.stderr and "3/3" in res.stderr
    assert "traj/s" not in res.stdout  # stdout keeps only the result


@pytest.mark.slow
def test_eval_json_stays_quiet_even_where_progress_is_wanted(tmp_path):
    res = run_cli(["--db", str(tmp_path / "a.db"), "eval", "--world", "pocket", "--model",
                   "scripted:pocket:0.3", "--split", "dev", "--limit", "2", "--json"],
                  cli_env(tmp_path, **{ENV: "1"}))
    assert res.returncode == 0, res.stderr[-1500:]
    assert json.loads(res.stdout)["questions"] == 2
    assert "━" not in res.stderr and "traj/s" not in res.stderr
