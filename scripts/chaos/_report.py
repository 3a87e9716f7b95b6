"""The figures of a chaos run and its readable report (markdown, in the run dir)."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

from ._invariants import Check

TARGETS = {
    "converge_s": ("<", 30),
    "builds_retrievable_ratio": (">=", 1.0),
    "lost_lamports": ("<=", 0),
    "lost_acked_writes": ("<=", 0),
    "paid_tasks_after_ratio": (">=", 0.99),
}


def machine() -> str:
    cpu = platform.processor()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"
    )


def ratio(records: list[Any], phase: str) -> float | None:
    done = [r for r in records if r.phase == phase]
    return round(sum(r.ok for r in done) / len(done), 3) if done else None


def missed(figures: dict[str, Any]) -> list[str]:
    """The figures that miss their target (a missing figure misses it)."""
    out = []
    for key, (op, target) in TARGETS.items():
        value = figures.get(key)
        ok = value is not None and (
            value < target if op == "<" else value >= target if op == ">=" else value <= target
        )
        if not ok:
            out.append(f"{key} = {value} (target {op} {target})")
    return out


def write(path: Path, figures: dict[str, Any], checks: list[Check], timeline: list[str]) -> None:
    lines = [
        "# Chaos run",
        "",
        f"{figures['nodes']} nodes, nemeses {', '.join(figures['nemeses'])}, "
        f"{figures['duration_s']} s on {figures['machine']}.",
        "",
        f"**{'PASSED' if figures['passed'] else 'FAILED'}**",
        "",
        "## Figures",
        "",
        "| figure | value | target |",
        "|---|---|---|",
    ]
    for key, value in figures.items():
        if key in ("nemeses", "machine", "passed"):
            continue
        op, target = TARGETS.get(key, ("", ""))
        lines.append(f"| `{key}` | {value} | {op} {target} |")
    lines += ["", "## Checks", ""]
    for check in checks:
        lines.append(f"- **{'ok' if check.ok else 'FAILED'}**: {check.name}")
        lines += [f"  - {line}" for line in check.evidence[:30]]
        if len(check.evidence) > 30:
            lines.append(f"  - ... {len(check.evidence) - 30} more")
    lines += ["", "## Timeline", "", "```", *timeline, "```", ""]
    path.write_text("\n".join(lines))
