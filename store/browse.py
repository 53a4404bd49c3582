"""Browse the store in Datasette: the SQLite file as web pages, with canned queries.

    python cli.py browse            # needs: pip install 'restreact[browse]'

Datasette (an optional extra) serves the database read-only; the canned queries below go
in its metadata (https://docs.datasette.io/en/stable/sql_queries.html#canned-queries), so
the questions a user asks first are one click away. They are plain SQLite SQL over the
tables of store/models.py (JSON columns read with json_each / json_array_length).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

CANNED = {
    "worst_questions": {
        "title": "Worst questions",
        "description": "Questions by their mean exact match over every evaluation, lowest first.",
        "sql": """
SELECT q.id AS question_id, qs.name AS question_set, q.split, q.text AS question,
       q.answer AS reference, COUNT(e.id) AS evaluations,
       ROUND(AVG(e.exact), 3) AS exact_mean, ROUND(AVG(e.f1), 3) AS f1_mean
FROM evaluations e
JOIN questions q ON q.id = e.question_id
JOIN question_sets qs ON qs.id = q.set_id
GROUP BY q.id
ORDER BY exact_mean ASC, f1_mean ASC, evaluations DESC
LIMIT 200""",
    },
    "rejected_steps": {
        "title": "Steps the judge rejected",
        "description": "Ranked steps left out of training: the judge found no sample it would keep "
                       "(no pick, or its pick marked bad).",
        "sql": """
SELECT s.id AS step_id, s.trajectory_id, r.name AS run, s.kind, k.judge, k.prompt_version,
       k.best_index, k."bad" AS bad_samples, k."order" AS ranking, k.explanation,
       (SELECT x.text FROM step_samples x WHERE x.step_id = s.id AND x.idx = s.chosen_index)
         AS chosen_sample
FROM rankings k
JOIN steps s ON s.id = k.step_id
JOIN trajectories t ON t.id = s.trajectory_id
JOIN runs r ON r.id = t.run_id
WHERE k.status = 'ok'
  AND (k.best_index IS NULL
       OR k.best_index IN (SELECT value FROM json_each(k."bad")))
ORDER BY k.id DESC
LIMIT 500""",
    },
    "empty_searches": {
        "title": "Searches that returned nothing",
        "description": "Search calls with no results (or an error), newest first.",
        "sql": """
SELECT c.id AS search_id, c.trajectory_id, c.step_id, c.query, c.backend, c.error,
       ROUND(c.latency_s, 3) AS latency_s, c.created_at
FROM search_calls c
WHERE c.error IS NOT NULL OR json_array_length(c.results) = 0
ORDER BY c.id DESC
LIMIT 500""",
    },
    "slowest_llm_calls": {
        "title": "Slowest LLM calls",
        "description": "Every model call by duration, slowest first, with its tokens per second.",
        "sql": """
SELECT l.id AS call_id, l.model, l.purpose, l.trajectory_id, l.step_id,
       ROUND(l.duration_s, 3) AS duration_s, l.prompt_tokens, l.completion_tokens,
       ROUND(l.completion_tokens / NULLIF(l.duration_s, 0), 1) AS tokens_per_s,
       substr(l.prompt, 1, 300) AS prompt_start, l.created_at
FROM llm_calls l
ORDER BY l.duration_s DESC
LIMIT 200""",
    },
}


class BrowseError(RuntimeError):
    """Browsing cannot start; the message is one line for the user."""


def sqlite_path(db: str | None) -> Path:
    """The SQLite file behind --db / RESTREACT_DB (Datasette reads SQLite files only)."""
    from store.db import resolve_url

    url = resolve_url(db)
    if not url.startswith("sqlite:///"):
        raise BrowseError("browse reads SQLite stores only; this store is "
                          f"{url.split('://', 1)[0]} (use its own tools, e.g. psql)")
    path = Path(url[len("sqlite:///"):])
    if not path.is_file():
        raise BrowseError(f"no database at {path} (run `collect` or `ask` first, or pass --db)")
    return path


def metadata(db: Path) -> dict:
    """Datasette metadata: a title and the canned queries, under the database's name."""
    return {
        "title": f"restreact store: {db.name}",
        "description": "Trajectories, steps, samples, rankings, searches, LLM calls, model "
                       "versions and evaluations of restreact runs.",
        "databases": {db.stem: {"queries": {name: {k: v.strip() for k, v in q.items()}
                                            for name, q in CANNED.items()}}},
    }


def datasette_command(db: Path, metadata_file: str, port: int = 8001,
                      open_browser: bool = True) -> list[str]:
    """`python -m datasette serve DB --metadata FILE --port N [--open]`."""
    if importlib.util.find_spec("datasette") is None:
        raise BrowseError("browse needs Datasette: pip install 'restreact[browse]'")
    cmd = [sys.executable, "-m", "datasette", "serve", str(db), "--metadata", metadata_file,
           "--port", str(port)]
    if open_browser:
        cmd.append("--open")
    return cmd
