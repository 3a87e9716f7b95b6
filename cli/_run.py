from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import click

from node import ControlClient

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
@click.option("--receipt", "show_receipt", is_flag=True, help="Print the signed receipt too.")
@click.option("--json", "as_json", is_flag=True, help="Print output and receipt as JSON.")
def run(
    data_dir: Path | None,
    ref: str,
    input_file: str | None,
    provider: str | None,
    output_file: Path | None,
    show_receipt: bool,
    as_json: bool,
) -> None:
    """Run an agent on a provider, from this node; print its output.

    The provider runs the release in its sandbox and signs a receipt, which this
    node checks (signature, input, output, build) before printing anything.
    Without --provider, connected providers are tried in turn. Free agents only,
    until payment channels arrive.

    \b
    Example:
      echo "count these words" | mercato run 8Co4.../wordcount --input -
      mercato run 8Co4.../wordcount@^1.0 --input notes.txt --provider 12D3KooW... --receipt
    """
    agent, _, version = ref.partition("@")
    if agent.count("/") != 1 or not all(agent.split("/")):
        raise click.BadParameter(f"{ref!r}: expected PUBLISHER/NAME[@VERSION]")
    stdin = read_input(input_file)
    client = ControlClient(resolve(data_dir), timeout=180)
    done = client.run_task(agent, version or "*", stdin, provider)
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
        click.echo(json.dumps(done["receipt"], indent=2), err=True)
    if done["receipt"]["outcome"] != "ok":
        click.echo(f"the run ended as {done['receipt']['outcome']}", err=True)
        sys.exit(1)


@click.command("providers")
@data_dir_option
@click.argument("agent", metavar="PUBLISHER/NAME")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def providers(data_dir: Path | None, agent: str, as_json: bool) -> None:
    """List the providers whose agent card says they run AGENT, best first.

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
        click.echo(f"{p['provider']}  price {p['price']} lamports  load {p['load']:g}")
