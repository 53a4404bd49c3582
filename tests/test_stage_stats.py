"""Improve's stage timings (trainer/stage_stats.py): every stage attempt leaves a row with its
wall time and peak memory in a real store, a failed one with its error, a stage a resumed run
skips none; `cli.py report` prints them."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from store.api import Store


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.close()


def test_a_stage_records_its_time_and_memory_and_a_failure_its_error(store):
    from trainer.stage_stats import stage

    run = store.get_or_create_run("imp", "improve")
    with stage(store, run.id, "grow", 1) as m:
        block = bytearray(8 * 2**20)  # touch some memory
        time.sleep(0.05)
    assert m.wall_s >= 0.05 and len(block)
    with pytest.raises(RuntimeError, match="judge down"):
        with stage(store, run.id, "rank", 1):
            raise RuntimeError("judge down\nsecond line")
    grow, rank = store.stage_stats(run.id)
    assert (grow.stage, grow.iteration, grow.error) == ("grow", 1, None)
    assert grow.wall_s >= 0.05 and grow.device == "cpu" and grow.peak_gpu_bytes is None
    assert grow.peak_rss_bytes > 8 * 2**20
    assert rank.stage == "rank" and rank.error == "RuntimeError: judge down"


def test_the_improver_times_each_stage_it_runs_and_not_one_a_resume_skips(store, tmp_path):
    from trainer.improve import ImproveOptions, Improver

    opts = ImproveOptions(name="imp", model="tiny", workdir=str(tmp_path))
    imp = Improver(store, opts, log=lambda m: None).open("none")
    assert imp._timed("build", 2, lambda a, b: a + b, 3, 4) == 7  # passes the stage's result on
    imp.mark(2, "build")
    imp._timed("build", 2, lambda: None)  # done before: a resumed run does not time it again
    rows = store.stage_stats(imp.improve_run.id)
    assert [(r.stage, r.iteration) for r in rows] == [("build", 2)]


def test_the_baseline_evaluation_of_a_real_improve_run_is_timed(store, tmp_path, monkeypatch):
    """Iteration 0 of improve on the pocket world (scripted policy, two held-out questions)
    leaves its evaluate row under the improve run."""
    from trainer.improve import ImproveOptions, Improver

    monkeypatch.setenv("RESTREACT_CACHE", str(tmp_path / "cache"))
    opts = ImproveOptions(world="pocket", model="scripted:pocket", eval_questions=2,
                          workdir=str(tmp_path))
    imp = Improver(store, opts, log=lambda m: None).prepare()
    imp.baseline()
    rows = store.stage_stats(imp.improve_run.id)
    assert [(r.stage, r.iteration, r.error) for r in rows] == [("evaluate", 0, None)]
    assert rows[0].wall_s > 0 and rows[0].peak_rss_bytes > 0
    imp.baseline()  # done: not run, not timed again
    assert len(store.stage_stats(imp.improve_run.id)) == 1


def test_report_prints_the_stage_rows(store, tmp_path):
    from cli import app

    run = store.get_or_create_run("imp", "improve")
    store.add_model_version(name="imp:it0", base="tiny", run_id=run.id, iteration=0,
                            metrics={"eval": {"exact_mean": 0.25, "exact_std": 0.0}})
    store.add_stage_stat(run.id, 0, "evaluate", 12.5, None, 3 * 2**30, "cpu")
    store.add_stage_stat(run.id, 1, "train", 98.0, 17 * 2**30, 4 * 2**30, "NVIDIA H100", "OOM: x")
    db = str(store.engine.url)
    got = CliRunner().invoke(app, ["--db", db, "report", "--out", str(tmp_path / "r.png")],
                             catch_exceptions=False)
    assert got.exit_code == 0, got.output
    lines = got.output.splitlines()
    assert any("evaluate" in x and "12.5" in x and "3.00" in x for x in lines)
    assert any("train" in x and "98.0" in x and "17.00" in x and "FAILED OOM: x" in x for x in lines)
    assert (tmp_path / "r.png").is_file()
