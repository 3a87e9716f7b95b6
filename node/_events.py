"""The event log: an append-only, hash-chained record of every state change that matters.

Entry ``n`` stores ``hash_n = sha256(hash_{n-1} || canonical_cbor([n, ts, kind, data]))``
with ``hash_0`` = 32 zero bytes, so changing, removing or reordering any entry
breaks every hash after it; `verify_events` finds the first entry that does not
hold. SQLite triggers also refuse UPDATE and DELETE on the table.

The functions here take a `Database` and block; the daemon runs them through
`Store.run`, offline CLI commands call them directly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mercato.p2p import canonical_cbor

from ._store import Database

SCHEMA = """
CREATE TABLE events (
    seq       INTEGER PRIMARY KEY,
    ts        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    data      TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
);
CREATE INDEX events_kind ON events(kind, seq);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
"""
"""The event log's table (node migration 1), append-only by trigger."""

GENESIS = bytes(32)
MAX_LIST = 1000


@dataclass(frozen=True)
class Event:
    seq: int
    ts: str
    kind: str
    data: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class VerifyReport:
    """The result of checking the chain: ``first_bad`` is None when it holds."""

    ok: bool
    checked: int
    head: str | None
    first_bad: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _entry_hash(prev: bytes, seq: int, ts: str, kind: str, data: Any) -> bytes:
    return hashlib.sha256(prev + canonical_cbor([seq, ts, kind, data])).digest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _as_hex(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else repr(value)


def _row_to_event(row: Any) -> Event:
    """An event as stored; a row damaged outside mercato is shown, not hidden."""
    try:
        data = json.loads(row["data"])
    except (ValueError, TypeError):
        data = {"corrupt": str(row["data"])[:200]}
    return Event(
        seq=row["seq"],
        ts=str(row["ts"]),
        kind=str(row["kind"]),
        data=data if isinstance(data, dict) else {"corrupt": str(row["data"])[:200]},
        prev_hash=_as_hex(row["prev_hash"]),
        hash=_as_hex(row["hash"]),
    )


def append_event(db: Database, kind: str, data: dict[str, Any]) -> Event:
    """Append one event and return it. ``data`` must be JSON-serialisable."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    data = json.loads(text)  # hash exactly what is stored
    with db.transaction() as conn:
        last = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last["seq"] + 1, bytes(last["hash"])) if last else (1, GENESIS)
        ts = _now()
        digest = _entry_hash(prev, seq, ts, kind, data)
        conn.execute(
            "INSERT INTO events(seq, ts, kind, data, prev_hash, hash) VALUES (?,?,?,?,?,?)",
            (seq, ts, kind, text, prev, digest),
        )
    return Event(seq, ts, kind, data, prev.hex(), digest.hex())


class EventLog:
    """The event log of one database, telling ``on_event`` (the metrics) of each entry.

    Blocking, like the functions it wraps: in the daemon, call `record` inside
    `Store.run`, never on the trio thread.
    """

    def __init__(self, db: Database, on_event: Callable[[Event], None] | None = None) -> None:
        self.db = db
        self._on_event = on_event

    def record(self, kind: str, data: dict[str, Any]) -> Event:
        """Append an event; ``data`` must be JSON-serialisable."""
        event = append_event(self.db, kind, data)
        if self._on_event:
            self._on_event(event)
        return event


def list_events(
    db: Database, after: int = 0, limit: int = 100, kind: str | None = None
) -> list[Event]:
    """Events with ``seq > after``, oldest first, at most ``min(limit, MAX_LIST)``.

    ``kind`` is a kind (``task.served``) or a family, the part before the dot
    (``task``: ``task.served`` and ``task.run``)."""
    limit = max(0, min(limit, MAX_LIST))
    if kind:
        # A family is matched as a prefix; LIKE's wildcards in it are escaped, so
        # that ``key_x`` does not match ``keyAx.y``.
        family = "".join("\\" + c if c in "\\_%" else c for c in kind) + ".%"
        rows = db.conn.execute(
            "SELECT * FROM events WHERE seq > ? AND (kind = ? OR kind LIKE ? ESCAPE '\\')"
            " ORDER BY seq LIMIT ?",
            (after, kind, family, limit),
        )
    else:
        rows = db.conn.execute(
            "SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        )
    return [_row_to_event(r) for r in rows]


def event_head(db: Database) -> tuple[int, str | None]:
    """(number of the last entry, its hash in hex) or (0, None) for an empty log."""
    row = db.conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    return (row["seq"], _as_hex(row["hash"])) if row else (0, None)


def _check_row(row: Any, expected_seq: int, prev: bytes) -> str | None:
    """Why this row breaks the chain, or None if it holds."""
    if row["seq"] != expected_seq:
        return f"entry {expected_seq} is missing (next entry found is {row['seq']})"
    if not isinstance(row["prev_hash"], bytes) or row["prev_hash"] != prev:
        return "its prev_hash does not match the hash of the entry before it"
    if not isinstance(row["hash"], bytes) or len(row["hash"]) != 32:
        return "its hash is not a 32-byte digest"
    if not isinstance(row["ts"], str) or not isinstance(row["kind"], str):
        return "its timestamp or kind is not text"
    try:
        data = json.loads(row["data"])
    except (ValueError, TypeError):
        return "its data is not valid JSON"
    if _entry_hash(prev, row["seq"], row["ts"], row["kind"], data) != row["hash"]:
        return "its content does not match its hash (the entry was altered)"
    return None


def verify_events(db: Database) -> VerifyReport:
    """Walk the whole chain; report the first entry that does not hold."""
    prev, expected, checked = GENESIS, 1, 0
    for row in db.conn.execute("SELECT * FROM events ORDER BY seq"):
        reason = _check_row(row, expected, prev)
        if reason:
            return VerifyReport(False, checked, prev.hex(), first_bad=expected, reason=reason)
        prev, expected, checked = row["hash"], expected + 1, checked + 1
    return VerifyReport(True, checked, prev.hex() if checked else None)
