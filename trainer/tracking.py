"""Experiment tracking: TensorBoard or Weights & Biases, one run name for the whole loop.

Training logs (loss, learning rate, tokens seen) go through TRL's own `report_to`
(TrainConfig.report_to); this module only points them at the right place and adds what
TRL cannot know: the improve loop's numbers per iteration (accuracy on every evaluated
split, the judge's keep-rate, stage times, example counts), read back from the store by
trainer/history.py.

TensorBoard layout, one page for one improve run:
    LOG_DIR/RUN/            the loop's scalars, step = iteration (improve/...)
    LOG_DIR/RUN/train-itN/  TRL's training logs of iteration N (train/loss, ...)
W&B: one run named RUN (project $WANDB_PROJECT, default "restreact"); TRL's callback
logs into the run already open, the loop's scalars use `improve/iteration` as their step.
`WANDB_MODE=offline` keeps it on disk.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from trainer.config import REPORT_TO

PACKAGE = {"tensorboard": "tensorboard", "wandb": "wandb"}
EXTRA = {"tensorboard": "tracking", "wandb": "wandb"}  # pyproject's optional extras


class TrackingError(RuntimeError):
    """Tracking cannot start; the message is one line for the user."""


def check(report_to: str) -> None:
    """Fail early (before anything is written) on an unknown target or a missing package."""
    if report_to not in REPORT_TO:
        raise TrackingError(f"--report-to must be one of {', '.join(REPORT_TO)}, not {report_to!r}")
    pkg = PACKAGE.get(report_to)
    if pkg and importlib.util.find_spec(pkg) is None:
        raise TrackingError(f"--report-to {report_to} needs the {pkg} package: "
                            f"pip install 'restreact[{EXTRA[report_to]}]'")


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class Tracker:
    """Where one run's numbers go. `report_to="none"` records nothing."""

    def __init__(self, report_to: str, run_name: str, log_dir: str | Path = "tensorboard",
                 config: dict | None = None):
        check(report_to)
        self.report_to, self.run_name = report_to, run_name
        self.dir = Path(log_dir) / slug(run_name)
        self._writer = None
        self._wandb = None
        if report_to == "wandb":
            self._start_wandb(config or {})

    def _start_wandb(self, config: dict) -> None:
        import wandb

        self.dir.mkdir(parents=True, exist_ok=True)
        self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "restreact"),
                                 name=self.run_name, dir=str(self.dir), config=config,
                                 reinit="return_previous")
        wandb.define_metric("improve/iteration")
        wandb.define_metric("improve/*", step_metric="improve/iteration")

    def train_args(self, part: str = "") -> dict:
        """TrainConfig fields for one training under this run (`part`: 'train-it1', ...)."""
        if self.report_to == "none":
            return {}
        name = f"{self.run_name}/{part}" if part else self.run_name
        return {"report_to": self.report_to, "run_name": name,
                "logging_dir": str(self.dir / part) if part else str(self.dir)}

    def log(self, step: int, metrics: dict, prefix: str = "improve") -> None:
        """Scalars at `step` (an iteration); None values are left out."""
        values = {f"{prefix}/{k}": float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float))}  # a bool counts as 0/1
        if self.report_to == "tensorboard":
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(self.dir))
            for k, v in values.items():
                self._writer.add_scalar(k, v, step)
            self._writer.flush()
        elif self.report_to == "wandb":
            self._wandb.log({**values, f"{prefix}/iteration": step})

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def iteration_metrics(row) -> dict:
    """The flat numbers of one trainer.history.IterationStats row, as tracked scalars."""
    out = {"examples": row.examples, "keep_rate": row.keep_rate,
           "ranked_steps": row.ranked_steps, "train_loss": row.train_loss,
           "tokens_per_s": row.tokens_per_s, "promoted": row.promoted}
    for split, acc in row.accuracy.items():
        out[f"{split}/exact_mean"] = acc.mean
        out[f"{split}/exact_std"] = acc.std
    for stage, s in row.seconds.items():
        out[f"seconds/{stage}"] = s
    return {k: v for k, v in out.items() if v is not None}
