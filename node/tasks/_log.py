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
`TaskLog.usage` sums calls, tokens and lamports per side, listing and provider.

`TaskLog.note` queues an event-log entry (a task served or run, a payment, a
channel opened or closed) that is appended with the next batch: the task's path
never waits for it, and it costs no store call of its own.
"""

from __future__ import annotations

import json
import logging
from dataclasses import astuple, dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from .._events import EventLog
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
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.done = trio.Event()
        self.error: BaseException | None = None


class TaskLog:
    """Writes task records in batches (group commit) in the store's thread."""

    def __init__(self, store: Store, events: EventLog | None = None) -> None:
        """``events``: the node's event log (its metrics count each entry); without
        it, entries go to the store's event table uncounted."""
        self._store = store
        self.events = events or EventLog(store.db)
        self._batch = _Batch()
        self._wake = trio.Event()
        self._batches = 0

    def note(self, kind: str, data: dict[str, Any]) -> None:
        """Queue an event-log entry, appended with the next batch (within
        milliseconds); returns at once. ``data`` must be JSON-serialisable and hold
        no secret and no task input."""
        self._batch.events.append((kind, data))
        self._wake.set()

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
        if not batch.rows and not batch.standings and not batch.events:
            batch.done.set()
            return
        self._batches += 1
        prune = self._batches % PRUNE_EVERY == 1
        standings = list(batch.standings.values())
        unlogged: list[str] = []
        try:
            await self._store.run(
                _commit, self._store.db, batch.rows, standings, prune, self.events,
                batch.events, unlogged,
            )  # fmt: skip
        except Exception as exc:  # the writers hear of it; the log goes on
            log.warning("could not record tasks", extra={"error": str(exc)})
            batch.error = exc
        finally:
            batch.done.set()
        if unlogged:
            log.warning("could not append to the event log", extra={"error": unlogged[0]})

    async def recent(self, limit: int, role: str | None = None) -> list[TaskRecord]:
        """The last ``limit`` tasks (of ``role``, if given), newest first."""
        return await self._store.run(_select, self._store.db, limit, role)

    async def get(self, task_id: str) -> list[TaskRecord]:
        """Both sides of a task this node saw (usually one)."""
        return await self._store.run(_get, self._store.db, task_id)

    async def usage(self, since: float, by_provider: bool = False) -> list[dict[str, Any]]:
        """Per side and listing, the tasks created at ``since`` (unix seconds) or
        later: ``role``, ``agent``, ``calls``, ``calls_ok`` (status ``ok``),
        ``input_tokens``, ``output_tokens`` and ``lamports`` (what they paid or
        earned), the user's side first, then by lamports, most first. With
        ``by_provider``, per ``provider`` too (on the provider's side, this node)."""
        return await self._store.run(_usage, self._store.db, since, by_provider)

    async def served(self, since: float) -> list[tuple[str, str, int, bytes | None]]:
        """The tasks and model calls this node served since ``since`` (unix seconds),
        oldest first: (listing, status, price, signed receipt or None)."""
        return await self._store.run(_served, self._store.db, since)


def _commit(
    db: Database,
    rows: list[tuple[Any, ...]],
    standings: list[Standing],
    prune: bool,
    events: EventLog,
    entries: list[tuple[str, dict[str, Any]]],
    unlogged: list[str],
) -> None:
    """The batch's tasks, then its events (after the tasks they tell of, in the same
    turn of the store's thread); an event that cannot be appended goes into
    ``unlogged`` and does not fail the tasks."""
    try:
        if rows or standings:
            _insert(db, rows, standings, prune)
    finally:
        for kind, data in entries:
            try:
                events.record(kind, data)
            except Exception as exc:
                unlogged.append(f"{kind}: {exc}")


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


def _usage(db: Database, since: float, by_provider: bool = False) -> list[dict[str, Any]]:
    # A failed task (no provider answered) names the provider pinned, or none ("").
    group = "role, agent, provider" if by_provider else "role, agent"
    keys = (*USAGE_KEYS[:2], "provider", *USAGE_KEYS[2:]) if by_provider else USAGE_KEYS
    rows = db.conn.execute(
        f"SELECT {group}, count(*), sum(status = 'ok'), sum(input_tokens),"
        " sum(output_tokens), sum(price) AS lamports FROM tasks WHERE created >= ?"
        f" GROUP BY {group} ORDER BY role = 'provider', lamports DESC, {group}",
        (since,),
    ).fetchall()
    return [dict(zip(keys, r, strict=True)) for r in rows]


def _served(db: Database, since: float) -> list[tuple[str, str, int, bytes | None]]:
    rows = db.conn.execute(
        "SELECT agent, status, price, receipt FROM tasks"
        " WHERE role = 'provider' AND created >= ? ORDER BY created",
        (since,),
    ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]
