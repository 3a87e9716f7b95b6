from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mercato.node import open_control

from ._common import data_dir_option, print_json, resolve

PAGE = 1000


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
@click.option("--kind", default=None, help="Only entries of this kind, e.g. key.created.")
def events(
    data_dir: Path | None,
    verify: bool,
    as_json: bool,
    after: int,
    limit: int | None,
    kind: str | None,
) -> None:
    """Show the node's append-only, hash-chained event log.

    Works with or without a running daemon.

    \b
    Example:
      mercato events --limit 20
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
            while remaining > 0:
                page = control.events(after, min(PAGE, remaining), kind)
                for event in page["events"]:
                    _print_event(event, as_json)
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


def _print_event(event: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(event, sort_keys=True))
        return
    data = json.dumps(event["data"], sort_keys=True)
    click.echo(f"{event['seq']:>6}  {event['ts']}  {event['kind']:<18} {data}")
