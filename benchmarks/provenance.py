"""Which code produced a result: every results file records the commit it was measured at.

A copy of the tree without its git directory (a remote GPU machine gets one) cannot tell,
so $RESTREACT_COMMIT, when set, wins: put the hash into the remote command.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str | None:
    """$RESTREACT_COMMIT, else this checkout's HEAD ("-dirty" with uncommitted changes), else None."""
    if os.environ.get("RESTREACT_COMMIT", "").strip():
        return os.environ["RESTREACT_COMMIT"].strip()

    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=20)

    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0 or not head.stdout.strip():
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def weights_sha256(model_dir) -> str | None:
    """sha256 of a model folder's model.safetensors, None when it has none."""
    weights = Path(model_dir) / "model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None
