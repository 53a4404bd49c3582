"""Every reader of a user's file says FILE:LINE: reason in one line, and is checked before a
model loads.

Readers: question files (CSV, JSONL), corpora, cassettes, Alpaca training data and model
configs. The fuzz tests feed each one random bytes and truncated copies of a good file:
whatever comes in, the reader returns rows or raises agent.inputs.InputError whose message
is one line naming the file — never another exception, never a message cut mid-sentence.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.inputs import InputError, json_file
from tests.harness import cli_env, run_cli, table_counts

GOOD = {
    "questions.jsonl": b'{"question": "Who founded Acme?", "answer": "Ada", "id": "q1"}\n'
                       b'{"question": "Where is Tarsk?", "split": "dev"}\n',
    "questions.csv": b'question,answer,id\n"Who founded Acme?",Ada,q1\nWhere is Tarsk?,,q2\n',
    "corpus.jsonl": b'{"id": "1", "title": "Acme", "url": "pocket://acme", "text": "Acme was founded by Ada."}\n'
                    b'{"id": "2", "title": "Tarsk", "url": "", "text": "Tarsk is a city."}\n',
    "cassette.jsonl": b'{"type": "meta", "question": "q"}\n'
                      b'{"type": "search", "key": "k", "query": "acme", "k": 3, "results": []}\n'
                      b'{"type": "llm", "key": "k2", "error": "down"}\n',
    "alpaca.jsonl": b'{"instruction": "Say hi.", "output": "hi"}\n{"instruction": "Add.", "input": "1+1", "output": "2"}\n',
    "config.json": b'{\n  "model_type": "llama",\n  "hidden_size": 32\n}\n',
}


def _readers():
    from agent.cassette import Cassette
    from agent.questions_io import read_question_file
    from agent.search.corpus import load_documents
    from trainer.examples import load_alpaca

    return {
        "questions.jsonl": read_question_file,
        "questions.csv": read_question_file,
        "corpus.jsonl": load_documents,
        "cassette.jsonl": lambda p: Cassette(p).records(),
        "alpaca.jsonl": load_alpaca,
        "config.json": lambda p: json_file(p, "model config"),
    }


def _read(tmp_path: Path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    try:
        return _readers()[name](path), None
    except InputError as e:  # every reader's error is an InputError (a ValueError)
        return None, str(e)


def _assert_one_line(message: str, name: str) -> None:
    assert "\n" not in message and message.strip() == message, repr(message)
    assert name in message, message
    assert not message.rstrip(")").endswith((" at", "(", ":")), message  # a whole sentence


def test_good_files_read():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for name, data in GOOD.items():
            rows, err = _read(Path(d), name, data)
            assert err is None and rows, (name, err)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(GOOD)), data=st.binary(max_size=300))
def test_random_bytes_give_rows_or_one_line(tmp_path, name, data):
    _, err = _read(tmp_path, name, data)
    if err is not None:
        _assert_one_line(err, name)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(GOOD)), cut=st.floats(0, 1), flip=st.integers(0, 255),
       at=st.floats(0, 1))
def test_truncated_and_damaged_files_give_rows_or_one_line(tmp_path, name, cut, flip, at):
    data = GOOD[name][:int(len(GOOD[name]) * cut)]
    if data and flip % 3 == 0:  # a third of the cases also get one byte replaced
        i = int((len(data) - 1) * at)
        data = data[:i] + bytes([flip]) + data[i + 1:]
    _, err = _read(tmp_path, name, data)
    if err is not None:
        _assert_one_line(err, name)


def test_a_bad_byte_deep_in_a_big_question_file_names_its_line_and_column(tmp_path):
    lines = [json.dumps({"question": f"Question {i}?"}).encode() for i in range(10_001)]
    lines[5_001] = b"\xff" + lines[5_001]
    (tmp_path / "big.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    from agent.questions_io import QuestionFileError, read_question_file

    with pytest.raises(QuestionFileError) as e:
        read_question_file(tmp_path / "big.jsonl")
    assert str(e.value) == f"{tmp_path / 'big.jsonl'}:5002: not UTF-8 (byte 0xff at column 1)"
    lines[5_001] = '{"question": "caf'.encode() + b"\xe9" + b'?"}'
    (tmp_path / "mid.jsonl").write_bytes(b"\n".join(lines))
    with pytest.raises(QuestionFileError, match=r"mid\.jsonl:5002: not UTF-8 \(byte 0xe9 at column 18\)"):
        read_question_file(tmp_path / "mid.jsonl")


def test_a_control_character_in_a_corpus_line_reads_as_a_whole_sentence(tmp_path):
    from agent.search.corpus import load_documents

    path = tmp_path / "docs.jsonl"
    path.write_bytes(GOOD["corpus.jsonl"] + b'{"id": "3", "title": "t", "url": "u", "text": "a\tb"}\n')
    with pytest.raises(InputError) as e:
        load_documents(path)
    assert str(e.value) == f"{path}:3: invalid JSON (invalid control character at column 49)"


# --- through the CLI: checked before the model loads, the store untouched -----------------


def _seeded_store(tmp_path: Path, env: dict) -> Path:
    db = tmp_path / "store.db"
    (tmp_path / "good.jsonl").write_bytes(GOOD["questions.jsonl"])
    r = run_cli(["--db", str(db), "questions", "import", str(tmp_path / "good.jsonl"),
                 "--set", "good"], env)
    assert r.returncode == 0, r.stderr
    return db


def _one_error(r) -> str:
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    errors = [x for x in r.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    assert "Loading weights" not in r.stderr  # refused before any model was loaded
    return errors[0]


def test_cli_refuses_bad_files_before_loading_the_model(tmp_path):
    env = cli_env(tmp_path)
    db = _seeded_store(tmp_path, env)
    before = table_counts(db)
    bad_corpus = tmp_path / "corpus.jsonl"
    bad_corpus.write_bytes(GOOD["corpus.jsonl"] + b'{"id": "3", "text": "no title"}\n')
    bad_cassette = tmp_path / "cassette.jsonl"
    bad_cassette.write_bytes(b'{"type": "llm", "key": "k", "error": "x"}\n{"type": "llm"\n{}\n')
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_bytes(b'{"model_type": "llama",\n "hidden_size": 32,,\n}\n')
    cases = {
        "corpus": (["ask", "--world", "pocket", "--corpus", str(bad_corpus), "Who?"],
                   f"{bad_corpus}:3: document lacks title, url"),
        "cassette": (["ask", "--replay", str(bad_cassette), "Who?"],
                     f"{bad_cassette}:2: invalid JSON"),
        "model config": (["collect", "--questions", "good", "--model", str(model),
                          "--corpus", str(tmp_path / "corpus-ok.jsonl")],
                         f"{model / 'config.json'}:2: invalid JSON (expecting property name"),
        "empty question": (["ask", "--world", "pocket", ""], "the question is empty"),
        "blank question": (["ask", "--world", "pocket", "   "], "the question is empty"),
    }
    (tmp_path / "corpus-ok.jsonl").write_bytes(GOOD["corpus.jsonl"])
    for name, (args, expect) in cases.items():
        r = run_cli(["--db", str(db)] + args, env)
        line = _one_error(r)
        assert expect in line, (name, line)
        assert table_counts(db) == before, f"{name}: the store changed"


def test_interactive_prompt_shows_no_empty_default(tmp_path):
    import subprocess

    from tests.harness import CLI

    r = subprocess.run(CLI + ["--db", str(tmp_path / "s.db"), "ask", "--model", "scripted:pocket:0",
                              "--world", "pocket"], env=cli_env(tmp_path), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)  # no input: the loop ends
    assert r.returncode == 0, r.stderr[-2000:]
    assert "question" in r.stdout and "()" not in r.stdout, r.stdout
    assert not re.search(r"error", r.stderr)
