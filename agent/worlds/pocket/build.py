"""Build a pocket world on disk: corpus, questions, the world itself and a manifest.

    build_world(seed=7, out_dir=Path("data/pocket/s7"))

writes corpus.jsonl (the documents a corpus search backend indexes), questions.jsonl (with
train/dev/test splits), world.json (every entity and relation, for debugging and for the
scripted policy) and MANIFEST.json (version, seed, size, counts and the sha256 of each file).
The same seed and size give the same bytes on every run: no timestamps, no hash order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from agent.worlds.pocket.questions import make_questions, write_questions
from agent.worlds.pocket.render import render_corpus, write_corpus
from agent.worlds.pocket.world import WORLD_VERSION, WorldSize, generate_world, resolve_size

FILES = ("corpus.jsonl", "questions.jsonl", "world.json")


def build_world(seed: int, out_dir: Path, size: str | WorldSize = "default") -> dict:
    """Generate, render and write the world for `seed`; returns {"paths", "counts"}."""
    sz = resolve_size(size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world = generate_world(seed, sz)
    docs = render_corpus(world)
    questions = make_questions(world, sz)
    paths = {name.split(".")[0]: out_dir / name for name in FILES}
    write_corpus(docs, paths["corpus"])
    write_questions(questions, paths["questions"])
    _write_json(world.to_dict(), paths["world"])
    counts = _counts(world, docs, questions)
    manifest = {
        "version": WORLD_VERSION,
        "seed": seed,
        "size": size if isinstance(size, str) else "custom",
        "sizes": asdict(sz),
        "counts": counts,
        "sha256": {name: _sha256(out_dir / name) for name in FILES},
    }
    paths["manifest"] = out_dir / "MANIFEST.json"
    _write_json(manifest, paths["manifest"])
    return {"paths": paths, "counts": counts}


def _counts(world, docs: list[dict], questions: list[dict]) -> dict:
    counts = {"documents": len(docs), "questions": len(questions)}
    for kind in ("person", "city", "country", "company", "university", "band"):
        counts[f"{kind}_entities"] = len(world.entities(kind))
    for key in ("split", "type"):
        for q in questions:
            name = f"{key}_{q[key]}"
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _write_json(obj, path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(obj, ensure_ascii=False, indent=1, sort_keys=True) + "\n")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
