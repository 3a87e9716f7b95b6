"""Progress on a terminal, and silence on a pipe.

Every wait of the CLI that may last more than a second shows that it is alive
when stderr is a terminal: a spinner with what it waits for (`waiting`), or a
bar when the amount is known (`bar`). On a pipe or in a file nothing is drawn,
so scripts see only the command's output. Both write to stderr only.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

import click

SPINNER = "|/-\\"
DELAY_S = 1.0  # a wait shorter than this shows nothing
TICK_S = 0.1


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether progress should be drawn: stderr (or ``stream``) is a terminal."""
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def waiting(label: str) -> Iterator[None]:
    """Show ``label`` with a spinner and the seconds elapsed while the block runs.

    Draws only on a terminal, and only once the wait passed one second; the
    line is erased when the block ends, whether it returned or raised.
    """
    if not on_terminal():
        yield
        return
    done = threading.Event()
    thread = threading.Thread(target=_spin, args=(label, done), daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _spin(label: str, done: threading.Event) -> None:
    if done.wait(DELAY_S):
        return
    drawn = 0
    for i in itertools.count():
        elapsed = DELAY_S + i * TICK_S
        text = f"{SPINNER[i % len(SPINNER)]} {label} ({elapsed:.0f} s)"
        click.echo("\r" + text.ljust(drawn), nl=False, err=True)
        drawn = len(text)
        if done.wait(TICK_S):
            break
    click.echo("\r" + " " * drawn + "\r", nl=False, err=True)


class Bar:
    """A progress bar over a known amount, drawn on a terminal only.

    ``update(done, total)`` moves it to an absolute position; ``total`` may grow
    (or become known) while it runs.
    """

    def __init__(self, label: str, total: int = 1, *, unit: str = "") -> None:
        self.label = label
        self.unit = unit
        self._bar = (
            click.progressbar(length=max(total, 1), label=label, file=sys.stderr)
            if on_terminal()
            else None
        )
        self._pos = 0

    def __enter__(self) -> Bar:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def update(self, done: int, total: int | None = None, info: str = "") -> None:
        """Move to ``done`` of ``total``; ``info`` follows the label (e.g. copies held)."""
        if self._bar is None:
            return
        self._bar.label = f"{self.label} ({info})" if info else self.label
        if total is not None:
            self._bar.length = max(total, 1)
        self._bar.update(max(done - self._pos, 0))
        self._pos = max(done, self._pos)


bar = Bar
