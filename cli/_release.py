"""`mercato release`: bind a version of a listing to a build.

What can be refused is refused at once: the version and options here, the
listing, the build and a version bound already by the node before it stores or
sends anything. While the build's copies land on other peers, a terminal shows
the bytes sent (`cli/_progress.py`); the node's `releasing` route says how far
the release is, polled while the release request runs in a thread.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import click

from mercato.node import ControlClient, ControlError, Version, VersionError

from ._common import data_dir_option, print_json, resolve
from ._format import short_id, size
from ._progress import Bar, on_terminal, waiting
from ._registry import ACCOUNT_HELP

RELEASE_TIMEOUT_S = 700.0  # the node gives up on copies within 600 s ([builds] copies_wait_s)

POLL_S = 0.25  # how often a terminal's progress asks the node


@click.command()
@data_dir_option
@click.argument("name")
@click.argument("version")
@click.option(
    "--build",
    "build_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The build file: stored here, copied to the peers responsible for it, then bound.",
)
@click.option("--cid", help="Content id of a build stored elsewhere (instead of --build).")
@click.option("--size", type=click.IntRange(min=1), help="Its size in bytes (with --cid).")
@click.option(
    "--depends",
    "depends",
    multiple=True,
    metavar="PUBLISHER/NAME=RANGE",
    help="A dependency (repeatable), e.g. 8Co4.../tokenizer=^2.0.0.",
)
@click.option("--account", default="default", show_default=True, help=ACCOUNT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the release as JSON.")
def release(
    data_dir: Path | None,
    name: str,
    version: str,
    build_file: Path | None,
    cid: str | None,
    size: int | None,
    depends: tuple[str, ...],
    account: str,
    as_json: bool,
) -> None:
    """Bind NAME@VERSION of your listing to a build.

    VERSION is a semantic version, MAJOR.MINOR.PATCH (1.0.0, 2.1.3-rc.1). A bad
    version, a listing of NAME that your account has not published, a build
    that is not a WebAssembly module, or a version released already with
    another build is refused at once, before anything is stored or sent.

    With --build, the file is stored on this node and offered to the peers
    responsible for it; the release is bound once [builds] min_copies of them
    hold a copy, so it stays available when this node is off (on a terminal, a
    bar shows the bytes sent meanwhile). On a lone node, with no peer connected,
    it is bound at once with this node's copy alone; peers make theirs as they
    join. It says how many copies there are.

    A model's release may name no build (give neither --build nor --cid): its
    weights are served by the providers' inference engines. An agent's release
    always names its build.

    \b
    Example:
      mercato release wordcount 1.2.0 --build wordcount.wasm
      mercato release wordcount 1.2.0 --cid bld-4f1c... --size 48213
      mercato release tiny-chat 1.0.0
    """
    if build_file is not None and cid is not None:
        raise click.UsageError("give either --build FILE, or --cid CID and --size N, not both")
    if (cid is None) != (size is None):
        raise click.UsageError("give --cid CID and --size N together")
    if "/" in name:
        raise click.BadParameter(
            f"{name!r}: give the name of your listing alone, e.g. wordcount (you release "
            "your own listings only)",
            param_hint="NAME",
        )
    try:
        Version.parse(version)
    except VersionError:
        raise click.BadParameter(
            f"version {version!r} is not a semantic version: use MAJOR.MINOR.PATCH, "
            f"e.g. {_example(version)}",
            param_hint="VERSION",
        ) from None
    dependencies = {}
    for item in depends:
        ref, sep, rng = item.partition("=")
        if not sep:
            raise click.BadParameter(
                f"{item!r}: expected PUBLISHER/NAME=RANGE", param_hint="--depends"
            )
        dependencies[ref] = rng
    fields: dict[str, object] = {"name": name, "version": version, "dependencies": dependencies}
    if cid is not None:
        fields.update(cid=cid, size=size)
    client = ControlClient(resolve(data_dir), timeout=RELEASE_TIMEOUT_S)
    build = str(build_file.resolve()) if build_file is not None else None
    if build is not None and on_terminal():
        shown = _watched(client, fields, account, build)
    else:
        shown = client.release(fields, account, build)
    outcome = shown["released"]
    if as_json:
        print_json(outcome)
    else:
        click.echo(_said(outcome))


def _example(version: str) -> str:
    """``1.0`` -> ``1.0.0``: the version the person most likely meant."""
    parts = version.lstrip("vV").split(".")
    if 1 <= len(parts) <= 2 and all(p.isdigit() for p in parts):
        return ".".join([str(int(p)) for p in parts] + ["0"] * (3 - len(parts)))
    return "1.0.0"


def _said(outcome: dict[str, Any]) -> str:
    """The line that tells a person what the release did."""
    ref = f"{outcome['publisher']}/{outcome['name']}@{outcome['version']}"
    if not outcome["cid"]:
        return f"released {ref} (no build: a model's weights are served by its providers)"
    build = f"{short_id(outcome['cid'])}, {size(outcome['size'])}"
    copies = outcome["copies"]
    if copies is None:
        return f"released {ref} ({build}, stored elsewhere)"
    others = len(outcome["held_by"])
    where = "this node" + (f" and {others} peer{'s' if others != 1 else ''}" if others else "")
    text = f"released {ref} ({build}) with {copies} cop{'ies' if copies != 1 else 'y'} ({where})"
    return f"{text}: {outcome['note']}" if outcome.get("note") else text


def _watched(
    client: ControlClient, fields: dict[str, Any], account: str, build: str
) -> dict[str, Any]:
    """The release, with its progress on stderr: the request runs in a thread while
    this one asks the node how far it is."""
    answer: dict[str, Any] = {}

    def send() -> None:
        try:
            answer["shown"] = client.release(fields, account, build)
        except BaseException as exc:  # re-raised below, in the command's thread
            answer["error"] = exc

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    name, version = str(fields["name"]), str(fields["version"])
    try:
        with waiting("checking and storing the build"):
            state = _poll(client, thread, name, version, account, until="copying")
        if state is not None and state["wanted"]:
            label = f"copying {short_id(state['cid'])} to {state['wanted']} peer(s)"
            total = state["size"] * state["wanted"]
            with Bar(label, total) as bar:
                while state is not None:
                    held = f"{state['copies']} of {state['wanted']} copies held"
                    bar.update(min(state["sent"], total), total, held)
                    state = _poll(client, thread, name, version, account, until="binding")
                if "shown" in answer:  # bound: every copy needed landed
                    bar.update(total, total)
    except ControlError:
        pass  # a node without the progress route: the release's answer is what counts
    thread.join()
    if "error" in answer:
        raise answer["error"]
    return answer["shown"]


def _poll(
    client: ControlClient,
    thread: threading.Thread,
    name: str,
    version: str,
    account: str,
    until: str,
) -> dict[str, Any] | None:
    """The release's progress once it has reached ``until`` or moved on a step (the
    stages go checking, storing, copying, binding); None once the request ended."""
    order = ["checking", "storing", "copying", "binding"]
    while thread.is_alive():
        thread.join(POLL_S)
        if not thread.is_alive():
            return None
        state: dict[str, Any] = client.releasing(name, version, account)
        if state["stage"] in order and order.index(state["stage"]) >= order.index(until):
            return state
        if until == "binding" and state["stage"] == "copying":
            return state  # bytes moved: draw them
    return None
