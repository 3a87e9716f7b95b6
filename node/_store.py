"""The node's SQLite store: one WAL database, versioned migrations, every call off the trio loop.

`Database` is the synchronous core (used from worker threads, or directly by
offline CLI commands that hold the data dir lock). `Store` is its trio facade:
each call runs in a worker thread, one at a time.

Cancellation: a call that has started in its thread always runs to the end
(commit or rollback), so a cancelled caller never leaves a half-written
transaction; the cancellation is delivered when the thread returns.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio

from ._errors import StoreError, StoreFull

T = TypeVar("T")


class Database:
    """A synchronous SQLite connection with ``migrations`` applied.

    ``migrations`` is append-only: migration n (from 1) brings the file to schema
    version n. The store knows no table of its own; the composition root hands it
    every part's (node/_schema.py). Not thread-safe by itself: `Store`
    serialises access to it.
    """

    def __init__(self, path: Path, migrations: Sequence[str]) -> None:
        self.path = path
        self.migrations = tuple(migrations)
        try:
            self.conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit that returned survives power loss, so an acknowledged
            # write is never lost.
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from exc

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version, known = self.schema_version, len(self.migrations)
        if version > known:
            raise StoreError(
                f"the store {self.path} has schema version {version}, newer than this "
                f"mercato understands ({known}); upgrade mercato"
            )
        for number in range(version + 1, known + 1):
            with self.transaction():
                for statement in _split_sql(self.migrations[number - 1]):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version={number}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK if the block raises."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            self.conn.execute("COMMIT")  # inside: a COMMIT that fails (a full disk) rolls back
        except BaseException:
            if self.conn.in_transaction:  # SQLite ends it itself on some errors (a full disk)
                self.conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


class Store:
    """Trio facade of a `Database`: every call runs in a worker thread, one at a time."""

    def __init__(self, db: Database) -> None:
        self.db = db
        """The synchronous core; touch it only inside functions passed to `run`."""
        self._limiter = trio.CapacityLimiter(1)
        self.calls = 0

    @property
    def path(self) -> Path:
        return self.db.path

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread, after any earlier call, and return its result.

        ``fn`` may use `db` freely: no other store call runs at the same time.
        Raises StoreFull if the disk is full (the transaction rolled back: nothing
        was written), so that a full disk is an error the caller can report, not
        a crash.
        """
        self.calls += 1
        try:
            return await trio.to_thread.run_sync(
                functools.partial(fn, *args), limiter=self._limiter
            )
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_FULL:  # extended codes too
                raise
            raise StoreFull(
                f"the disk holding {self.db.path.parent} is full, so nothing was written: "
                "free some space (the node goes on, and writes again once it can)"
            ) from exc


@asynccontextmanager
async def open_store(path: Path, migrations: Sequence[str]) -> AsyncIterator[Store]:
    """Open (creating and migrating as needed) the store at ``path``.

    Raises StoreError if the file is not a database or is of a newer schema.
    The connection is closed on exit, even when the block is cancelled.
    """
    db = await trio.to_thread.run_sync(Database, path, migrations)
    try:
        yield Store(db)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(db.close)
