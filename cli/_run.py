from __future__ import annotations

import base64
import datetime
import json
import sys
from pathlib import Path

import click

from mercato.node import ControlClient

from ._common import data_dir_option, print_json, read_input, resolve


@click.command("run")
@data_dir_option
@click.argument("ref", metavar="PUBLISHER/NAME[@VERSION]")
@click.option("--input", "input_file", metavar="FILE|-", help="The task input: a file, or -.")
@click.option("--provider", metavar="PEER", help="Run it on this peer (id or multiaddr).")
@click.option(
    "--output",
    "output_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the output here instead of printing it.",
)
@click.option(
    "--max-price",
    type=click.IntRange(min=0),
    metavar="LAMPORTS",
    help="Pay at most this per task (default: the listing's price).",
)
@click.option("--receipt", "show_receipt", is_flag=True, help="Print the signed receipt too.")
@click.option("--json", "as_json", is_flag=True, help="Print output and receipt as JSON.")
def run(
    data_dir: Path | None,
    ref: str,
    input_file: str | None,
    provider: str | None,
    output_file: Path | None,
    max_price: int | None,
    show_receipt: bool,
    as_json: bool,
) -> None:
    """Run an agent on a provider, from this node; print its output.

    This node asks the best providers for quotes, runs the task on the best
    quote (by price, reputation, latency and load), and checks the signed
    receipt (signature, input, output, price, build) before printing anything;
    some tasks are cross-checked on a second provider or locally. A provider
    that fails is replaced by the next. A paid agent is paid through a payment
    channel to the provider, opened on the first payment.

    \b
    Example:
      echo "count these words" | mercato run 8Co4.../wordcount --input -
      mercato run 8Co4.../wordcount@^1.0 --input notes.txt --provider 12D3KooW... --receipt
    """
    agent, _, version = ref.partition("@")
    if agent.count("/") != 1 or not all(agent.split("/")):
        raise click.BadParameter(f"{ref!r}: expected PUBLISHER/NAME[@VERSION]")
    stdin = read_input(input_file)
    client = ControlClient(resolve(data_dir), timeout=600)
    done = client.run_task(agent, version or "*", stdin, provider, max_price)
    output = base64.b64decode(done["output"])
    if as_json:
        print_json({**done, "output": output.decode(errors="replace")})
        return
    if output_file is not None:
        output_file.write_bytes(output)
    else:
        sys.stdout.buffer.write(output)
        sys.stdout.flush()
    if show_receipt:
        shown = {**done["receipt"], "verified": done["verified"]}
        click.echo(json.dumps(shown, indent=2), err=True)
    if done["receipt"]["outcome"] != "ok":
        click.echo(f"the run ended as {done['receipt']['outcome']}", err=True)
        sys.exit(1)


@click.command("providers")
@data_dir_option
@click.argument("agent", metavar="PUBLISHER/NAME")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def providers(data_dir: Path | None, agent: str, as_json: bool) -> None:
    """List the providers whose agent card says they run AGENT, best first.

    Each line shows the price and load from the provider's card, and this
    node's own experience of it: reputation score (0.5 for a stranger), tasks
    that went well, failed, or were caught wrong, and the mean round trip.

    \b
    Example:
      mercato providers 8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB/wordcount
    """
    found = ControlClient(resolve(data_dir)).providers(agent)
    if as_json:
        print_json(found)
        return
    if not found["providers"]:
        click.echo(f"no provider has announced {agent}")
    for p in found["providers"]:
        r = p["reputation"]
        latency = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.1f} ms"
        click.echo(
            f"{p['provider']}  price {p['price']}  load {p['load']:g}  "
            f"reputation {r['score']:.2f} (ok {r['ok']}, failed {r['failed'] + r['refused']}, "
            f"wrong {r['wrong'] + r['bad_receipt']})  latency {latency}"
        )


@click.group("tasks")
def tasks() -> None:
    """Tasks this node ran for others (provider) or asked others to run (user).

    \b
    Example:
      mercato tasks ls
      mercato tasks show 5f0c9a...
    """


@tasks.command("ls")
@data_dir_option
@click.option("--role", type=click.Choice(["user", "provider"]), help="Only one side.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tasks_ls(data_dir: Path | None, role: str | None, limit: int, as_json: bool) -> None:
    """List recent tasks, newest first: id, side, agent, provider, outcome.

    \b
    Example:
      mercato tasks ls --role user --limit 5
    """
    found = ControlClient(resolve(data_dir)).tasks(limit, role)
    if as_json:
        print_json(found)
        return
    if not found["tasks"]:
        click.echo("no tasks yet")
    for t in found["tasks"]:
        when = datetime.datetime.fromtimestamp(t["created"]).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(
            f"{t['id']}  {when}  {t['role']:<8}  {t['agent']}@{t['version']}  "
            f"{(t['provider'] or '-')[:20]}…  {t['status']}"
            + (f"  ({t['verified']})" if t["verified"] else "")
        )


@tasks.command("show")
@data_dir_option
@click.argument("task_id", metavar="ID")
def tasks_show(data_dir: Path | None, task_id: str) -> None:
    """Show one task: each side this node saw, its receipt and its failed attempts.

    \b
    Example:
      mercato tasks show 5f0c9a3e1b7d4c2a9e8f6d5c4b3a2910
    """
    print_json(ControlClient(resolve(data_dir)).task(task_id))
