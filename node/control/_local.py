"""The operations of the control surface, run on the local data dir.

`LocalControl` implements them over a `Database` and a `KeyStore`. The daemon's
control API runs its methods in worker threads (through `Store.run`); offline CLI
commands, when no daemon runs, call them directly while holding the data dir
lock. `ControlClient` (node/_client.py) mirrors the same methods over HTTP, so
the CLI need not care which one it has: see `open_control`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from .._errors import DaemonNotRunning, DataDirLocked
from .._events import Event, EventLog, list_events, verify_events
from .._keys import KeyStore
from .._lock import DataDirLock
from .._paths import DataDir
from .._schema import node_database
from .._store import Database


class Control(Protocol):
    """What both `LocalControl` and `ControlClient` offer. Results are JSON-ready dicts."""

    def keys_list(self) -> list[dict[str, Any]]: ...
    def keys_new(self, name: str) -> dict[str, Any]: ...
    def keys_show(self, name: str) -> dict[str, Any]: ...
    def events(
        self, after: int = 0, limit: int = 100, kind: str | None = None
    ) -> dict[str, Any]: ...
    def events_verify(self) -> dict[str, Any]: ...


class LocalControl:
    """Control operations on a data dir. Blocking: call from a worker thread under trio."""

    def __init__(
        self,
        datadir: DataDir,
        db: Database,
        keys: KeyStore,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.datadir = datadir
        self.db = db
        self.keys = keys
        self.log = EventLog(db, on_event)

    def record(self, kind: str, data: dict[str, Any]) -> Event:
        """Append an event to the log (and tell the metrics)."""
        return self.log.record(kind, data)

    def keys_list(self) -> list[dict[str, Any]]:
        return [k.to_dict() for k in self.keys.list_keys()]

    def keys_new(self, name: str) -> dict[str, Any]:
        info = self.keys.create_account(name)
        self.record("key.created", {"name": name, "kind": "account", "address": info.address})
        return info.to_dict()

    def keys_show(self, name: str) -> dict[str, Any]:
        return self.keys.info(name).to_dict()

    def events(self, after: int = 0, limit: int = 100, kind: str | None = None) -> dict[str, Any]:
        found = list_events(self.db, after, limit, kind)
        return {
            "events": [e.to_dict() for e in found],
            "next": found[-1].seq if found else after,
        }

    def events_verify(self) -> dict[str, Any]:
        return verify_events(self.db).to_dict()


@contextmanager
def open_control(datadir: DataDir) -> Iterator[Control]:
    """The running daemon's API client if one answers, else a `LocalControl`.

    The local one holds the data dir lock for the duration of the block, so no
    daemon can start in the middle. Raises DataDirError if the dir is not a
    usable data dir, DataDirLocked if a daemon holds it but does not answer.
    """
    from ._client import ControlClient

    client = ControlClient(datadir)
    try:
        client.check()
    except DaemonNotRunning:
        pass
    else:
        yield client
        return
    datadir.check_format()
    lock = DataDirLock(datadir)
    try:
        lock.acquire()
    except DataDirLocked as exc:
        raise DataDirLocked(
            f"a daemon holds data dir {datadir.root} but its control API does not answer; "
            "if it is starting, try again in a moment"
        ) from exc
    db = node_database(datadir.db_file)
    try:
        yield LocalControl(datadir, db, KeyStore(datadir))
    finally:
        db.close()
        lock.release()
