"""Experiment tracking (trainer/tracking.py): `--report-to` reaches TRL, and the improve loop's
numbers per iteration land under the same run; read back from TensorBoard's event files
(and from W&B's offline log with wandb's own reader, when wandb is installed).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import cli_env, run_cli

needs_tb = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                              reason="tensorboard is not installed (pip install '.[tracking]')")


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from the TensorBoard event files directly in `folder`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(folder))
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def _alpaca(tmp_path: Path) -> Path:
    path = tmp_path / "alpaca.jsonl"
    rows = [{"instruction": f"Say {w}.", "input": "", "output": w} for w in
            ("Ada", "founder", "Acme", "search", "answer", "done", "quick", "fox")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@needs_tb
def test_train_reports_its_loss_to_tensorboard_through_trl(tmp_path):
    from tests.tiny import build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny", hidden=32, layers=1)
    out = run_cli(["--db", str(tmp_path / "t.db"), "train", "--alpaca", str(_alpaca(tmp_path)),
                   "--model", str(tiny), "--out", str(tmp_path / "adapter"), "--name", "tb-train",
                   "--epochs", "2", "--report-to", "tensorboard", "--log-dir", str(tmp_path / "tb")],
                  cli_env(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    logged = scalars(tmp_path / "tb" / "tb-train")
    loss = logged["train/loss"]
    # 8 examples, batch 2 x accumulation 4: one optimizer step an epoch, one loss each
    assert [step for step, _ in loss] == [1, 2]
    assert all(v > 0 for _, v in loss)
    # the same numbers the model version recorded
    from store.api import Store

    mv = Store(str(tmp_path / "t.db")).model_version("tb-train")
    assert [round(v, 4) for _, v in loss] == [round(v, 4) for v in mv.metrics["train"]["loss_curve"]]


@needs_tb
@pytest.mark.slow
def test_improve_logs_every_iteration_beside_each_training(tmp_path_factory):
    from store.api import Store
    from tests.improve_fixture import shared_improve_run
    from trainer.history import improve_run, iterations

    run = shared_improve_run(tmp_path_factory)
    store = Store(str(run.db))
    rows = iterations(store, improve_run(store, run.name))
    loop = scalars(run.tb_dir)
    assert [s for s, _ in loop["improve/dev/exact_mean"]] == [0, 1, 2]
    assert [round(v, 4) for _, v in loop["improve/dev/exact_mean"]] == \
        [round(r.accuracy["dev"].mean, 4) for r in rows]
    assert [v for _, v in loop["improve/examples"]] == [r.examples for r in rows[1:]]
    assert [s for s, _ in loop["improve/keep_rate"]] == [1, 2]
    assert all(0 < v <= 1 for _, v in loop["improve/keep_rate"])
    for stage in ("grow", "rank", "train", "evaluate"):
        assert all(v >= 0 for _, v in loop[f"improve/seconds/{stage}"])
    # TRL's own training logs, one TensorBoard run per iteration under the loop's folder
    for it in (1, 2):
        assert scalars(run.tb_dir / f"train-it{it}")["train/loss"], f"no training loss for it{it}"


@needs_tb
@pytest.mark.slow
def test_improve_cli_report_to_tensorboard(tmp_path):
    from tests.tiny import build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny", hidden=32, layers=1)
    out = run_cli(["--db", str(tmp_path / "i.db"), "improve", "--world", "pocket", "--model", str(tiny),
                   "--teacher", "scripted:pocket:0.3", "--iterations", "1", "--grow-questions", "2",
                   "--eval-questions", "2", "--samples", "2", "--concurrency", "2",
                   "--max-searches", "4", "--workdir", str(tmp_path / "work"), "--name", "cli-tb",
                   "--report-to", "tensorboard", "--log-dir", str(tmp_path / "tb")],
                  cli_env(tmp_path), timeout=400)
    assert out.returncode == 0, out.stderr[-2000:]
    loop = scalars(tmp_path / "tb" / "cli-tb")
    assert [s for s, _ in loop["improve/dev/exact_mean"]] == [0, 1]
    assert loop["improve/examples"][0][1] > 0
    assert scalars(tmp_path / "tb" / "cli-tb" / "train-it1")["train/loss"]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_train_reports_to_wandb_offline(tmp_path):
    from tests.tiny import build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny", hidden=32, layers=1)
    env = cli_env(tmp_path, WANDB_MODE="offline", WANDB_SILENT="true")
    out = run_cli(["--db", str(tmp_path / "t.db"), "train", "--alpaca", str(_alpaca(tmp_path)),
                   "--model", str(tiny), "--out", str(tmp_path / "adapter"), "--name", "wb-train",
                   "--epochs", "2", "--report-to", "wandb", "--log-dir", str(tmp_path / "logs")],
                  env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    wandb_dir = tmp_path / "logs" / "wb-train" / "wandb"
    runs = list(wandb_dir.glob("offline-run-*"))
    assert len(runs) == 1, list(wandb_dir.iterdir())
    # wandb's own reader of its transaction log
    shown = subprocess.run([str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--json",
                            str(runs[0])], capture_output=True, text=True, timeout=120)
    records = [json.loads(line) for line in shown.stdout.splitlines() if line.startswith("{")]
    assert any(r["type"] == "run" and r["run"]["display_name"] == "wb-train" for r in records)
    history = json.dumps([r for r in records if r["type"] == "history"])
    assert "train/loss" in history


def test_report_to_unknown_fails_in_one_line_before_training(tmp_path):
    db = tmp_path / "t.db"
    out = run_cli(["--db", str(db), "train", "--alpaca", str(_alpaca(tmp_path)), "--model", "x",
                   "--out", str(tmp_path / "a"), "--report-to", "mlflow"], cli_env(tmp_path))
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        "error: --report-to must be one of none, tensorboard, wandb, not 'mlflow'"]
    assert not (tmp_path / "a").exists()


def test_improve_report_to_unknown_fails_before_the_store_is_opened(tmp_path):
    db = tmp_path / "i.db"
    out = run_cli(["--db", str(db), "improve", "--world", "pocket", "--report-to", "mlflow"],
                  cli_env(tmp_path))
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        "error: --report-to must be one of none, tensorboard, wandb, not 'mlflow'"]
    assert not db.exists()


def test_improve_options_refuse_an_unknown_target():
    from trainer.improve import ImproveOptions

    with pytest.raises(ValueError, match="--report-to must be one of"):
        ImproveOptions(report_to="mlflow").check()
