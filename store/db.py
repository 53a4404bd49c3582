"""Engines and sessions: SQLite (WAL) by default, PostgreSQL by URL.

The schema is created or upgraded automatically on first use by running the Alembic
migrations in `store/migrations/`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from store.paths import DB_ENV, chosen_db, default_db

MIGRATIONS = Path(__file__).parent / "migrations"


class StoreError(RuntimeError):
    """The database cannot be opened or used; the message is meant for the user."""


def resolve_url(db: str | None = None) -> str:
    """`--db` wins, then RESTREACT_DB, then restreact.db in the user's data folder
    (store/paths.py). Bare paths become SQLite URLs."""
    value = chosen_db(db)
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def _make_default_folder(db: str | None) -> None:
    """The data folder is created on first use; a folder the user named must exist."""
    if not db and not os.environ.get(DB_ENV):
        default_db().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (cli.py show/logs) work while a collector writes; the busy timeout
    # makes concurrent writers wait for the lock instead of failing at once.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:" and not Path(path).parent.exists():
                raise StoreError(f"database folder does not exist: {Path(path).parent}")
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    except StoreError:
        raise
    except Exception as e:  # unknown dialect, missing driver, malformed URL
        raise StoreError(f"cannot use database URL {_redact(url)!r}: {e}") from None


def head_revision() -> str:
    """The newest migration's id, read from the file names (no Alembic import: fast)."""
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*.py"))


def is_current(engine: Engine) -> bool:
    """True when the database is already at the newest migration (the common case)."""
    from sqlalchemy import inspect, text

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return False
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head_revision()


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (creates it on an empty database)."""
    if is_current(engine):
        return  # loading Alembic and its scripts costs ~0.8 s a process; skip when unneeded
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        _lock_for_migration(conn)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()


def _lock_for_migration(conn) -> None:
    """Serialise migrations and make them all-or-nothing.

    Several collectors may open a new database at the same moment; without a lock each
    would try to create the tables. On SQLite the driver runs DDL outside any transaction
    unless one is opened explicitly, so a crash mid-migration would leave half a schema:
    BEGIN IMMEDIATE both takes the write lock (others wait, busy_timeout) and makes the
    DDL transactional. PostgreSQL DDL is transactional already; an advisory lock held
    until commit serialises concurrent upgrades.
    """
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(2312100030)")


def open_engine(db: str | None = None, migrate: bool = True) -> Engine:
    url = resolve_url(db)
    try:
        _make_default_folder(db)
    except OSError as e:
        raise StoreError(f"cannot create the data folder {default_db().parent}: {e.strerror or e}") from None
    engine = make_engine(url)
    try:
        with engine.connect():
            pass
        if migrate:
            upgrade(engine)
    except StoreError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StoreError(f"cannot open database {_redact(url)}: {first}") from None
    return engine


def _redact(url: str) -> str:
    """Hide a password in a URL before it reaches a message or a log."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


@contextmanager
def session_scope(factory: sessionmaker) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
