"""Results files say which code and which model they measured (benchmarks/provenance.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from benchmarks.provenance import commit, weights_sha256

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def test_commit_prefers_the_environment(monkeypatch):
    monkeypatch.setenv("RESTREACT_COMMIT", " abc1234 ")
    assert commit() == "abc1234"


def test_commit_is_this_checkouts_head(monkeypatch):
    monkeypatch.delenv("RESTREACT_COMMIT", raising=False)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert commit().removesuffix("-dirty") == head.stdout.strip()


def test_weights_sha256_hashes_the_weights_file(tmp_path):
    assert weights_sha256(tmp_path) is None
    (tmp_path / "model.safetensors").write_bytes(b"not really weights")
    assert weights_sha256(tmp_path) == hashlib.sha256(b"not really weights").hexdigest()


def _provenances():
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        for i, row in enumerate(data if isinstance(data, list) else [data]):
            yield f"{path.name}[{i}]", row


def test_every_result_names_its_commit():
    rows = list(_provenances())
    assert rows
    for where, row in rows:
        assert row.get("provenance", {}).get("commit"), f"{where} has no provenance commit"


def test_the_headline_benchmark_measured_the_shipped_model():
    prov = json.loads((RESULTS / "pocket_improve.json").read_text())["provenance"]
    assert prov["model"]["sha256"] == weights_sha256(ROOT / "data" / "pocket" / "model")
