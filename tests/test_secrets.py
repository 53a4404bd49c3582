"""Secrets: a planted API key reaches the server's Authorization header and nothing else.

The agent runs through the CLI against the loopback OpenAI-compatible test server (whose
answers come from the pocket world's scripted reader) with OPENAI_API_KEY planted, and
records a cassette. One collection is SIGKILLed mid-way so the SQLite write-ahead log is
caught with data in it; the server also answers one request with an error that echoes
the key back, as real APIs do ("Incorrect API key provided: sk-..."). Then every byte
written under the test's directory — database, WAL, cassettes, stdout/stderr logs, the
`logs` and `show` output — is searched for the key, for any long piece of it, and for
"Bearer".
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from tests.harness import cli_env, run_cli, run_until, sqlite_count
from tests.openai_server import start_server

SECRET_PART = uuid.uuid4().hex  # random per run: it cannot be in any file by chance
KEY = f"sk-test-PLANTED-{SECRET_PART}"


def _responder(world: Path):
    from store.records import GenRequest
    from agent.worlds import get_world

    reader = get_world("pocket").teacher(0.3, where=world)

    def respond(prompt: str, n: int, temperature: float, max_tokens: int):
        gen = reader.generate(GenRequest(prompt, n=n, temperature=temperature))
        return [(c.text, [c.logprob / max(c.n_tokens, 1)] * max(c.n_tokens, 1)) for c in gen.completions]

    return respond


def _leaks(root: Path) -> list[str]:
    found = []
    needles = [KEY.encode(), SECRET_PART.encode(), SECRET_PART[:12].encode(),
               SECRET_PART[-12:].encode(), b"Bearer"]
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path.relative_to(root)}: {n.decode()}" for n in needles if n in data]
    return found


def test_planted_api_key_is_never_written(tmp_path):
    from agent.worlds import get_world

    world = tmp_path / "world"
    get_world("pocket").build(5, world, size="tiny")
    rows = [json.loads(x) for x in (world / "questions.jsonl").read_text().splitlines()]
    qfile = tmp_path / "qs.jsonl"
    qfile.write_text("".join(json.dumps({"id": q["id"], "question": q["question"],
                                         "answer": q["answer"]}) + "\n" for q in rows[:6]))
    base_url, server = start_server(_responder(world), model="pocket-reader")
    try:
        env = cli_env(tmp_path, OPENAI_BASE_URL=base_url, OPENAI_API_KEY=KEY)
        db = tmp_path / "store.db"
        collect = ["--db", str(db), "collect", "--questions", str(qfile),
                   "--model", "openai:pocket-reader", "--corpus", str(world / "corpus.jsonl"),
                   "--record", str(tmp_path / "collect.cassette.jsonl"), "--samples", "2",
                   "--concurrency", "2", "--run", "secret-run"]
        killed = run_until(collect, env, tmp_path / "logs", "collect-killed",
                           kill_when=lambda: sqlite_count(db, "SELECT COUNT(*) FROM steps") >= 6)
        assert killed.killed
        wal = Path(f"{db}-wal")
        assert wal.is_file() and wal.stat().st_size > 0  # the crash left a live write-ahead log
        shutil.copytree(tmp_path / "logs", tmp_path / "logs-after-kill")
        for suffix in ("", "-wal", "-shm"):
            shutil.copy(f"{db}{suffix}", tmp_path / f"crashed.db{suffix}")

        done = run_until(collect, env, tmp_path / "logs", "collect-resumed")
        assert done.returncode == 0, done.stderr[-2000:]

        server.fail_next(1, 401, f"Incorrect API key provided: {KEY}. Check your key.")
        ask = run_cli(["--db", str(db), "ask", rows[0]["question"], "--model",
                       "openai:pocket-reader", "--corpus", str(world / "corpus.jsonl"),
                       "--record", str(tmp_path / "ask.cassette.jsonl")], env)
        assert ask.returncode != 0  # the refused request ended that trajectory as failed
        for name, args in {"logs": ["logs", "-n", "0", "--full"], "logs-json": ["logs", "-n", "0", "--json"],
                           "show": ["show", "--json", "--full"]}.items():
            r = run_cli(["--db", str(db)] + args, env)
            assert r.returncode == 0, r.stderr
            (tmp_path / "logs" / f"{name}.out").write_text(r.stdout + r.stderr)
        (tmp_path / "logs" / "ask.out").write_text(ask.stdout + ask.stderr)
    finally:
        server()

    # The key did its job: every request to the server carried it, in the header only.
    posts = [r for r in server.requests if r.path.endswith("/chat/completions")]
    assert len(posts) > 20
    assert all(r.headers.get("authorization") == f"Bearer {KEY}" for r in posts)
    assert all(KEY not in json.dumps(r.body) for r in posts)
    # The echoed key was refused and recorded — without the key.
    failed = run_cli(["--db", str(db), "logs", "-n", "1", "--json"], cli_env(tmp_path))
    assert failed.returncode == 0
    errors = [json.loads(x).get("error") for x in
              (tmp_path / "ask.cassette.jsonl").read_text().splitlines() if '"error"' in x]
    assert errors and "Incorrect API key provided" in errors[0]
    assert (tmp_path / "collect.cassette.jsonl").stat().st_size > 0

    assert _leaks(tmp_path) == []
