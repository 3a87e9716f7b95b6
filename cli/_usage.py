"""``mercato usage``: what this node spent and earned, per model or agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mercato.node import ControlClient

from ._commerce import table
from ._common import data_dir_option, print_json, resolve

HEADERS = ("ROLE", "MODEL/AGENT", "CALLS", "IN TOKENS", "OUT TOKENS", "LAMPORTS")


def _cells(role: str, what: str, counts: dict[str, Any]) -> tuple[str, ...]:
    numbers = ("calls", "input_tokens", "output_tokens", "lamports")
    return (role, what, *(str(counts[key]) for key in numbers))


@click.command("usage")
@data_dir_option
@click.option(
    "--days",
    type=click.IntRange(1, 3660),
    default=30,
    show_default=True,
    help="Count the calls of the last N days.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def usage(data_dir: Path | None, days: int, as_json: bool) -> None:
    """Show what this node spent as a user and earned as a provider, per model or agent.

    One row per side and listing, from the node's task log: the calls (model
    calls and agent tasks), the tokens they read and wrote (models only), and
    the lamports paid (ROLE user) or earned (ROLE provider); then the totals
    of each side.

    \b
    Example:
      mercato usage
      mercato usage --days 7
      mercato usage --days 365 --json
    """
    found = ControlClient(resolve(data_dir)).usage(days)
    if as_json:
        print_json(found)
        return
    if not found["usage"]:
        click.echo(f"no calls in the last {days} days")
        return
    rows = [_cells(r["role"], r["agent"], r) for r in found["usage"]]
    totals = found["totals"]
    rows.append(_cells("user", "total spent", totals["user"]))
    rows.append(_cells("provider", "total earned", totals["provider"]))
    table(HEADERS, rows)
