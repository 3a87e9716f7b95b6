"""The task log: every task this node ran for others or asked others to run.

One row per task and side (``user`` or ``provider``), with the signed receipt
when there is one and every attempt that failed before it, so that
`mercato tasks ls | show` can tell what happened and a receipt can be checked
again later; the reputation changes a task caused are committed with it.
`TaskLog.write` returns once the row is committed; rows that
arrive while a commit runs go together in the next one (group commit), so
concurrent tasks share a disk sync. The log keeps the newest MAX_ROWS rows.

A model call is logged as a task (``agent`` is the model's listing) with the
tokens it read and wrote (node migration 11; an agent's task keeps 0), and
`TaskLog.usage` sums calls, tokens and lamports per side and listing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import astuple, dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from ._reputation import Standing, save

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .._store import Database, Store

SCHEMA = """
CREATE TABLE tasks (
    id        TEXT NOT NULL,
    role      TEXT NOT NULL,
    agent     TEXT NOT NULL,
    version   TEXT NOT NULL,
    provider  TEXT NOT NULL,
    user      TEXT NOT NULL,
    status    TEXT NOT NULL,
    price     INTEGER NOT NULL,
    created   REAL NOT NULL,
    wall_ms   INTEGER NOT NULL,
    verified  TEXT NOT NULL,
    error     TEXT NOT NULL,
    attempts  TEXT NOT NULL,
    receipt   BLOB,
    PRIMARY KEY (id, role, provider, user)
);
CREATE INDEX tasks_created ON tasks(created);
"""

TOKENS_SCHEMA = """
ALTER TABLE tasks ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
"""

COLUMNS = (
    "id, role, agent, version, provider, user, status, price, created, wall_ms, verified,"
    " error, attempts, receipt, input_tokens, output_tokens"
)
FIELDS = COLUMNS.count(",") + 1
MAX_ROWS = 100_000
PRUNE_EVERY = 256  # batches between checks of the row count

log = logging.getLogger("mercato.tasks")


@dataclass(frozen=True)
class TaskRecord:
    id: str
    role: str
    agent: str
    version: str
    provider: str
    user: str
    status: str  # the run's outcome ("ok", "trap", ...) or "failed"
    price: int
    created: float
    wall_ms: int
    verified: str  # "receipt", "cross-checked", "local", "unverified", or "" (none ran)
    error: str = ""
    attempts: list[dict[str, str]] = field(default_factory=list)
    receipt: bytes | None = None
    input_tokens: int = 0  # a model call's prompt tokens; 0 for an agent's task
    output_tokens: int = 0  # a model call's completion tokens

    def row(self) -> tuple[Any, ...]:
        values = list(astuple(self))
        values[12] = json.dumps(self.attempts)
        return tuple(values)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> TaskRecord:
        values = list(row)
        values[12] = json.loads(values[12])
        return cls(*values)


class _Batch:
    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.standings: dict[str, Standing] = {}
        self.done = trio.Event()
        self.error: BaseException | None = None


class TaskLog:
    """Writes task records in batches (group commit) in the store's thread."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._batch = _Batch()
        self._wake = trio.Event()
        self._batches = 0

    async def write(self, record: TaskRecord, standings: Iterable[Standing] = ()) -> None:
        """Record a task, and the providers' standings it changed; returns once they
        are committed (with whatever else was waiting).

        Raises StoreError if the write failed. Cancelling the caller does not
        withdraw the record.
        """
        batch = self._batch
        batch.rows.append(record.row())
        batch.standings.update((s.provider, s) for s in standings)
        self._wake.set()
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit queued records until cancelled; on cancellation the queue is flushed."""
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                await self.flush()
        finally:
            with trio.CancelScope(shield=True):
                await self.flush()

    async def flush(self) -> None:
        batch, self._batch = self._batch, _Batch()
        if not batch.rows and not batch.standings:
            batch.done.set()
            return
        self._batches += 1
        prune = self._batches % PRUNE_EVERY == 1
        try:
            await self._store.run(
                _insert, self._store.db, batch.rows, list(batch.standings.values()), prune
            )
        except Exception as exc:  # the writers hear of it; the log goes on
            log.warning("could not record tasks", extra={"error": str(exc)})
            batch.error = exc
        finally:
            batch.done.set()

    async def recent(self, limit: int, role: str | None = None) -> list[TaskRecord]:
        """The last ``limit`` tasks (of ``role``, if given), newest first."""
        return await self._store.run(_select, self._store.db, limit, role)

    async def get(self, task_id: str) -> list[TaskRecord]:
        """Both sides of a task this node saw (usually one)."""
        return await self._store.run(_get, self._store.db, task_id)

    async def usage(self, since: float) -> list[dict[str, Any]]:
        """Per side and listing, the tasks created at ``since`` (unix seconds) or
        later: ``role``, ``agent``, ``calls``, ``calls_ok`` (status ``ok``),
        ``input_tokens``, ``output_tokens`` and ``lamports`` (what they paid or
        earned), the user's side first, then by lamports, most first."""
        return await self._store.run(_usage, self._store.db, since)


def _insert(
    db: Database, rows: list[tuple[Any, ...]], standings: list[Standing], prune: bool
) -> None:
    with db.transaction() as conn:
        conn.executemany(
            f"INSERT OR REPLACE INTO tasks ({COLUMNS}) VALUES ({','.join('?' * FIELDS)})", rows
        )
        save(conn, standings)
        if not prune:
            return
        (count,) = conn.execute("SELECT count(*) FROM tasks").fetchone()
        if count > MAX_ROWS:
            conn.execute(
                "DELETE FROM tasks WHERE rowid IN"
                " (SELECT rowid FROM tasks ORDER BY created LIMIT ?)",
                (count - MAX_ROWS,),
            )


def _select(db: Database, limit: int, role: str | None) -> list[TaskRecord]:
    where, args = ("WHERE role = ?", [role]) if role else ("", [])
    rows = db.conn.execute(
        f"SELECT {COLUMNS} FROM tasks {where} ORDER BY created DESC LIMIT ?", (*args, limit)
    ).fetchall()
    return [TaskRecord.from_row(r) for r in rows]


def _get(db: Database, task_id: str) -> list[TaskRecord]:
    rows = db.conn.execute(f"SELECT {COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchall()
    return [TaskRecord.from_row(r) for r in rows]


USAGE_KEYS = ("role", "agent", "calls", "calls_ok", "input_tokens", "output_tokens", "lamports")


def _usage(db: Database, since: float) -> list[dict[str, Any]]:
    rows = db.conn.execute(
        "SELECT role, agent, count(*), sum(status = 'ok'), sum(input_tokens),"
        " sum(output_tokens), sum(price) AS lamports FROM tasks WHERE created >= ?"
        " GROUP BY role, agent ORDER BY role = 'provider', lamports DESC, agent",
        (since,),
    ).fetchall()
    return [dict(zip(USAGE_KEYS, r, strict=True)) for r in rows]
