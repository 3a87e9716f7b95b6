"""The daemon's recent log lines, for the node page and its live tail.

`LogTail` is a logging handler that keeps the last RING_SIZE records of the
"mercato" logger as text lines (the daemon's text format), each numbered, so a
reader can ask for what came after the last line it has. It is attached once,
on first use: a node that nobody looks at keeps no copy of its log.
"""

from __future__ import annotations

import collections
import logging
import threading

from .._logs import TextFormatter

RING_SIZE = 500
MAX_LINE_CHARS = 4000  # a record with a huge field costs the ring no more than this
LOGGER = "mercato"


class LogTail(logging.Handler):
    """A thread-safe ring of the last ``size`` formatted records, numbered from 1."""

    def __init__(self, size: int = RING_SIZE) -> None:
        super().__init__()
        self.setFormatter(TextFormatter())
        self._lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=size)
        self._seq = 0
        self._guard = threading.Lock()  # records come from any thread (the store's, workers')

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)[:MAX_LINE_CHARS]
        except Exception:
            self.handleError(record)
            return
        with self._guard:
            self._seq += 1
            self._lines.append((self._seq, line))

    @property
    def last(self) -> int:
        """The number of the newest line (0 before any)."""
        with self._guard:
            return self._seq

    def since(self, after: int) -> tuple[list[str], int]:
        """The lines numbered after ``after`` still in the ring, oldest first, and the
        number to ask after next time."""
        with self._guard:
            return [line for seq, line in self._lines if seq > after], self._seq

    def tail(self, count: int) -> tuple[list[str], int]:
        """The last ``count`` lines, oldest first, and the number of the newest."""
        with self._guard:
            lines = [line for _, line in self._lines]
            return lines[-count:] if count > 0 else [], self._seq


_tail: LogTail | None = None
_attach = threading.Lock()


def log_tail() -> LogTail:
    """The process's tail of the "mercato" log, attached on the first call (and again
    if a new logging setup removed it)."""
    global _tail
    with _attach:
        if _tail is None:
            _tail = LogTail()
        logger = logging.getLogger(LOGGER)
        if _tail not in logger.handlers:
            logger.addHandler(_tail)
        return _tail
