"""The data dir lock: one daemon per data dir.

An advisory ``flock`` on ``daemon.lock``. The kernel releases it when the
process dies, so a crashed daemon never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from types import TracebackType

from ._errors import DataDirLocked
from ._paths import DataDir


class DataDirLock:
    """Exclusive lock on a data dir, held for the life of a daemon.

    Use as a context manager; raises `DataDirLocked` at once (never waits) if
    another process holds it.
    """

    def __init__(self, datadir: DataDir) -> None:
        self._datadir = datadir
        self._fd: int | None = None

    def acquire(self) -> None:
        path = self._datadir.lock_file
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLocked(
                f"another mercato process (pid {holder}) is already using data dir "
                f"{self._datadir.root}; if it is a daemon, stop it with `mercato node stop "
                f"--data-dir {self._datadir.root}`, or use another --data-dir"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def lock_holder(datadir: DataDir) -> int | None:
    """The pid of the process holding the data dir lock, or None if nobody holds it.

    Tests the lock itself, never trusting the pid file alone: a crashed daemon
    leaves its pid behind, and that pid may belong to another process by now.
    """
    if not datadir.lock_file.exists():
        return None
    try:
        with DataDirLock(datadir):
            return None
    except DataDirLocked:
        pass
    text = datadir.lock_file.read_text().strip()
    return int(text) if text.isdigit() else None
