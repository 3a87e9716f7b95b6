"""How values read on a page: lamports as SOL, times, durations. Jinja filters."""

from __future__ import annotations

import datetime
from typing import Any

LAMPORTS_PER_SOL = 10**9


def sol(lamports: Any) -> str:
    """``1500000`` -> ``0.0015 SOL``: exact, no float rounding, trailing zeros dropped."""
    if not isinstance(lamports, int):
        return "-"
    sign = "-" if lamports < 0 else ""
    whole, frac = divmod(abs(lamports), LAMPORTS_PER_SOL)
    text = f"{whole}.{frac:09d}".rstrip("0").rstrip(".")
    return f"{sign}{text} SOL"


def when(ts: Any) -> str:
    """Unix seconds as a UTC date and time."""
    if not isinstance(ts, int | float) or ts <= 0:
        return "-"
    moment = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: Any) -> str:
    """``3725`` -> ``1 h 2 min``; negative (passed) -> ``passed``."""
    if not isinstance(seconds, int | float):
        return "-"
    if seconds <= 0:
        return "passed"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min"]
    text = " ".join(p for p in parts if p)
    return text if days or hours or minutes else f"{s} s"


def ms(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def size(n: Any) -> str:
    if not isinstance(n, int):
        return "-"
    if n < 1024:
        return f"{n} B"
    value, unit = float(n), "B"
    for bigger in ("KB", "MB", "GB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def thousands(n: Any) -> str:
    """``1200000`` -> ``1,200,000``."""
    return f"{n:,}" if isinstance(n, int) else "-"


VERIFIED = {
    "receipt": "the provider's signed receipt checks out",
    "cross-checked": "a second provider gave the same output",
    "local": "this node ran it too and got the same output",
    "unverified": "no second opinion could settle it: not verified",
    "": "nothing ran",
}


def verified(how: Any) -> str:
    """How a task's answer was checked, for a person."""
    return VERIFIED.get(how, str(how)) if isinstance(how, str) else "-"


FILTERS = {
    "sol": sol,
    "when": when,
    "duration": duration,
    "ms": ms,
    "size": size,
    "thousands": thousands,
    "verified": verified,
}
