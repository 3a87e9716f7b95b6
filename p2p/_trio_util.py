"""Small trio helpers shared by this package's services."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


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
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            raise group.exceptions[0] from group
        raise
