"""``publish``, ``deprecate``, ``search``, ``show`` and ``resolve``: the registry of listings.

A listing is named ``PUBLISHER/NAME``; ``show`` and ``resolve`` also take the
``PREFIX/NAME`` that ``search`` prints, or ``NAME`` alone when it is unique
(`cli/_ids.py`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import click

from mercato.node import ControlClient, VersionError, VersionRange, read_toml

from ._common import data_dir_option, print_json, resolve
from ._format import lamports, short_ref, size, sol, table
from ._ids import listing_ref
from ._ids import peer_id as expand_peer

ACCOUNT_HELP = "Account key that signs (see `mercato keys list`)."
SUMMARY_CHARS = 60  # of a listing's summary in a search result row
MAX_MANIFEST_BYTES = 256 * 1024  # a manifest is a few kB; its description at most 20,000 characters
PEER_HELP = (
    "Ask this peer (multiaddr, or the id of a connected peer or its start) instead of this node."
)
REF_HELP = (
    "NAME alone when one listing in this node's registry has it, PREFIX/NAME as "
    "`mercato search` prints it, or the whole PUBLISHER/NAME."
)


def _peer_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter("give a multiaddr or a peer id, not nothing")
    return value


def _parse_value(text: str) -> Any:
    """A --set value as TOML would read it (5, true, ["a", "b"]), else as plain text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _apply_set(manifest: dict[str, Any], assignment: str) -> None:
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"{assignment!r}: expected FIELD=VALUE", param_hint="--set")
    *parents, leaf = key.strip().split(".")
    target = manifest
    for part in parents:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise click.BadParameter(f"{key!r}: {part!r} is not a table", param_hint="--set")
    target[leaf] = _parse_value(value.strip())


def _print_listing(shown: dict[str, Any]) -> None:
    click.echo(f"{shown['publisher']}/{shown['name']}  ({shown['kind']})")
    click.echo(f"  {shown['title']}: {shown['summary']}")
    royalty = f"royalty {shown['royalty_bps'] / 100:g}%"
    if model := shown.get("model"):
        _print_model(model)
        click.echo(f"  {royalty}")
    else:
        click.echo(f"  price {lamports(shown['price'])}, {royalty}")
    if shown.get("tags"):
        click.echo(f"  tags: {', '.join(shown['tags'])}")
    if shown.get("capabilities"):
        click.echo(f"  capabilities: {', '.join(shown['capabilities'])}")
    if shown.get("deprecated"):
        click.echo("  DEPRECATED")
    for release in shown.get("releases", []):
        click.echo(f"  {release['version']:<12} {_build_text(release)}")
    if shown.get("plans"):
        _print_plans(shown)


def _print_model(model: dict[str, Any]) -> None:
    """A model listing's facts and its prices per 1,000 tokens."""
    click.echo(
        f"  model {model['family']}, {model['parameters']:,} parameters, "
        f"{model['quantisation']}, context {model['context_length']:,} tokens"
    )
    if model.get("weights"):
        click.echo(f"  weights {model['weights']}")
    click.echo(
        f"  price per 1,000 tokens: input {model['input_price']} lamports, "
        f"output {model['output_price']} lamports"
    )


def _build_text(release: dict[str, Any]) -> str:
    """A release's build as a line shows it; a model's release may have none."""
    if not release.get("cid"):
        return "(no build)"
    return f"{release['cid']}  {size(release['size'])}"


def _print_plans(shown: dict[str, Any]) -> None:
    """The listing's plans, and how to buy one."""
    ref = f"{shown['publisher']}/{shown['name']}"
    click.echo("  plans (runs need a licence or subscription of one):")
    rows = []
    for name, p in sorted(shown["plans"].items()):
        period = f"{p['period_days']} d" if p.get("period_days") else "-"
        refunds = f"{p['refund_days']} d" if p.get("refund_days") else "none"
        rows.append(
            (
                f"    {name}", p["kind"], sol(p["price"]), p["versions"], period,
                lamports(p["run_price"]), refunds, "yes" if p.get("transferable") else "no",
            )
        )  # fmt: skip
    headers = (
        "    PLAN",
        "KIND",
        "PRICE",
        "VERSIONS",
        "PERIOD",
        "RUN PRICE",
        "REFUNDS",
        "TRANSFERABLE",
    )
    table(headers, rows)
    click.echo(f"  buy one with: mercato buy {ref} --plan NAME")


@click.command()
@data_dir_option
@click.argument(
    "manifest_file", metavar="MANIFEST.toml", type=click.Path(dir_okay=False, path_type=Path)
)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Override a field (repeatable), e.g. --set price=2000.",
)
@click.option("--account", default="default", show_default=True, help=ACCOUNT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def publish(
    data_dir: Path | None,
    manifest_file: Path,
    assignments: tuple[str, ...],
    account: str,
    as_json: bool,
) -> None:
    """Create or update a listing from MANIFEST.toml, signed by your account key.

    The listing spreads to every peer. An invalid manifest is refused with the
    field that is wrong and why.

    \b
    Example:
      mercato publish MANIFEST.toml
      mercato publish MANIFEST.toml --set price=2000 --set 'tags=["text"]'
    """
    try:
        manifest = read_toml(manifest_file, limit=MAX_MANIFEST_BYTES)
    except FileNotFoundError as exc:
        raise click.BadParameter(
            f"{manifest_file} does not exist", param_hint="MANIFEST.toml"
        ) from exc
    for assignment in assignments:
        _apply_set(manifest, assignment)
    shown = ControlClient(resolve(data_dir)).publish(manifest, account)
    if as_json:
        print_json(shown)
    else:
        click.echo(f"published {shown['publisher']}/{shown['name']}")


@click.command()
@data_dir_option
@click.argument("name")
@click.option("--account", default="default", show_default=True, help=ACCOUNT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the listing, deprecated).")
def deprecate(data_dir: Path | None, name: str, account: str, as_json: bool) -> None:
    """Mark your listing NAME deprecated: it leaves search results everywhere.

    \b
    Example:
      mercato deprecate wordcount
      mercato deprecate wordcount --json
    """
    shown = ControlClient(resolve(data_dir)).deprecate(name, account)
    if as_json:
        print_json(shown)
    else:
        click.echo(f"deprecated {shown['publisher']}/{name}")


@click.command()
@data_dir_option
@click.argument("text", required=False, default="")
@click.option("--kind", type=click.Choice(["agent", "model"]), help="Only agents or only models.")
@click.option("--capability", help="Only listings with this capability.")
@click.option("--tag", help="Only listings with this tag.")
@click.option("--max-price", type=click.IntRange(min=0), help="At most this price, in lamports.")
@click.option(
    "--sort",
    type=click.Choice(["relevance", "price", "newest"]),
    default="relevance",
    show_default=True,
)
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--cursor", help="Continue from a previous page's cursor.")
@click.option("--peer", metavar="MULTIADDR", help=PEER_HELP, callback=_peer_option)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def search(
    data_dir: Path | None,
    text: str,
    kind: str | None,
    capability: str | None,
    tag: str | None,
    max_price: int | None,
    sort: str,
    limit: int,
    cursor: str | None,
    peer: str | None,
    as_json: bool,
) -> None:
    """Search the marketplace from this node's registry replica, or another peer's.

    With --peer the results are that peer's word (checked for shape only); use
    `mercato show --peer` to see a listing proven by its publisher's signatures.

    \b
    Example:
      mercato search "word count"
      mercato search --kind agent --capability text.stats --max-price 5000 --sort price
      mercato search translate --peer /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...
    """
    client = ControlClient(resolve(data_dir))
    page = client.search(
        text=text,
        kind=kind,
        capability=capability,
        tag=tag,
        max_price=max_price,
        sort=sort,
        limit=limit,
        cursor=cursor,
        peer=expand_peer(client, peer) if peer else None,
    )
    if as_json:
        print_json(page)
        return
    if not page["results"]:
        click.echo("no listings match")
    else:
        table(("LISTING", "VERSION", "PRICE", "SUMMARY"), [_result_row(r) for r in page["results"]])
    if any(item.get("plans") for item in page["results"]):
        click.echo("* sold by plan: runs need a licence or subscription (see `mercato show`)")
    if any(item.get("model") for item in page["results"]):
        click.echo("+ a model: lamports per 1,000 input/output tokens")
    if page.get("cursor"):
        click.echo(f"more: --cursor {page['cursor']}")


def _result_row(item: dict[str, Any]) -> tuple[str, ...]:
    """A search result as a row: its ref cut to a prefix that `show` and `run` take back."""
    if model := item.get("model"):
        price = f"{model['input_price']:,}/{model['output_price']:,} lamports+"
    else:
        price = lamports(item["price"]) + ("*" if item.get("plans") else "")
    ref = short_ref(f"{item['publisher']}/{item['name']}")
    summary = item["summary"]
    if len(summary) > SUMMARY_CHARS:
        summary = summary[: SUMMARY_CHARS - 1].rstrip() + "…"
    return (ref, item.get("version") or "-", price, summary)


@click.command()
@data_dir_option
@click.argument("ref", metavar="[PUBLISHER/]NAME")
@click.option("--peer", metavar="MULTIADDR", help=PEER_HELP, callback=_peer_option)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(data_dir: Path | None, ref: str, peer: str | None, as_json: bool) -> None:
    """Show one listing and its releases.

    The listing is NAME alone when one listing in this node's registry has
    it, PREFIX/NAME as `mercato search` prints it, or the whole
    PUBLISHER/NAME. With --peer, the peer sends the publisher's signed feed
    and this node verifies every signature before showing it.

    \b
    Example:
      mercato show wordcount
      mercato show 8Co4tt4s/wordcount
      mercato show 8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB/wordcount
    """
    client = ControlClient(resolve(data_dir))
    publisher, name = _ref(listing_ref(client, ref))
    shown = client.show(publisher, name, expand_peer(client, peer) if peer else None)
    if as_json:
        print_json(shown)
    else:
        _print_listing(shown)


@click.command("resolve")
@data_dir_option
@click.argument("ref", metavar="[PUBLISHER/]NAME")
@click.argument("range_text", metavar="[RANGE]", default="*")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def resolve_command(data_dir: Path | None, ref: str, range_text: str, as_json: bool) -> None:
    """List the releases of a listing within RANGE, and resolve their dependencies.

    Prints every release in RANGE, newest first, then one release per listing
    that together satisfy every dependency range (newest wins where there is a
    choice). If none fits, it says which listing and which ranges conflict, and
    exits with status 1. The listing is named as `mercato show` takes it.

    \b
    Example:
      mercato resolve 8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB/summarize '^1.2'
      mercato resolve summarize '^1.2'
    """
    client = ControlClient(resolve(data_dir))
    try:
        VersionRange.parse(range_text)
    except VersionError as exc:
        raise click.BadParameter(str(exc), param_hint="RANGE") from exc
    ref = "/".join(_ref(listing_ref(client, ref)))
    resolution = client.resolve(ref, range_text)
    if as_json:
        print_json(resolution)
        return
    if resolution.get("licence_required"):
        click.echo(f"note: {resolution['licence_required']}", err=True)
    if resolution.get("licence"):
        click.echo(f"under the licence {resolution['licence']}:")
    click.echo(f"{ref} {range_text}: {', '.join(resolution['candidates'])}")
    if upgrade := resolution.get("upgrade"):
        plans = ", ".join(f"{p['name']} ({lamports(p['price'])})" for p in upgrade["plans"])
        click.echo(f"upgrade available: {upgrade['version']} with {plans}", err=True)
    for dep, chosen in resolution["plan"].items():
        click.echo(f"  {dep}@{chosen['version']}  {_build_text(chosen)}")


def _ref(ref: str) -> tuple[str, str]:
    publisher, sep, name = ref.partition("/")
    if not sep or not publisher or not name or "/" in name:
        raise click.BadParameter(f"{ref!r}: expected PUBLISHER/NAME", param_hint="PUBLISHER/NAME")
    return publisher, name
