"""restreact: a self-improving web-search QA agent (ReST meets ReAct, on open parts).

Every command stores what it does in one SQL database (--db / RESTREACT_DB, default
./restreact.db). Heavy libraries (torch, transformers, trl, peft) are imported inside the
commands that need them, so `--help` stays fast.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
questions_app = typer.Typer(help="Import and list question sets.", no_args_is_help=True)
app.add_typer(questions_app, name="questions")


class Ctx:
    db: Optional[str] = None


def fail(message: str, code: int = 1) -> None:
    """One clear line on stderr and a non-zero exit: how every user error ends."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def open_store():
    from store.api import Store
    from store.db import StoreError

    try:
        return Store(Ctx.db)
    except StoreError as e:
        fail(str(e))


@app.callback()
def _root(db: Optional[str] = typer.Option(None, "--db", envvar="RESTREACT_DB",
                                           help="Database URL or SQLite file (default ./restreact.db).")):
    Ctx.db = db


# --- store browsing: logs, show, questions ---------------------------------------------


# --- agent: ask, collect -----------------------------------------------------------------


# --- loop: rank, train, eval, improve, report --------------------------------------------


# --- pocket world ---------------------------------------------------------------------------


def main() -> None:
    app()


if __name__ == "__main__":
    main()
