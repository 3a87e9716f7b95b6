"""How the CLI shows things to a person: tables with headers, sizes, amounts, times, ids.

Text output is for people; `--json` is for programs. These helpers keep every
command's text output alike: a header row over aligned columns, sizes in KiB/MiB,
lamports with their SOL value, times as local dates or "in 23 h", and long ids
cut to a prefix that every command accepts back (see `cli/_ids.py`).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence

import click

LAMPORTS_PER_SOL = 1_000_000_000
SHORT_ID = 12  # characters of an id shown in a table: unique in any real listing


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print ``rows`` under ``headers``, each column as wide as its widest cell."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    for row in (headers, *rows):
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        click.echo("  ".join(cells).rstrip())


def short_id(value: str, length: int = SHORT_ID) -> str:
    """The first ``length`` characters of an id (after its ``bld-`` kind prefix, if any).

    Commands accept such a prefix back wherever they take the whole id.
    """
    if value.startswith("bld-"):
        return value[: 4 + length]
    return value[:length]


def short_ref(ref: str, length: int = 8) -> str:
    """``GxScsWMu/wordcount``: a listing with its publisher cut to a prefix."""
    publisher, sep, name = ref.partition("/")
    return f"{publisher[:length]}/{name}" if sep else ref


def size(n: int) -> str:
    """Bytes as a person reads them: ``812 B``, ``47.1 KiB``, ``3.2 MiB``, ``1.5 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def sol(lamports: int) -> str:
    """``50000000`` -> ``0.05 SOL``, exact (no float rounding)."""
    whole, frac = divmod(abs(lamports), LAMPORTS_PER_SOL)
    text = f"{whole}.{frac:09d}".rstrip("0").rstrip(".")
    return f"{'-' if lamports < 0 else ''}{text} SOL"


def lamports(n: int) -> str:
    """``1,000 lamports`` under 0.001 SOL, else ``2,500,000 lamports (0.0025 SOL)``."""
    text = f"{n:,} lamports"
    return text if abs(n) < LAMPORTS_PER_SOL // 1000 else f"{text} ({sol(n)})"


def when(ts: float) -> str:
    """A moment as a local date and time; ``never`` for 0."""
    if not ts:
        return "never"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def moment(ts: float, never: str = "never") -> str:
    """A moment for a person: ``2026-12-07 18:02 (in 23 h)``; ``never`` for 0."""
    if not ts:
        return never
    return f"{when(ts)} ({relative(ts)})"


def relative(ts: float, now: float | None = None) -> str:
    """A moment relative to now: ``in 23 h``, ``in 4 min``, ``2 d ago``, ``now``."""
    delta = ts - (time.time() if now is None else now)
    span = abs(delta)
    if span < 60:
        text = f"{span:.0f} s"
    elif span < 3600:
        text = f"{span // 60:.0f} min"
    elif span < 2 * 86_400:
        text = f"{span // 3600:.0f} h"
    else:
        text = f"{span // 86_400:.0f} d"
    if span < 1:
        return "now"
    return f"in {text}" if delta > 0 else f"{text} ago"
