"""Where restreact keeps its files when the user names none: the user's data folder.

`platformdirs` gives the platform's place (~/.local/share/restreact on Linux, honouring
XDG_DATA_HOME; ~/Library/Application Support/restreact on macOS; %LOCALAPPDATA% on
Windows), so a demo run never litters the folder the user stands in. RESTREACT_HOME moves
all of it at once; --db / RESTREACT_DB name the database alone. Stdlib and platformdirs
only: `cli.py --help` reads these to show the resolved path.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "RESTREACT_HOME"
DB_ENV = "RESTREACT_DB"
DB_NAME = "restreact.db"


def data_dir() -> Path:
    """The folder for the default database and improve's adapters (not created here)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("restreact", appauthor=False))


def default_db() -> Path:
    return data_dir() / DB_NAME


def chosen_db(db: str | None = None) -> str:
    """What the store will open: `--db`, else RESTREACT_DB, else the data folder's file."""
    return db or os.environ.get(DB_ENV) or str(default_db())
