"""Reading user files line by line, with errors that point at the line.

Every reader of a user's file (question files, corpora, cassettes, Alpaca training data,
model and adapter configs) goes through these helpers, so a bad file always reads

    FILE:LINE: not UTF-8 (byte 0xff at column 1)
    FILE:LINE: invalid JSON (invalid control character at column 17)

one line, naming the file, the line and the reason, whatever the reader. Stdlib only: the
CLI checks files with these before it loads a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


class InputError(ValueError):
    """A user file that cannot be read; the message is one line: FILE[:LINE]: reason."""


def read_lines(path: str | Path, what: str = "file") -> Iterator[tuple[int, str]]:
    """(line number, text) for each line of a UTF-8 file, line ends dropped.

    A missing or unreadable file, or a line that is not UTF-8, raises InputError naming
    the line and the column of the first bad byte.
    """
    path = Path(path)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a {what}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    with f:
        for n, raw in enumerate(f, start=1):
            yield n, decode_line(path, n, raw)


def decode_line(path, n: int, raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        column = len(raw[:e.start].decode("utf-8", errors="replace")) + 1
        raise InputError(f"{path}:{n}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {column})") from None
    return text.rstrip("\r\n")


def read_text(path: str | Path, what: str = "file") -> str:
    """The whole file as text (lines joined by \\n), with read_lines' errors."""
    return "\n".join(line for _, line in read_lines(path, what))


def json_error(path, n: int | None, e: json.JSONDecodeError) -> InputError:
    """A JSON error as one whole sentence: json's own message stops at "... at"."""
    msg = e.msg[0].lower() + e.msg[1:] if e.msg else "invalid"
    reason = f"{msg} column {e.colno}" if msg.endswith(" at") else f"{msg} at column {e.colno}"
    return InputError(f"{path}:{n if n is not None else e.lineno}: invalid JSON ({reason})")


def json_line(path, n: int, line: str):
    """One JSONL line parsed; InputError naming the line when it is not JSON."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise json_error(path, n, e) from None
    except RecursionError:
        raise InputError(f"{path}:{n}: invalid JSON (nested too deeply)") from None


def json_file(path: str | Path, what: str = "file"):
    """A whole JSON document (a config file) parsed, with the line of any error."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise json_error(path, None, e) from None
    except RecursionError:
        raise InputError(f"{path}: invalid JSON (nested too deeply)") from None
