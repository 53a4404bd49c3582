"""Bad input everywhere: each mistake a user can make gets one `error:` line, a non-zero exit,
and leaves the store exactly as it was.

Every case runs the real CLI in a child process against a store that already holds work
(a question set, a collected and ranked run). The row count of every table is compared
before and after, and stderr must hold exactly one line starting with `error:` and no
traceback. The child runs with the user's default environment (progress bars on): the
only other stderr lines allowed are transformers' "Loading weights" progress bar.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import CLI, HANG_S, cli_env, run_cli, table_counts

_PROGRESS = re.compile(r"^\s*(Loading weights|Writing model shards)?[^\n]*\d+%\|")


def _env(tmp_path: Path) -> dict:
    env = cli_env(tmp_path)
    env.pop("TQDM_DISABLE")  # as a user runs it
    return env


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store with real work in it, a tiny model, and the files the cases need."""
    tmp = tmp_path_factory.mktemp("bad-input")
    env = _env(tmp)
    db = tmp / "store.db"
    files = {
        "good.jsonl": '{"question": "Who founded Acme?", "answer": "Ada", "id": "q1"}\n',
        "malformed.jsonl": '{"question": "fine?"}\n{"question": "cut off\n',
        "no_object.jsonl": '["a", "list"]\n',
        "no_column.csv": "text,answer\nWho?,Ada\n",
        "not_utf8.csv": None,
        "empty.jsonl": "",
        "blank.csv": "question,answer\n",
        "other.jsonl": '{"question": "A question never imported?", "id": "o1"}\n',
    }
    for name, text in files.items():
        if text is None:
            (tmp / name).write_bytes(b"question\n\xff\xfe caf\xe9\n")
        else:
            (tmp / name).write_text(text)
    work = ["--db", str(db)]
    r = run_cli(work + ["questions", "import", str(tmp / "good.jsonl"), "--set", "good"], env)
    assert r.returncode == 0, r.stderr
    r = run_cli(work + ["collect", "--world", "pocket", "--model", "scripted:pocket:0.3",
                        "--split", "train", "--limit", "3", "--samples", "2", "--run", "seed-run"], env)
    assert r.returncode == 0, r.stderr
    r = run_cli(work + ["rank", "--run", "seed-run"], env)
    assert r.returncode == 0, r.stderr
    from tests.tiny import build_tiny_model

    tiny = build_tiny_model(tmp / "tiny")
    bad = tmp / "corrupt-adapter"
    bad.mkdir()
    (bad / "adapter_config.json").write_text('{"peft_type": "LORA", "r": ')
    garbage = tmp / "garbage-weights-adapter"
    garbage.mkdir()
    (garbage / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 8, "lora_alpha": 8, "target_modules": ["q_proj"],
         "base_model_name_or_path": str(tiny), "task_type": "CAUSAL_LM"}))
    (garbage / "adapter_model.safetensors").write_bytes(b"\x00\x01not safetensors" * 8)
    corpus = next((tmp / "cache" / "pocket").glob("*/corpus.jsonl"))
    return {"tmp": tmp, "db": db, "env": env, "tiny": tiny, "corpus": corpus}


def _assert_one_error_line(r: subprocess.CompletedProcess, *expect: str) -> str:
    assert r.returncode != 0, f"exit 0 for a bad input:\n{r.stdout[-800:]}"
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr[-3000:]
    lines = [x for x in re.split(r"[\r\n]+", r.stderr) if x.strip()]
    errors = [x for x in lines if x.startswith("error: ")]
    assert len(errors) == 1, f"want one error line, got:\n{r.stderr[-3000:]}"
    noise = [x for x in lines if x not in errors and not _PROGRESS.match(x)]
    assert not noise, f"stray stderr lines: {noise}"
    for text in expect:
        assert text.lower() in errors[0].lower(), errors[0]
    return errors[0]


def _case(world, args: list[str], *expect: str, db: str | None = None) -> str:
    before = table_counts(world["db"])
    r = run_cli(["--db", db or str(world["db"])] + args, world["env"], cwd=world["tmp"])
    line = _assert_one_error_line(r, *expect)
    assert table_counts(world["db"]) == before, "the store changed"
    return line


def _collect(world, *extra: str) -> list[str]:
    return ["collect", "--model", "scripted:pocket:0.3", "--corpus", str(world["corpus"]),
            *extra]


QUESTION_CASES = {
    "missing file": (["--questions", "nope.jsonl"], "question file not found"),
    "malformed JSONL": (["--questions", "malformed.jsonl"], "malformed.jsonl:2", "invalid JSON"),
    "JSONL line not an object": (["--questions", "no_object.jsonl"], "no_object.jsonl:1"),
    "CSV without question column": (["--questions", "no_column.csv"], "no 'question' column"),
    "not UTF-8": (["--questions", "not_utf8.csv"], "not UTF-8"),
    "empty file": (["--questions", "empty.jsonl"], "no questions"),
    "header only": (["--questions", "blank.csv"], "no questions"),
    "unknown set": (["--questions", "nosuchset"], "no question set named"),
    "split with 0 questions": (["--questions", "good", "--split", "nosuch"], "has no questions"),
    "file, split with 0 questions": (["--questions", "other.jsonl", "--split", "dev"],
                                     "has no questions"),
}


@pytest.mark.parametrize("case", sorted(QUESTION_CASES))
def test_bad_questions(world, case):
    args, *expect = QUESTION_CASES[case]
    _case(world, _collect(world, *[str(world["tmp"] / a) if a.endswith((".jsonl", ".csv")) else a
                                   for a in args]), *expect)


def test_bad_question_import_adds_nothing(world):
    _case(world, ["questions", "import", str(world["tmp"] / "malformed.jsonl"), "--set", "good"],
          "invalid JSON")


def test_pocket_world_split_with_no_questions(world, tmp_path):
    # On a fresh store: the pocket set must not be imported by a command that then fails.
    fresh = tmp_path / "fresh.db"
    r = run_cli(["--db", str(fresh), "collect", "--world", "pocket", "--model",
                 "scripted:pocket:0.3", "--split", "nosuch"], world["env"])
    _assert_one_error_line(r, "has no questions")
    assert table_counts(fresh).get("questions", 0) == 0


def test_unknown_model_path(world):
    # with a question *file*: the file's set must not be imported when the model fails
    _case(world, ["collect", "--questions", str(world["tmp"] / "other.jsonl"),
                  "--model", "/nonexistent", "--corpus", str(world["corpus"])],
          "cannot load model", "/nonexistent")


@pytest.mark.parametrize("flag", ["--model", "--policy"])
def test_judge_distill_with_a_model_that_does_not_load(world, tmp_path, flag):
    # Either model failing is one line before anything is written: no adapter folder, no samples.
    models = {"--policy": str(world["tmp"] / "no-policy"), "--model": str(world["tmp"] / "no-judge")}
    from agent.worlds.pocket.assets import MODEL_DIR

    models = {k: (v if k == flag else str(MODEL_DIR)) for k, v in models.items()}
    out = tmp_path / "judge"
    r = run_cli(["pocket", "judge-distill", "--policy", models["--policy"], "--model", models["--model"],
                 "--out", str(out), "--worlds", "1", "--questions-per-world", "1"], world["env"])
    _assert_one_error_line(r, "cannot load", "the policy" if flag == "--policy" else "judge's base")
    assert not out.exists() and not out.with_name("judge.samples.db").exists()


def test_collect_with_an_unknown_chooser(world):
    _case(world, _collect(world, "--questions", "good", "--choose", "judge"),
          "--choose must be one of perplexity, rules")


@pytest.mark.parametrize("adapter", ["corrupt-adapter", "garbage-weights-adapter", "no-such-adapter"])
def test_corrupt_or_missing_adapter(world, adapter):
    _case(world, ["collect", "--questions", "good", "--model", str(world["tiny"]),
                  "--adapter", str(world["tmp"] / adapter), "--corpus", str(world["corpus"])],
          "adapter")


@pytest.mark.parametrize("db, expect", [
    ("nosuchscheme://x", "cannot use database URL"),
    ("postgresql://u@127.0.0.1:1/x", "cannot open database"),
    ("postgresql://u:hunter2secret@127.0.0.1:1/x", "***"),  # and the password is not printed
    ("/nonexistent-dir/sub/store.db", "database folder does not exist"),
])
def test_bad_database(world, db, expect):
    line = _case(world, _collect(world, "--questions", "good"), expect, db=db)
    assert "hunter2secret" not in line


def test_full_disk_while_saving_the_adapter(world):
    """Training writes its adapter onto a 64 KiB tmpfs (a private mount namespace): ENOSPC.

    Where mount namespaces are not allowed, a file-size limit (RLIMIT_FSIZE, EFBIG) stands
    in for the full disk. Either way the error comes from the kernel at save time.
    """
    tmp, env = world["tmp"], world["env"]
    disk = tmp / "small-disk"
    disk.mkdir(exist_ok=True)
    out = disk / "adapter"
    train = CLI + ["--db", str(world["db"]), "train", "--run", "seed-run", "--model",
                   str(world["tiny"]), "--out", str(out), "--epochs", "1"]
    before = table_counts(world["db"])
    script = ('mount -t tmpfs -o size=64k tmpfs "$1" || exit 99; shift; "$@"; rc=$?; '
              'ls -A "$OLDPWD_DISK" >&2; exit $rc')
    unshare = shutil.which("unshare")
    r = None
    if unshare:
        r = subprocess.run([unshare, "--user", "--map-root-user", "--mount", "sh", "-c", script,
                            "sh", str(disk), *train], env={**env, "OLDPWD_DISK": str(disk)},
                           capture_output=True, text=True, timeout=HANG_S)
    if r is None or r.returncode == 99 or "unshare:" in r.stderr:
        import resource

        def limit():  # Python ignores SIGXFSZ, so an over-limit write fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

        r = subprocess.run(train, env=env, capture_output=True, text=True, timeout=HANG_S,
                           preexec_fn=limit)
        leftovers = sorted(p.name for p in disk.iterdir())
        expect = "cannot save the model"
    else:
        # `ls` of the tmpfs ran inside the namespace, after training gave up
        leftovers = [x for x in r.stderr.splitlines()[-3:] if x.startswith("adapter")]
        r = subprocess.CompletedProcess(r.args, r.returncode, r.stdout,
                                        "\n".join(x for x in r.stderr.splitlines()
                                                  if not x.startswith("adapter")))
        expect = "disk full while saving"
    _assert_one_error_line(r, expect, str(out))
    assert leftovers == [], f"a half-written model was left behind: {leftovers}"
    assert table_counts(world["db"]) == before  # no model version for a model that was not saved


def test_pocket_pretrain_with_unknown_loss(world, tmp_path):
    _case(world, ["pocket", "pretrain", "--out", str(tmp_path / "m"), "--loss", "prompt"],
          "--loss must be 'full' or 'completion'")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("weights", ["summarise=2", "summarize=-1", "summarize=lots",
                                     "summarize=inf", "summarize=nan", "checks=0.1"])
def test_pocket_pretrain_with_bad_mistake_weights(world, tmp_path, weights):
    _case(world, ["pocket", "pretrain", "--out", str(tmp_path / "m"), "--mistake-weights", weights],
          "--mistake-weights wants KIND=W")
    assert not (tmp_path / "m").exists()


def test_pocket_pretrain_mistake_weights_parse():
    from agent.worlds.pocket.policy import parse_kind_weights

    assert parse_kind_weights(" summarize = 2 , answer=1.5,") == {"summarize": 2.0, "answer": 1.5}
    assert parse_kind_weights("") == {}
    with pytest.raises(ValueError, match="--mistake-weights gives summarize twice"):
        parse_kind_weights("summarize=2,summarize=3", option="--mistake-weights")


def test_improve_with_unknown_model_writes_nothing(world, tmp_path):
    # improve loads every model (and the judge) before it imports questions or opens a run
    fresh = tmp_path / "fresh.db"
    r = run_cli(["--db", str(fresh), "improve", "--world", "pocket", "--model", "/nonexistent",
                 "--iterations", "1"], world["env"])
    _assert_one_error_line(r, "cannot load model")
    counts = table_counts(fresh)
    assert counts.get("questions", 0) == 0 and counts.get("runs", 0) == 0


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU refusal")
def test_improve_in_4bit_without_a_gpu_writes_nothing(world, tmp_path):
    fresh = tmp_path / "fresh.db"
    r = run_cli(["--db", str(fresh), "improve", "--world", "pocket", "--4bit",
                 "--iterations", "1"], world["env"])
    _assert_one_error_line(r, "4-bit")
    counts = table_counts(fresh)
    assert counts.get("questions", 0) == 0 and counts.get("runs", 0) == 0


def test_improve_samples_for_without_grow_samples_writes_nothing(world, tmp_path):
    fresh = tmp_path / "fresh.db"
    r = run_cli(["--db", str(fresh), "improve", "--world", "pocket", "--samples", "1",
                 "--samples-for", "summarize=8", "--iterations", "1"], world["env"])
    _assert_one_error_line(r, "--samples-for applies to grow")
    assert table_counts(fresh).get("runs", 0) == 0


@pytest.mark.parametrize("option, value, expect", [
    ("--trajectories", "best", "--trajectories must be one of all, clean"),
    ("--grow-choose", "judge", "--grow-choose must be one of perplexity, rules"),
])
def test_improve_with_an_unknown_grow_option_value_writes_nothing(world, tmp_path, option, value, expect):
    fresh = tmp_path / "fresh.db"
    r = run_cli(["--db", str(fresh), "improve", "--world", "pocket", option, value,
                 "--iterations", "1"], world["env"])
    _assert_one_error_line(r, expect)
    assert not fresh.exists() or table_counts(fresh).get("runs", 0) == 0
