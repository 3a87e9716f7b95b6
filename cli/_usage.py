"""``mercato usage``: what this node spent and earned, per model or agent (and provider)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mercato.node import ControlClient

from ._common import data_dir_option, print_json, resolve
from ._format import short_id, table

HEADERS = ("ROLE", "MODEL/AGENT", "CALLS", "IN TOKENS", "OUT TOKENS", "LAMPORTS")
BY_PROVIDER = ("ROLE", "MODEL/AGENT", "PROVIDER", "CALLS", "IN TOKENS", "OUT TOKENS", "LAMPORTS")


def _cells(role: str, what: str, counts: dict[str, Any], *provider: str) -> tuple[str, ...]:
    numbers = ("calls", "input_tokens", "output_tokens", "lamports")
    return (role, what, *provider, *(str(counts[key]) for key in numbers))


def _provider(row: dict[str, Any]) -> str:
    """The provider's short id; ``this node`` on the provider side; ``none`` when
    no provider ran the task."""
    if row["role"] == "provider":
        return "this node"
    return short_id(row["provider"]) if row["provider"] else "none"


@click.command("usage")
@data_dir_option
@click.option(
    "--days",
    type=click.IntRange(1, 3660),
    default=30,
    show_default=True,
    help="Count the calls of the last N days.",
)
@click.option(
    "--by",
    type=click.Choice(["agent", "provider"]),
    default="agent",
    show_default=True,
    help="One row per model or agent, or per model or agent and provider.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def usage(data_dir: Path | None, days: int, by: str, as_json: bool) -> None:
    """Show what this node spent as a user and earned as a provider, per model or agent.

    One row per side and listing, from the node's task log: the calls (model
    calls and agent tasks), the tokens they read and wrote (models only), and
    the lamports paid (ROLE user) or earned (ROLE provider); then the totals
    of each side. With --by provider, a user's spend per listing and provider
    (PROVIDER: the first characters of its peer id).

    \b
    Example:
      mercato usage
      mercato usage --days 7 --by provider
      mercato usage --days 365 --json
    """
    client = ControlClient(resolve(data_dir))
    found = client.usage(days) if by == "agent" else client.usage(days, by)
    if as_json:
        print_json(found)
        return
    if not found["usage"]:
        click.echo(f"no calls in the last {days} days")
        return
    per = by == "provider"
    rows = [
        _cells(r["role"], r["agent"], r, *([_provider(r)] if per else [])) for r in found["usage"]
    ]
    totals, blank = found["totals"], [""] if per else []
    rows.append(_cells("user", "total spent", totals["user"], *blank))
    rows.append(_cells("provider", "total earned", totals["provider"], *blank))
    table(BY_PROVIDER if per else HEADERS, rows)
