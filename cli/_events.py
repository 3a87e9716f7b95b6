"""``mercato events``: the node's event log, whole, by kind or family, or checked."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

import click

from mercato.node import open_control

from ._common import data_dir_option, print_json, resolve

PAGE = 1000
HEADER = f"{'SEQ':>6}  {'TIME':<19}  {'KIND':<20}  DATA"


@click.command()
@data_dir_option
@click.option(
    "--verify",
    is_flag=True,
    help="Check the hash chain; exit 1 and name the first bad entry if it is broken.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (for export).")
@click.option(
    "--after",
    type=click.IntRange(min=0),
    default=0,
    help="Only entries after this sequence number.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="At most this many entries."
)
@click.option(
    "--kind",
    default=None,
    help="Only entries of this kind (task.served), or of this family (task: task.served "
    "and task.run).",
)
def events(
    data_dir: Path | None,
    verify: bool,
    as_json: bool,
    after: int,
    limit: int | None,
    kind: str | None,
) -> None:
    """Show the node's append-only, hash-chained event log.

    Works with or without a running daemon. The text output shows each entry's
    time in the local time zone; --json keeps the stored UTC timestamp. Kinds:
    task.served, task.run, payment.received, payment.sent, channel.opened,
    channel.closed, channel.refunded, registry.*, commerce.*, gateway.*,
    key.created, builds.added, node.started, node.stopped; a family (the part
    before the dot) selects all of its kinds.

    \b
    Example:
      mercato events --limit 20
      mercato events --kind task
      mercato events --json > events.jsonl
      mercato events --verify
    """
    if verify and (after or limit is not None or kind):
        raise click.UsageError(
            "--verify checks the whole log; it takes no --after, --limit or --kind"
        )
    with open_control(resolve(data_dir)) as control:
        if verify:
            report = control.events_verify()
        else:
            remaining = limit if limit is not None else sys.maxsize
            shown = 0
            while remaining > 0:
                page = control.events(after, min(PAGE, remaining), kind)
                for event in page["events"]:
                    if not as_json and not shown:
                        click.echo(HEADER)
                    _print_event(event, as_json)
                    shown += 1
                if not page["events"]:
                    break
                after, remaining = page["next"], remaining - len(page["events"])
            return
    if as_json:
        print_json(report)
    elif report["ok"]:
        head = (report["head"] or "-")[:16]
        click.echo(f"event log OK: {report['checked']} entries verified, head {head}")
    else:
        click.echo(
            f"event log BROKEN at entry {report['first_bad']}: {report['reason']} "
            f"({report['checked']} entries before it verified)"
        )
    if not report["ok"]:
        sys.exit(1)


def _print_event(event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(event, sort_keys=True))
        return
    data = json.dumps(event["data"], sort_keys=True)
    click.echo(f"{event['seq']:>6}  {_local(event['ts']):<19}  {event['kind']:<20}  {data}")


def _local(ts: str) -> str:
    """A stored UTC timestamp (``2026-12-06T18:02:12.345Z``) in local time, to the
    second; as stored if it does not parse (an entry damaged outside mercato)."""
    try:
        moment = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ts
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
