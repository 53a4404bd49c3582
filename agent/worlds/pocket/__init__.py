"""The pocket world: a seeded fictional world, its corpus and questions, a scripted reader and
the small model that learnt to read it, all offline (DESIGN.md section 4).

    world.py      entities and relations, generated from a seed
    render.py     the corpus: encyclopedia-style documents from templates, with distractors
    questions.py  one-hop, bridge, comparison and three-hop questions with train/dev/test splits
    build.py      a world on disk (corpus.jsonl, questions.jsonl, world.json, MANIFEST.json)
    assets.py     where the shipped model and the demo world live
    policy.py     the scripted reader: the teacher, the oracle and the warm start's seed policy

`WORLD` is what agent.worlds.get_world("pocket") returns.
"""

from __future__ import annotations

from pathlib import Path

from agent.worlds import World
from agent.worlds.pocket.assets import DEMO_SEED, MODEL_DIR, pocket_assets, pocket_question_rows

TEACHER_ERROR_RATE = 0.3  # `scripted:pocket` with no rate: as sloppy as the seed policy


class PocketWorld(World):
    name = "pocket"

    def __init__(self, seed: int = DEMO_SEED):
        self.seed = seed

    @property
    def model_dir(self) -> Path:
        return MODEL_DIR

    @property
    def corpus(self) -> Path:
        return pocket_assets(self.seed).corpus

    @property
    def question_set(self) -> str:
        return pocket_assets(self.seed).question_set

    @property
    def question_source(self) -> str:
        return str(pocket_assets(self.seed).questions)

    def question_rows(self) -> list[dict]:
        return pocket_question_rows(self.seed)

    def teacher(self, error_rate: float | None = None, where: Path | None = None):
        from agent.worlds.pocket.policy import ScriptedPolicy

        return ScriptedPolicy(where or pocket_assets(self.seed).world_dir,
                              error_rate=TEACHER_ERROR_RATE if error_rate is None else error_rate)

    def reads(self, where: Path) -> bool:
        return (Path(where) / "questions.jsonl").is_file() or Path(where).suffix == ".jsonl"

    def build(self, seed: int, out: Path, size: str = "default") -> dict:
        """A fresh world for `seed` written to `out` (`cli.py pocket build`)."""
        from agent.worlds.pocket.build import build_world

        return build_world(seed, Path(out), size=size)


WORLD = PocketWorld()
