"""Where the database goes: the user's data folder unless --db or RESTREACT_DB say otherwise,
and never the folder the user stands in. Real CLI children, real files."""

from __future__ import annotations

from pathlib import Path

from tests.harness import cli_env, run_cli


def _env(tmp_path: Path, **extra) -> dict:
    env = cli_env(tmp_path, XDG_DATA_HOME=str(tmp_path / "xdg"))
    env.pop("RESTREACT_HOME", None)  # the conftest sandbox; here platformdirs decides
    env.pop("RESTREACT_DB", None)
    return {**env, **extra}


def test_default_database_lives_in_the_data_folder_not_the_current_one(tmp_path):
    cwd = tmp_path / "work"
    cwd.mkdir()
    r = run_cli(["questions", "list"], _env(tmp_path), cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "xdg" / "restreact" / "restreact.db").is_file()
    assert list(cwd.iterdir()) == []  # nothing written where the user stands


def test_help_shows_the_resolved_database(tmp_path):
    r = run_cli(["--help"], _env(tmp_path, COLUMNS="300"))
    assert r.returncode == 0 and str(tmp_path / "xdg" / "restreact" / "restreact.db") in r.stdout
    r = run_cli(["--help"], _env(tmp_path, COLUMNS="300", RESTREACT_DB=str(tmp_path / "mine.db")))
    assert f"{tmp_path / 'mine.db'}, from RESTREACT_DB" in r.stdout


def test_db_option_and_env_override_the_default(tmp_path):
    env = _env(tmp_path, RESTREACT_DB=str(tmp_path / "env.db"))
    assert run_cli(["questions", "list"], env).returncode == 0
    assert (tmp_path / "env.db").is_file()
    assert run_cli(["--db", str(tmp_path / "opt.db"), "questions", "list"], env).returncode == 0
    assert (tmp_path / "opt.db").is_file()
    assert not (tmp_path / "xdg").exists()  # the data folder is made only when it is used
    home = _env(tmp_path, RESTREACT_HOME=str(tmp_path / "home"))
    assert run_cli(["questions", "list"], home).returncode == 0
    assert (tmp_path / "home" / "restreact.db").is_file()
