"""Where the pocket world's files live: the shipped model and the demo world.

The warm-started pocket model ships in the repository (data/pocket/model). The demo world
is generated on first use from a fixed seed that the model never trained on (pretraining
uses seeds from PRETRAIN_SEED_BASE up), into a cache folder; generation is byte-for-byte
reproducible, so every machine gets the same corpus and questions.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
MODEL_DIR = REPO / "data" / "pocket" / "model"
# SmolLM2-135M-Instruct's warm start on this world's kind of questions: a LoRA adapter
# distilled from the scripted reader (trainer/warmstart.py, `cli.py pocket distill`).
SMOLLM2_ADAPTER = REPO / "data" / "pocket" / "smollm2"
DEMO_SEED = 7  # the world users meet; never seen in pretraining
PRETRAIN_SEED_BASE = 100_000


@dataclass
class PocketAssets:
    model_dir: Path
    world_dir: Path
    corpus: Path
    questions: Path
    question_set: str


def cache_dir() -> Path:
    return Path(os.environ.get("RESTREACT_CACHE") or Path.home() / ".cache" / "restreact")


def pocket_assets(seed: int = DEMO_SEED) -> PocketAssets:
    """The model and a built world (built now if missing)."""
    from agent.worlds.pocket.build import build_world
    from agent.worlds.pocket.world import WORLD_VERSION

    world_dir = cache_dir() / "pocket" / f"{WORLD_VERSION}-seed{seed}"
    if not (world_dir / "MANIFEST.json").is_file():
        tmp = world_dir.with_name(world_dir.name + f".tmp{os.getpid()}")
        build_world(seed, tmp)
        try:
            tmp.replace(world_dir)
        except OSError:  # another process (collectors started together) built it first
            if not (world_dir / "MANIFEST.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    return PocketAssets(model_dir=MODEL_DIR, world_dir=world_dir,
                        corpus=world_dir / "corpus.jsonl", questions=world_dir / "questions.jsonl",
                        question_set=f"pocket-seed{seed}")


def pocket_question_rows(seed: int = DEMO_SEED) -> list[dict]:
    """The demo world's questions as import rows (id, question, answer, split, meta)."""
    import json

    rows = []
    for line in pocket_assets(seed).questions.read_text().splitlines():
        q = json.loads(line)
        rows.append({"id": q["id"], "question": q["question"], "answer": q["answer"],
                     "split": q["split"], "meta": {k: q[k] for k in ("type", "support") if k in q}})
    return rows
