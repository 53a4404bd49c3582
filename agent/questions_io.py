"""Reading question files: CSV or JSONL with `question` and optional `answer`, `id`, `split`.

Reading is all-or-nothing: any bad line raises QuestionFileError naming the file and the
line, before anything is written to the store.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from agent.inputs import InputError, json_line, read_lines


class QuestionFileError(InputError):
    pass


# Column names other sets use for the same thing (BamTwoogle: Question/Answer).
_ALIASES = {"question": ("question", "q", "query", "prompt"), "answer": ("answer", "a", "ref", "reference")}


def _pick(row: dict, field: str):
    low = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
    for name in _ALIASES[field]:
        if name in low:
            return low[name]
    return None


def _row(raw: dict, where: str) -> dict:
    q = _pick(raw, "question")
    if not isinstance(q, str) or not q.strip():
        raise QuestionFileError(f"{where}: no question text")
    a = _pick(raw, "answer")
    low = {str(k).strip().lower(): v for k, v in raw.items() if k is not None}
    out = {"question": q.strip(), "answer": None if a in (None, "") else str(a).strip()}
    for key in ("id", "split"):
        if low.get(key) not in (None, ""):
            out[key] = str(low[key])
    meta = {k: v for k, v in low.items() if k not in ("question", "answer", "id", "split")}
    if meta:
        out["meta"] = json.loads(json.dumps(meta, default=str))
    return out


def read_question_file(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise QuestionFileError(f"question file not found: {path}")
    try:
        lines = list(read_lines(path, "question file"))
    except InputError as e:
        raise QuestionFileError(str(e)) from None
    rows = _read_jsonl(path, lines) if path.suffix.lower() in (".jsonl", ".json") else _read_csv(path, lines)
    if not rows:
        raise QuestionFileError(f"{path}: no questions in the file")
    return rows


def _read_jsonl(path: Path, lines: list[tuple[int, str]]) -> list[dict]:
    rows = []
    for n, line in lines:
        if not line.strip():
            continue
        try:
            obj = json_line(path, n, line)
        except InputError as e:
            raise QuestionFileError(str(e)) from None
        if not isinstance(obj, dict):
            raise QuestionFileError(f"{path}:{n}: expected an object with a 'question' field")
        rows.append(_row(obj, f"{path}:{n}"))
    return rows


def _read_csv(path: Path, lines: list[tuple[int, str]]) -> list[dict]:
    reader = csv.DictReader(line for _, line in lines)
    try:
        fields = [f.strip().lower() for f in (reader.fieldnames or [])]
        if not any(f in _ALIASES["question"] for f in fields):
            raise QuestionFileError(f"{path}:1: no 'question' column in the header")
        return [_row(raw, f"{path}:{reader.line_num}") for raw in reader]
    except csv.Error as e:
        raise QuestionFileError(f"{path}:{reader.line_num}: not CSV ({e})") from None


def plan_questions(store, questions: str | None, world: str | None = None,
                   split: str | None = None, limit: int | None = None):
    """Check a question source and its selection, writing nothing yet.

    `questions` is a stored set's name or a CSV/JSONL file; without it, the world's set.
    Returns a function that imports it (idempotent) and returns (set name, questions).
    Commands call it after everything else that can fail (loading the model or the
    adapter), so a bad option leaves the store as it was. Raises QuestionFileError.
    """
    pending, source = None, None  # rows to import into set `questions`, if not there yet
    if questions is None and world:
        from agent.worlds import get_world

        w = get_world(world)
        questions, source = w.question_set, w.question_source
        if not store.has_question_set(questions):
            pending = w.question_rows()
    if questions is None:
        raise QuestionFileError("--questions SET_OR_FILE is required")
    path = Path(questions)
    if source is None and (path.suffix.lower() in (".csv", ".jsonl", ".json") or path.is_file()):
        if not path.is_file():
            raise QuestionFileError(f"question file not found: {questions}")
        pending = read_question_file(path)
        questions, source = path.stem, str(path)
    elif pending is None and not store.has_question_set(questions):
        raise QuestionFileError(f"no question set named {questions!r} "
                                "(import one with: questions import FILE --set NAME)")
    in_file = any((r.get("split") or "train") == split if split else True for r in pending or [])
    if not (in_file or store.questions(questions, split=split, limit=1)):
        raise QuestionFileError(f"question set {questions!r}"
                                f"{f' split {split!r}' if split else ''} has no questions")

    def load():
        if pending:
            store.import_questions(questions, pending, source=source)
        return questions, store.questions(questions, split=split, limit=limit)

    return load
