"""Training over several GPUs: the same `trainer.sft.train` under a multi-process launch (DDP).

No distribution code of our own: TRL's SFTTrainer (a transformers Trainer) already runs
data-parallel when it finds itself started by `accelerate launch` or `torchrun`. This module
is the entry point each process runs, and a launcher for it:

    # one process per GPU (DDP over NCCL); the examples and config files are plain JSON
    accelerate launch --multi_gpu --num_processes 4 -m trainer.distributed \
        --examples runs/x/it1/examples.jsonl --config train.json

    # the same, launched for you (CPU: torchrun with the gloo backend)
    python -m trainer.distributed --examples ex.jsonl --config train.json --processes 4

Every process loads the base model, trains on its share of each global batch and keeps
identical weights (DDP all-reduces the gradients); only the main process saves the adapter
(and, with --db/--name, records the model version). The global batch is
per_device_batch × grad_accum × processes: to reproduce a 1-GPU run of batch B × accum A on
N GPUs, keep B × A × N the same (for instance B/N per device).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from trainer.config import TrainConfig
from trainer.examples import Example

REPO = Path(__file__).resolve().parent.parent


class LaunchError(RuntimeError):
    """The multi-process training run failed; the message is one line meant for the user."""


# --- files the launched processes read -------------------------------------------------


def save_examples(examples: Sequence[Example], path: str | Path) -> Path:
    path = Path(path)
    with open(path, "w") as f:
        for ex in examples:
            f.write(json.dumps(asdict(ex)) + "\n")
    return path


def load_examples(path: str | Path) -> list[Example]:
    """Examples from JSONL of {step_id, prompt, completion} (what `improve` writes per iteration)."""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out.append(Example(row.get("step_id"), row["prompt"], row["completion"]))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: not an example ({e})") from None
    return out


# --- launching ---------------------------------------------------------------------------


def _free_port() -> int:
    """A free TCP port for the rendezvous, so two launches on one host do not collide."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(examples: str | Path, config: str | Path, processes: int, cpu: bool,
                   result: str | Path | None = None, port: int | None = None) -> list[str]:
    """The command line that trains on `processes` processes of this host.

    GPUs: `accelerate launch --multi_gpu` (DDP over NCCL, one process per GPU). CPU:
    accelerate's own multi-CPU mode needs mpirun, so `torchrun` (torch.distributed.run, the
    launcher accelerate itself calls for GPUs) starts the processes and the Trainer picks
    the gloo backend.
    """
    port = port or _free_port()
    module = ["-m", "trainer.distributed", "--examples", str(examples), "--config", str(config)]
    if result:
        module += ["--result", str(result)]
    if cpu:
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
                "--master_port", str(port), *module]
    multi = ["--multi_gpu"] if processes > 1 else []  # one GPU: accelerate's plain launcher
    return [sys.executable, "-m", "accelerate.commands.launch", *multi,
            "--num_processes", str(processes), "--num_machines", "1",
            "--main_process_port", str(port), "--dynamo_backend", "no", *module]


def launch_train(examples: Sequence[Example], cfg: TrainConfig, processes: int,
                 cpu: bool | None = None, timeout: float | None = None, quiet: bool = True):
    """Train on `processes` processes (GPUs, or CPU processes) and return the TrainResult.

    Blocks until every process has exited. The result is read back from what the main
    process saved, so the caller (which loaded no model) can register the model version.
    """
    from trainer.sft import TrainError, TrainResult

    if processes < 1:
        raise TrainError(f"processes must be at least 1, not {processes}")
    if not examples:
        raise TrainError("no training examples: rank some finished trajectories first "
                         "(or pass an Alpaca file); nothing was trained")
    cpu = (cfg.cpu or not _cuda_count()) if cpu is None else cpu
    if not cpu and _cuda_count() < processes:
        raise TrainError(f"{processes} training processes need {processes} GPUs; "
                         f"{_cuda_count()} visible")
    with tempfile.TemporaryDirectory(prefix="restreact-ddp-") as tmp:
        ex_path = save_examples(examples, Path(tmp) / "examples.jsonl")
        cfg_path = Path(tmp) / "config.json"
        cfg_path.write_text(json.dumps({**cfg.to_dict(), "cpu": cpu}))
        result_path = Path(tmp) / "result.json"
        cmd = launch_command(ex_path, cfg_path, processes, cpu, result=result_path)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
        err_path = Path(tmp) / "stderr.log"
        with open(err_path, "w") as err:
            proc = subprocess.run(cmd, env=env, stdout=err if quiet else None,
                                  stderr=err, timeout=timeout)
        if proc.returncode != 0 or not result_path.exists():
            raise TrainError(f"training on {processes} processes failed (exit {proc.returncode}): "
                             f"{_last_error(err_path.read_text())}")
        data = json.loads(result_path.read_text())
    return TrainResult(output_dir=data["output_dir"], adapter=data["adapter"],
                       metrics=data["metrics"], config=data["config"])


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _last_error(stderr: str) -> str:
    """The line that says what went wrong: a TrainError's message, else the last traceback line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("error:"):
            return ln[len("error:"):].strip()
    for ln in reversed(lines):
        if "Error" in ln.split(":", 1)[0]:
            return ln
    return lines[-1] if lines else "no output"


# --- inside the launch: one rank ---------------------------------------------------------


def run_rank(examples_path: str, config_path: str, result_path: str | None = None,
             db: str | None = None, name: str | None = None) -> int:
    """Train as one process of the launch; the main process saves and records the result."""
    from trainer.sft import TrainError, train

    try:
        examples = load_examples(examples_path)
        cfg = TrainConfig.from_dict(json.loads(Path(config_path).read_text()))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cfg.use_unsloth is True:
        # unsloth patches the model for one GPU; DDP wraps the plain PEFT model instead.
        print("error: unsloth does not run under a multi-process launch; use use_unsloth=false",
              file=sys.stderr)
        return 2
    cfg.use_unsloth = False
    try:
        result = train(examples, cfg)
    except TrainError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if result_path:
        Path(result_path).write_text(json.dumps(
            {"output_dir": result.output_dir, "adapter": result.adapter,
             "metrics": result.metrics, "config": result.config}))
    if db and name:
        from store.api import Store

        store = Store(db)
        step_ids = [e.step_id for e in examples if e.step_id is not None]
        store.add_model_version(name, base=cfg.base_model, adapter_path=str(result.output_dir),
                                step_ids=step_ids, config=cfg.to_dict(),
                                metrics={"train": result.metrics})
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.distributed", description=__doc__.splitlines()[0])
    p.add_argument("--examples", required=True, help="JSONL of {step_id, prompt, completion}.")
    p.add_argument("--config", required=True, help="JSON of TrainConfig fields (base_model, output_dir, ...).")
    p.add_argument("--processes", type=int, default=0,
                   help="Launch this many processes (GPUs) yourself; 0 = already inside a launch.")
    p.add_argument("--cpu", action="store_true", help="With --processes: CPU processes (gloo), not GPUs.")
    p.add_argument("--result", help="The main process writes the result (metrics) here as JSON.")
    p.add_argument("--db", help="Record the model version in this database (main process only).")
    p.add_argument("--name", help="Model version name (with --db).")
    args = p.parse_args(argv)
    if args.processes > 0 and "RANK" not in os.environ:
        from trainer.sft import TrainError

        try:
            examples = load_examples(args.examples)
            cfg = TrainConfig.from_dict(json.loads(Path(args.config).read_text()))
            result = launch_train(examples, cfg, args.processes, cpu=args.cpu or None, quiet=False)
        except (OSError, ValueError, TrainError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        if args.db and args.name:
            from store.api import Store

            Store(args.db).add_model_version(
                args.name, base=cfg.base_model, adapter_path=result.output_dir,
                step_ids=[e.step_id for e in examples if e.step_id is not None],
                config=result.config, metrics={"train": result.metrics})
        if args.result:
            Path(args.result).write_text(json.dumps(asdict(result), default=str))
        print(json.dumps({k: v for k, v in result.metrics.items() if k != "loss_curve"}))
        return 0
    return run_rank(args.examples, args.config, args.result, args.db, args.name)


if __name__ == "__main__":
    sys.exit(main())
