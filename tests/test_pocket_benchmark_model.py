"""benchmarks/pocket_improve.py --model: the learning benchmark can start from any warm start,
says which one in its result, and refuses a folder without weights before it writes anything."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.harness import HANG_S

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "pocket" / "model"


def _bench(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
           "RESTREACT_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "benchmarks/pocket_improve.py", "--db", f"sqlite:///{tmp_path}/b.db",
           "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "r.json"),
           "--plot", str(tmp_path / "r.png"), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_S)


def test_the_result_names_the_warm_start_it_began_from(tmp_path):
    # A copy elsewhere, so the recorded path is this one and not the shipped default.
    start = tmp_path / "warm"
    shutil.copytree(SHIPPED, start)
    # The test stage with no finished iteration scores nothing: only the record is written.
    done = _bench(tmp_path, "--model", str(start), "--stage", "test")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "r.json").read_text())
    digest = hashlib.sha256((start / "model.safetensors").read_bytes()).hexdigest()[:16]
    assert result["start_model"] == {"path": str(start), "sha256_16": digest}
    assert result["provenance"]["model"]["sha256"].startswith(digest)
    assert result["iterations"] == []


def test_a_folder_without_weights_is_one_error_and_writes_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    done = _bench(tmp_path, "--model", str(tmp_path / "empty"))
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"error: --model {tmp_path / 'empty'}: no model.safetensors there"]
    assert not (tmp_path / "b.db").exists() and not (tmp_path / "r.json").exists()


def test_resuming_a_store_begun_from_another_warm_start_is_refused(tmp_path):
    from store.api import Store

    store = Store(f"sqlite:///{tmp_path}/b.db")
    store.add_model_version(name="pocket-benchmark:it0", base="runs/some-other-start")
    before = len(store.runs())
    done = _bench(tmp_path, "--model", str(SHIPPED), "--stage", "test")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].endswith(
        f"began from runs/some-other-start, not {SHIPPED}: give another --db")
    assert len(Store(f"sqlite:///{tmp_path}/b.db").runs()) == before
    assert not (tmp_path / "r.json").exists()
