"""Short ids and names, expanded to the whole id the way git expands a commit prefix.

Text output cuts long ids (`cli/_format.py` `short_id`, `short_ref`); every
command takes such a prefix back, and a listing by its bare name when only one
listing has it. A prefix that matches nothing, or more than one thing, is a
usage error (exit 2) that lists the candidates, so the user can type more.
The whole id is passed through untouched, so scripts never pay for a look-up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import click

from mercato.node import ControlClient

from ._format import short_id

_BUILD_HEX = re.compile(r"[0-9a-f]{4,64}")
_BUILD_PREFIX = re.compile(r"bld-[0-9a-f]{0,64}")
MIN_PREFIX = 4  # shorter prefixes match too much to be worth a look-up
SHOWN = 5  # candidates listed when a prefix is ambiguous


def expand(text: str, candidates: Iterable[str], what: str, *, hint: str | None = None) -> str:
    """The one candidate ``text`` is, or starts; a usage error naming the others."""
    pool = sorted(set(candidates))
    if text in pool:
        return text
    found = [c for c in pool if c.startswith(text)] if len(text) >= MIN_PREFIX else []
    if len(found) == 1:
        return found[0]
    if not found:
        where = f" ({hint})" if hint else ""
        if len(text) < MIN_PREFIX:
            raise click.BadParameter(
                f"{text!r} is too short: give at least {MIN_PREFIX} characters of the {what}"
            )
        raise click.BadParameter(f"no {what} starts with {text!r}{where}")
    listed = ", ".join(short_id(c, len(text) + 4) for c in found[:SHOWN])
    more = f" and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    raise click.BadParameter(f"{text!r} is ambiguous: {listed}{more}; give more characters")


def task_id(client: ControlClient, text: str) -> str:
    """A task id from its prefix, among this node's tasks."""
    if len(text) == 32:
        return text
    ids = [t["id"] for t in client.tasks(10_000)["tasks"]]
    return expand(text, ids, "task id", hint="see `mercato tasks ls`")


def channel_id(client: ControlClient, text: str) -> str:
    """A channel (its stake account) from its prefix, among this node's channels."""
    if len(text) >= 32:
        return text
    ids = [c["stake"] for c in client.channels()["channels"]]
    return expand(text, ids, "channel", hint="see `mercato channel ls`")


def build_id(client: ControlClient, text: str, *, hint: str = "see `mercato builds ls`") -> str:
    """A build id (``bld-…``) from its prefix, among the builds stored here.

    The prefix may leave out ``bld-`` (``4f1c9a``). Text that cannot start a
    build id is a usage error saying what one looks like.
    """
    if len(text) == 68:
        return text
    if _BUILD_HEX.fullmatch(text):
        text = f"bld-{text}"
    if not _BUILD_PREFIX.fullmatch(text):
        raise click.BadParameter(f"{text!r} is not a build id: bld- and 64 hex digits ({hint})")
    if len(text) < len("bld-") + MIN_PREFIX:
        raise click.BadParameter(
            f"{text!r} is too short: give at least {MIN_PREFIX} hex digits of the build id"
        )
    ids = [b["cid"] for b in client.builds()["builds"]]
    return expand(text, ids, "build id", hint=hint)


def licence_mint(client: ControlClient, text: str) -> str:
    """A licence's mint from its prefix, among the licences this node bought."""
    if len(text) >= 32:
        return text
    mints = [x["mint"] for x in client.licences()["licences"]]
    return expand(text, mints, "licence mint", hint="see `mercato licences`")


def peer_id(client: ControlClient, text: str) -> str:
    """A peer id from its prefix, among the connected peers; a multiaddr is kept as is."""
    if text.startswith("/") or len(text) >= 46:
        return text
    ids = [p["peer_id"] for p in client.peers()["peers"]]
    return expand(text, ids, "connected peer", hint="see `mercato peers`")


def listing_ref(client: ControlClient, text: str) -> str:
    """``PUBLISHER/NAME`` from ``NAME`` alone, or with a publisher prefix.

    A bare name resolves when exactly one listing in this node's registry has
    it; ``GxSc/wordcount`` when one publisher starting ``GxSc`` has a listing
    ``wordcount``. A whole ``PUBLISHER/NAME`` is returned unchanged.
    """
    publisher, sep, name = text.partition("/")
    if sep and len(publisher) >= 32:
        return text
    if not sep:
        publisher, name = "", text
    if not name or "/" in name:
        raise click.BadParameter(f"{text!r}: expected NAME or PUBLISHER/NAME")
    refs = _refs_named(client, name)
    if not publisher:
        if len(refs) == 1:
            return refs[0]
        if not refs:
            raise click.BadParameter(
                f"no listing is named {name!r} in this node's registry (see `mercato search`)"
            )
        listed = ", ".join(f"{r.split('/')[0][:8]}/{name}" for r in refs[:SHOWN])
        raise click.BadParameter(
            f"{len(refs)} listings are named {name!r}: {listed}; give PUBLISHER/NAME"
        )
    publishers = [r.split("/")[0] for r in refs]
    return f"{expand(publisher, publishers, f'publisher of a listing {name!r}')}/{name}"


def _refs_named(client: ControlClient, name: str) -> list[str]:
    """Every listing called ``name`` that this node's registry holds."""
    found: set[str] = set()
    cursor = None
    for _ in range(20):  # at most 2,000 matches: a name is not that common
        page = client.search(text=name, limit=100, cursor=cursor)
        found |= {f"{r['publisher']}/{r['name']}" for r in page["results"] if r["name"] == name}
        cursor = page.get("cursor")
        if not cursor:
            break
    return sorted(found)
