"""Small trio helpers shared by this package's services."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@contextmanager
def single_error() -> Iterator[None]:
    """Re-raise a nursery's lone exception as itself rather than inside an ExceptionGroup.

    Async context managers built on a nursery wrap every error in a group; their
    callers expect the typed error (P2PError, Cancelled) they would have got
    from a plain call. Groups of several errors pass through unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        inner: BaseException = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if inner is group:
            raise
        raise inner from group


@dataclass
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; `take` spends one if there is one."""

    tokens: float
    stamp: float = field(default_factory=time.monotonic)

    def take(self, rate: float, burst: float) -> bool:
        if self.available(rate, burst) < 1:
            return False
        self.tokens -= 1
        return True

    def available(self, rate: float, burst: float) -> float:
        """Refill for the time passed; return the balance (negative while in debt)."""
        now = time.monotonic()
        self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        return self.tokens


def prune_buckets(buckets: dict, idle_s: float = 60.0, keep: int = 4096) -> None:
    """Forget buckets idle for ``idle_s`` once there are more than ``keep`` (bounds memory)."""
    if len(buckets) <= keep:
        return
    cutoff = time.monotonic() - idle_s
    for key in [k for k, b in buckets.items() if b.stamp < cutoff]:
        del buckets[key]
