"""``mercato builds``: the content-addressed builds stored on this node."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mercato.node import ControlClient

from ._common import data_dir_option, print_json, resolve
from ._format import short_id, size, table
from ._ids import build_id
from ._progress import Bar

POLL_S = 0.2  # how often a fetch's progress is asked for
FETCH_HINT = "a build not stored here is fetched by its whole id: bld- and 64 hex digits"


@click.group()
def builds() -> None:
    """Content-addressed builds stored on this node.

    Every command that takes a build id takes the start of one stored here, as
    `builds ls` prints it.

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

    BUILD is a prefix that the other `builds` commands take back; `--json` has
    the whole ids.

    \b
    Example:
      mercato builds ls
      mercato builds ls --json
    """
    found = ControlClient(resolve(data_dir)).builds()
    if as_json:
        print_json(found)
        return
    rows = [
        (
            short_id(b["cid"]),
            size(b["size"]),
            "complete" if b["complete"] else f"{b['have']}/{b['chunks']} chunks",
            "yes" if b["pinned"] else "no",
        )
        for b in found["builds"]
    ]
    if rows:
        table(("BUILD", "SIZE", "STATE", "PINNED"), rows)
    else:
        click.echo("no builds stored")
    click.echo(f"using {size(found['used_bytes'])} of {size(found['quota_bytes'])}")


@builds.command("add")
@data_dir_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--no-pin", is_flag=True, help="Let gc remove it later.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (id, size, chunks, pinned).")
def add(data_dir: Path | None, file: Path, no_pin: bool, as_json: bool) -> None:
    """Store FILE as a build and print its (whole) id.

    \b
    Example:
      mercato builds add runtime/examples/wordcount/wordcount.wasm
      mercato builds add agent.wasm --no-pin --json
    """
    info = ControlClient(resolve(data_dir), timeout=600).build_add(
        str(file.resolve()), pin=not no_pin
    )
    if as_json:
        print_json(info)
    else:
        click.echo(info["cid"])


@builds.command("fetch")
@data_dir_option
@click.argument("cid", metavar="ID")
@click.option("--from", "peers", multiple=True, metavar="MULTIADDR", help="Fetch from this peer.")
@click.option("--pin", is_flag=True, help="Pin it once fetched.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the fetch and the build).")
def fetch(
    data_dir: Path | None, cid: str, peers: tuple[str, ...], pin: bool, as_json: bool
) -> None:
    """Fetch a build from peers, verifying every chunk.

    Without --from, every connected peer that holds it is asked. An
    interrupted fetch resumes where it stopped. On a terminal a progress bar
    shows the bytes received. ID is a whole build id; a prefix only names a
    build already (partly) stored here.

    \b
    Example:
      mercato builds fetch bld-4f1c... --from /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...
    """
    client = ControlClient(resolve(data_dir))
    cid = build_id(client, cid, hint=FETCH_HINT)
    client.build_fetch(cid, list(peers) or None, pin)
    answer = _follow(client, cid)
    state = answer["fetch"] or {}
    if state.get("error"):
        raise click.ClickException(state["error"])
    built = answer.get("build") or {}
    if not built.get("complete"):
        raise click.ClickException(f"{cid} is not complete here; run the fetch again")
    if as_json:
        print_json(answer)
        return
    peers_used = state.get("providers", 0)
    if not peers_used:  # it was here already: the fetch had nothing to do
        click.echo(f"{cid} is stored here already ({size(built['size'])})")
        return
    click.echo(
        f"fetched {cid}: {size(built['size'])} from {peers_used} "
        f"peer{'' if peers_used == 1 else 's'}{', pinned' if built.get('pinned') else ''}"
    )


def _follow(client: ControlClient, cid: str) -> dict[str, Any]:
    """Poll the fetch of ``cid`` until it finished, moving a bar on a terminal."""
    with Bar(short_id(cid), 1) as bar:
        while True:
            answer = client.build(cid)
            state = answer["fetch"] or {}
            bar.update(state.get("done", 0), state.get("size") or 1)
            if state.get("finished", True):
                return answer
            time.sleep(POLL_S)  # the daemon fetches; this only asks how far it got


def _action(name: str, help_text: str, example: str, say: Callable[[dict[str, Any]], str]) -> None:
    @builds.command(name, help=f"{help_text}\n\n\b\nExample:\n  {example}")
    @data_dir_option
    @click.argument("cid", metavar="ID")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def command(data_dir: Path | None, cid: str, as_json: bool) -> None:
        client = ControlClient(resolve(data_dir))
        done = client.build_action(build_id(client, cid), name)
        if as_json:
            print_json(done)
        else:
            click.echo(say(done))


def _verified(done: dict[str, Any]) -> str:
    bad = done["damaged_chunks"]
    if not bad:
        return f"{done['cid']}: every chunk is intact"
    return (
        f"{done['cid']}: {len(bad)} damaged chunk(s) ({', '.join(map(str, bad))}) "
        "forgotten; they are fetched again later"
    )


_action(
    "pin",
    "Keep a build whatever gc does. ID may be the start of one stored here.",
    "mercato builds pin bld-4f1c9a0b2e7d",
    lambda done: f"pinned {done['cid']}",
)
_action(
    "unpin",
    "Let gc remove a build (unless this node keeps it for the network).",
    "mercato builds unpin bld-4f1c9a0b2e7d",
    lambda done: f"unpinned {done['cid']}",
)
_action(
    "verify",
    "Hash every chunk again; damaged ones are forgotten and fetched again later.",
    "mercato builds verify bld-4f1c9a0b2e7d",
    _verified,
)


@builds.command("gc")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the ids removed).")
def gc(data_dir: Path | None, as_json: bool) -> None:
    """Remove the builds this node has no reason to keep.

    It keeps builds that are pinned, being fetched, run by a task in the last
    ten minutes, or released builds this node keeps for the network (it is
    among the `[builds] replicas` peers closest to them). Everything else
    stored here is removed.

    \b
    Example:
      mercato builds gc
      mercato builds gc --json
    """
    removed = ControlClient(resolve(data_dir)).builds_gc()["removed"]
    if as_json:
        print_json({"removed": removed})
        return
    click.echo(f"removed {len(removed)} build{'' if len(removed) == 1 else 's'}")
    for cid in removed:
        click.echo(f"  {cid}")
