"""The SQLite files settlement keeps (the channel book, the embedded ledger's journal)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ._errors import SettlementError


def open_durable(
    path: Path, schema: str, what: str, error: type[SettlementError]
) -> sqlite3.Connection:
    """The SQLite file at ``path`` in WAL mode with FULL sync (a commit that returned
    survives power loss), its ``schema`` applied. ``error``, naming the file and
    what to do, if it is not a database (never a traceback)."""
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise error(f"cannot open {what} {path}: {exc}") from exc
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise error(
            f"{path} ({what}) is not a readable database ({exc}): restore it from a "
            "backup, or move it away to start empty (what it recorded is then lost)"
        ) from exc
    return db
