"""Worlds: environments the agent runs in, each one package, plugged in where the web would be.

A world gives the agent what a web deployment is given by its user: a search backend over
its corpus, question sets with reference answers, a default model, and two programs of its
own that read its corpus the way the agent should: a scripted teacher (a deliberately
imperfect reader, e.g. for distillation or seed data) and an oracle (the same reader making
no mistakes, the reference a step can be checked against). The agent, the ranker and the
trainer see none of this: `agent/setup.py` turns `--world NAME` into ordinary options
(a model, `--search corpus --corpus FILE`, a question set) and `scripted:NAME` into an LLM.

This module is the one place a world is chosen by name (`get_world`).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path

# name -> module whose WORLD is the world; imported only when the world is used.
WORLDS = {"pocket": "agent.worlds.pocket"}


class UnknownWorld(ValueError):
    """A world name no module provides; the message is one line for the user."""


class World(ABC):
    """One environment: its corpus and search, questions, default model, teacher and oracle."""

    name: str
    search: str = "corpus"  # the search backend (agent.search.factory) over `corpus`

    @property
    @abstractmethod
    def model_dir(self) -> Path:
        """The model `--world NAME` runs when no --model is given."""

    @property
    @abstractmethod
    def corpus(self) -> Path:
        """The documents file (JSONL of id, title, url, text) the search backend reads."""

    @property
    @abstractmethod
    def question_set(self) -> str:
        """The name the world's questions are stored under."""

    @property
    @abstractmethod
    def question_source(self) -> str:
        """Where the questions come from (recorded with the set)."""

    @abstractmethod
    def question_rows(self) -> list[dict]:
        """The questions as import rows: id, question, answer, split, meta."""

    @abstractmethod
    def teacher(self, error_rate: float | None = None, where: Path | None = None):
        """The scripted reader as an agent.llm.base.LLM, on this world or the built one at
        `where`; `error_rate` None is the reader's default."""

    def oracle(self):
        """The scripted reader making no mistakes: what a step should have been."""
        return self.teacher(error_rate=0.0)

    def reads(self, where: Path) -> bool:
        """Whether `where` is a built world of this kind (so a teacher can read it)."""
        return False

    def ensure_questions(self, store) -> str:
        """Import the world's questions once; returns the set name."""
        if not store.has_question_set(self.question_set):
            store.import_questions(self.question_set, self.question_rows(),
                                   source=self.question_source)
        return self.question_set


def world_names() -> list[str]:
    return sorted(WORLDS)


def get_world(name: str) -> World:
    """The world registered under `name`."""
    if name not in WORLDS:
        raise UnknownWorld(f"unknown world {name!r}; worlds: {', '.join(world_names())}")
    return importlib.import_module(WORLDS[name]).WORLD


def scripted_model(spec: str, **opts):
    """`scripted:WORLD[:ERROR_RATE]`: a world's scripted teacher as a model.

    WORLD is a world's name (its demo world) or the folder of a built world. Options a
    program cannot take (an adapter, 4-bit) are refused rather than ignored.
    """
    from agent.llm.base import LLMError

    extra = sorted(k for k, v in opts.items() if v)
    if extra:
        raise LLMError(f"option(s) {', '.join(extra)} do not apply to model '{spec}'")
    where, _, rate = spec[len("scripted:"):].rpartition(":")
    if not where or not rate.replace(".", "", 1).isdigit():  # no ":RATE" suffix
        where, rate = spec[len("scripted:"):], ""
    error_rate = float(rate) if rate else None
    try:
        if where in WORLDS:
            return get_world(where).teacher(error_rate)
        folder = Path(where)
        for name in world_names():
            if get_world(name).reads(folder):
                return get_world(name).teacher(error_rate, where=folder)
        raise ValueError(f"{folder} is neither a world ({', '.join(world_names())}) "
                         f"nor the folder of a built one")
    except (ValueError, OSError) as e:
        raise LLMError(f"cannot use scripted model {spec!r}: {e}") from None
