from __future__ import annotations

import time
from pathlib import Path

import click

from mercato.node import ControlClient

from ._common import data_dir_option, print_json, resolve


@click.group()
def builds() -> None:
    """Content-addressed builds stored on this node.

    \b
    Example:
      mercato builds add agent.wasm
      mercato builds fetch bld-4f1c... --from /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...
    """


@builds.command("ls")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(data_dir: Path | None, as_json: bool) -> None:
    """List stored builds: id, size, how much is here, pinned.

    \b
    Example:
      mercato builds ls
    """
    found = ControlClient(resolve(data_dir)).builds()
    if as_json:
        print_json(found)
        return
    for b in found["builds"]:
        state = "complete" if b["complete"] else f"{b['have']}/{b['chunks']} chunks"
        click.echo(f"{b['cid']}  {b['size']:>12} bytes  {state}{'  pinned' if b['pinned'] else ''}")
    click.echo(f"using {found['used_bytes']} of {found['quota_bytes']} bytes")


@builds.command("add")
@data_dir_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--no-pin", is_flag=True, help="Let gc remove it later.")
def add(data_dir: Path | None, file: Path, no_pin: bool) -> None:
    """Store FILE as a build and print its id.

    \b
    Example:
      mercato builds add runtime/examples/wordcount/wordcount.wasm
    """
    info = ControlClient(resolve(data_dir), timeout=600).build_add(
        str(file.resolve()), pin=not no_pin
    )
    click.echo(info["cid"])


@builds.command("fetch")
@data_dir_option
@click.argument("cid")
@click.option("--from", "peers", multiple=True, metavar="MULTIADDR", help="Fetch from this peer.")
@click.option("--pin", is_flag=True, help="Pin it once fetched.")
def fetch(data_dir: Path | None, cid: str, peers: tuple[str, ...], pin: bool) -> None:
    """Fetch a build from peers, verifying every chunk, with a progress bar.

    Without --from, every connected peer that holds it is asked. An
    interrupted fetch resumes where it stopped.

    \b
    Example:
      mercato builds fetch bld-4f1c... --from /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...
    """
    client = ControlClient(resolve(data_dir))
    client.build_fetch(cid, list(peers) or None, pin)
    with click.progressbar(length=1, label=cid[:16], show_pos=False) as bar:
        while True:
            answer = client.build(cid)
            state = answer["fetch"] or {}
            size = state.get("size") or 1
            bar.length = size
            bar.update(state.get("done", 0) - bar.pos)
            if state.get("finished", True):
                break
            time.sleep(0.2)
    if state.get("error"):
        raise click.ClickException(state["error"])
    if not (answer.get("build") or {}).get("complete"):
        raise click.ClickException(f"{cid} is not complete here; run the fetch again")
    click.echo(f"fetched {cid}")


def _action(name: str, help_text: str, example: str):
    @builds.command(name, help=f"{help_text}\n\n\b\nExample:\n  {example}")
    @data_dir_option
    @click.argument("cid")
    def command(data_dir: Path | None, cid: str) -> None:
        print_json(ControlClient(resolve(data_dir)).build_action(cid, name))

    return command


_action("pin", "Keep a build whatever gc does.", "mercato builds pin bld-4f1c...")
_action("unpin", "Let gc remove a build.", "mercato builds unpin bld-4f1c...")
_action(
    "verify",
    "Hash every chunk again; damaged ones are forgotten and fetched again later.",
    "mercato builds verify bld-4f1c...",
)


@builds.command("gc")
@data_dir_option
def gc(data_dir: Path | None) -> None:
    """Remove every build that is not pinned.

    \b
    Example:
      mercato builds gc
    """
    removed = ControlClient(resolve(data_dir)).builds_gc()["removed"]
    click.echo(f"removed {len(removed)} builds")
