"""Publisher feeds: one pycrdt document per publisher, changed only by signed updates.

A feed's document holds two maps: ``listings`` (name -> listing) and
``releases`` (name@version -> release), each value the canonical CBOR of the
validated entry, so an entry changes as a whole and keeps exact types.

A write is a `SignedUpdate` ``{publisher, deps, state, update, sig}``: a Yrs v1
update, ``deps`` and ``state``, the feed's state vectors just before and just
after it, signed together by the publisher's account key (kind
``registry-update``). ``state`` lets anti-entropy tell which updates a peer
lacks by comparing state vectors, without decoding updates. Anyone can relay it;
whoever receives it can check it.

A feed has exactly one Yrs client, whose id is derived from the publisher's
key (`writer_client_id`), so a publisher's writes form one sequence wherever
they are made. (Writing from a second device that has not synced the feed
first produces an update that replicas refuse, rather than a fork.)

Updates are applied in causal order: one whose ``deps`` the replica's feed does
not cover yet waits (bounded, neither stored nor relayed) until the updates
before it arrive. Yrs (pycrdt
0.14) cannot be trusted with gaps: applying u2, u3, u1 of one writer lost u1
and u3 for good. `Registry.apply` takes an update through four gates, and
nothing is stored or applied unless all pass:

1. size: at most MAX_UPDATE_BYTES;
2. signature: the publisher's key signed exactly these bytes;
3. shape: the update decodes; applied on the shadow, the feed's state becomes
   exactly the signed ``state`` (nothing left pending, nothing claimed that is
   not there, and not a no-op), it holds only the writer's client, and it
   touches no root but ``listings`` and ``releases``;
4. content: every entry it adds or changes passes the schema, under the right
   key.

Gate 4 judges each entry alone. A rule across entries ("a release needs its
listing", "only a model's release may name no build") would depend on the
order updates arrive in, and replicas that received them in different orders
would disagree forever. `FeedWriter` keeps such rules when writing; readers
(the index) skip a release whose listing they do not have yet, and whoever
runs a release checks that it has a build.

Gate 3 and 4 run on a *shadow* copy of the feed's document; only an update
that passes is applied to the real one (a CRDT cannot take an update back).

A *snapshot* is a signed update with empty ``deps``: the whole feed up to its
``state`` (`FeedWriter.snapshot`). It applies on any earlier state of the
feed, and a replica whose feed it matches keeps it in place of every update it
covers (compaction), so a feed's journal stays short however often it changes.
Snapshots may be larger (MAX_SNAPSHOT_BYTES) and travel by anti-entropy.

Applying is idempotent and commutative: replicas that receive the same signed
updates, in any order and with duplicates, hold identical feeds.

A publisher that signs two updates on the same state (two devices, a key
restored from a backup that writes before it has synced) forks its feed: Yrs
gives both the same ids, so replicas can hold different content under equal
state vectors. `content_hash` tells them apart (anti-entropy compares it),
an update written on a state the feed has moved past is an `Equivocation`,
and `better` is the one deterministic choice between two histories: the one
further along its writer's sequence, then the lower content hash.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc, Map

from mercato.p2p import (
    FrameError,
    Keypair,
    b58decode,
    b58encode,
    canonical_cbor,
    decode_canonical,
    verify_signature,
)

from ._errors import Equivocation, ReleaseExists, SchemaError, UpdateRejected
from ._schema import Listing, Release, validate_listing, validate_release

MAX_UPDATE_BYTES = 256 * 1024
MAX_SNAPSHOT_BYTES = 4 * 1024 * 1024
SIGN_KIND = "registry-update"
ROOTS = ("listings", "releases")


MAX_PENDING_PER_FEED = 256
MAX_PENDING_TOTAL = 4096
MAX_CLIENTS = 256


EMPTY_STATE = b"\x00"  # the state vector of an empty document


def writer_client_id(publisher: bytes) -> int:
    """The one Yrs client id a publisher's feed is written with (53 bits, as Yrs wants)."""
    return (
        int.from_bytes(hashlib.sha256(b"mercato/feed-client/" + publisher).digest()[:8], "big")
        >> 11
    )


def decode_state_vector(data: bytes) -> dict[int, int]:
    """A Yrs state vector (count, then client/clock varint pairs) as {client: clock}."""
    out: dict[int, int] = {}
    pos = 0

    def varint() -> int:
        nonlocal pos
        value, shift = 0, 0
        while True:
            if pos >= len(data) or shift > 63:
                raise ValueError("truncated or oversized varint")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    if not data:
        return out
    count = varint()
    if count > MAX_CLIENTS:
        raise ValueError("too many clients")
    for _ in range(count):
        client = varint()
        out[client] = varint()
    if pos != len(data):
        raise ValueError("trailing bytes")
    return out


def covers(have: dict[int, int], need: dict[int, int]) -> bool:
    return all(have.get(client, 0) >= clock for client, clock in need.items())


@dataclass(frozen=True)
class SignedUpdate:
    publisher: bytes
    deps: bytes
    state: bytes
    update: bytes
    sig: bytes

    @functools.cached_property
    def address(self) -> str:
        return b58encode(self.publisher)

    @property
    def is_snapshot(self) -> bool:
        """No deps: the whole feed up to ``state``; it applies on any earlier state."""
        try:
            return not self.deps_clocks
        except ValueError:
            return False

    @functools.cached_property
    def clock(self) -> int:
        """How far into the writer's sequence the feed is after this update."""
        try:
            return max(self.state_clocks.values(), default=0)
        except ValueError:
            return 0

    def verified(self) -> bool:
        """Whether the publisher's signature holds for exactly these fields."""
        return verify_signature(self.publisher, SIGN_KIND, self.body(), self.sig)

    def body(self) -> dict[str, bytes]:
        return {
            "publisher": self.publisher,
            "deps": self.deps,
            "state": self.state,
            "update": self.update,
        }

    def encode(self) -> bytes:
        return self._encoded

    @functools.cached_property
    def _encoded(self) -> bytes:
        return canonical_cbor({**self.body(), "sig": self.sig})

    @functools.cached_property
    def deps_clocks(self) -> dict[int, int]:
        """``deps`` decoded; ValueError if malformed."""
        return decode_state_vector(self.deps)

    @functools.cached_property
    def state_clocks(self) -> dict[int, int]:
        """``state`` decoded; ValueError if malformed."""
        return decode_state_vector(self.state)

    @classmethod
    def decode(cls, data: bytes) -> SignedUpdate:
        """Strictly decode; UpdateRejected if the bytes are not a signed update."""
        if len(data) > MAX_SNAPSHOT_BYTES + 512:
            raise UpdateRejected(f"signed update of {len(data)} bytes is over the bound")
        try:
            obj = decode_canonical(data)
        except FrameError as exc:
            raise UpdateRejected(f"not a signed update: {exc}") from exc
        if not isinstance(obj, dict) or set(obj) != {"publisher", "deps", "state", "update", "sig"}:
            raise UpdateRejected("not a signed update: wrong fields")
        if not all(isinstance(v, bytes) for v in obj.values()) or len(obj["publisher"]) != 32:
            raise UpdateRejected("not a signed update: fields of the wrong type")
        signed = cls(**obj)
        signed.__dict__["_encoded"] = data  # canonical, so exactly what encode() gives
        return signed


def _new_doc(client_id: int | None = None) -> Doc:
    doc: Doc[Map[Any]] = Doc(client_id=client_id)
    for root in ROOTS:
        doc[root] = Map()
    return doc


class Feed:
    """One publisher's document, with the shadow that vets updates."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.client_id = writer_client_id(b58decode(address))
        self.doc = _new_doc(self.client_id)
        self.clocks: dict[int, int] = {}
        """The feed's state vector, decoded; kept in step with ``doc``."""
        self._changes: list[tuple[str, str, str, Any, Any]] = []
        self._shadow = self._watched(_new_doc())
        self._content_hash: bytes | None = None

    def _watched(self, shadow: Doc) -> Doc:
        """Record every change of the shadow's maps into ``_changes`` (subscribed once:
        pycrdt inspects the callback on every subscription)."""

        def recorder(root: str) -> Any:
            # One parameter only: pycrdt passes the transaction to two-parameter callbacks.
            def record(event: Any) -> None:
                for key, change in event.keys.items():
                    self._changes.append(
                        (
                            root,
                            key,
                            change["action"],
                            change.get("newValue"),
                            change.get("oldValue"),
                        )
                    )

            return record

        self._subscriptions = [(shadow[root], root) for root in ROOTS]
        for shared, root in self._subscriptions:
            shared.observe(recorder(root))
        return shadow

    def listings(self) -> dict[str, Listing]:
        return {
            k: validate_listing(decode_canonical(bytes(v))) for k, v in self.doc["listings"].items()
        }

    def releases(self) -> dict[str, Release]:
        return {
            k: validate_release(decode_canonical(bytes(v))) for k, v in self.doc["releases"].items()
        }

    def listing_names(self) -> list[str]:
        return list(self.doc["listings"].keys())

    def listing(self, name: str) -> Listing | None:
        value = self.doc["listings"].get(name)
        return validate_listing(decode_canonical(bytes(value))) if value is not None else None

    def releases_of(self, name: str) -> list[Release]:
        prefix = f"{name}@"
        return [
            validate_release(decode_canonical(bytes(v)))
            for k, v in self.doc["releases"].items()
            if k.startswith(prefix)
        ]

    def state(self) -> bytes:
        """The state vector: what this replica has of the feed."""
        return self.doc.get_state()

    def update_since(self, state: bytes = b"") -> bytes:
        """Everything this replica has that a replica at ``state`` lacks."""
        return self.doc.get_update(state) if state else self.doc.get_update()

    def _vet(self, update: bytes, claimed: bytes) -> list[tuple[str, str, str, Any, Any]]:
        """Apply to the shadow and check its shape (gate 3); return its changes."""
        self._changes = []
        before = self._shadow.get_state()
        try:
            self._shadow.apply_update(update)
        except ValueError as exc:
            self._reset_shadow()
            raise UpdateRejected(f"the update does not decode: {exc}") from exc
        after = self._shadow.get_state()
        problem = None
        if after != claimed:
            problem = "the feed's state after it is not the state it was signed with"
        elif after == before:
            problem = "it changes nothing"
        elif set(decode_state_vector(after)) != {self.client_id}:
            problem = "it was written by a client other than the feed's writer"
        elif set(self._shadow.keys()) - set(ROOTS):
            problem = f"it writes outside {', '.join(ROOTS)}"
        if problem:
            self._reset_shadow()
            raise UpdateRejected(problem)
        return self._changes

    def _reset_shadow(self) -> None:
        shadow = _new_doc()
        shadow.apply_update(self.doc.get_update())
        self._shadow = self._watched(shadow)

    def _check(self, changes: list[tuple[str, str, str, Any, Any]]) -> None:
        for root, key, action, value, old in changes:
            if root == "releases" and action != "add" and old is not None and value != old:
                # A release is bound once: its publisher signed another binding.
                raise Equivocation(
                    f"it {'unbinds' if action == 'delete' else 'rebinds'} release "
                    f"{key[:80]!r}, which is bound already: releases never change"
                )
            if action == "delete":
                continue
            where = f"{root[:-1]} {key[:80]!r}"
            if not isinstance(value, bytes | bytearray):
                raise UpdateRejected(f"{where}: entries are canonical CBOR bytes")
            try:
                entry = decode_canonical(bytes(value))
                if root == "listings":
                    listing = validate_listing(entry)
                    if listing.name != key:
                        raise SchemaError("name", f"{listing.name!r} stored under {key!r}")
                else:
                    release = validate_release(entry)
                    if release.key != key:
                        raise SchemaError("version", f"{release.key!r} stored under {key!r}")
            except (FrameError, SchemaError) as exc:
                raise UpdateRejected(f"{where}: {exc}") from exc

    @property
    def clock(self) -> int:
        """How far into its writer's sequence the feed is."""
        return self.clocks.get(self.client_id, 0)

    def content_hash(self) -> bytes:
        """SHA-256 of every entry (cached until the feed changes): equal state
        vectors with different content hashes are a fork."""
        if self._content_hash is None:
            self._content_hash = hashlib.sha256(canonical_cbor(self.content())).digest()
        return self._content_hash

    def changed(self) -> None:
        """The document changed: forget what was computed from it."""
        self._content_hash = None

    def content(self, doc: Doc | None = None) -> dict[str, dict[str, bytes]]:
        """Every entry of the feed (or of ``doc``), as stored."""
        doc = self.doc if doc is None else doc
        return {root: {k: bytes(v) for k, v in doc[root].items()} for root in ROOTS}

    def check_snapshot(self, update: bytes, claimed: bytes, doc: Doc | None = None) -> None:
        """Vet a snapshot on its own, as a whole feed: every gate, on a fresh document.

        Then its entries must be exactly those of the feed (or of ``doc``): two
        updates with the same ids but different content mean the publisher signed
        two histories, and Yrs would keep whichever it saw first, silently.
        UpdateRejected if it fails a gate, Equivocation if it contradicts the feed.
        """
        probe = Feed(self.address)
        probe.apply(update, claimed)
        if probe.content() != self.content(doc):
            raise Equivocation(
                "it contradicts updates this feed already has: its publisher signed "
                "two different histories"
            )

    def apply(self, update: bytes, claimed: bytes, snapshot: bool = False) -> list[str]:
        """Vet then apply ``update``; return the changed entries ("listings/x", ...)."""
        changes = self._vet(update, claimed)
        try:
            self._check(changes)
            if snapshot and self.clocks:  # on an empty feed, the gates above are all
                self.check_snapshot(update, claimed, self._shadow)
        except UpdateRejected:
            self._reset_shadow()
            raise
        self.doc.apply_update(update)
        self.changed()
        self.clocks = decode_state_vector(claimed)  # == the doc's state, checked in _vet
        return sorted({f"{root}/{key}" for root, key, *_ in changes})


class Registry:
    """Every feed this replica holds, and the updates waiting for their predecessors."""

    def __init__(self) -> None:
        self.feeds: dict[str, Feed] = {}
        self._pending: dict[str, dict[bytes, tuple[dict[int, int], SignedUpdate]]] = {}

    def feed(self, address: str) -> Feed:
        if address not in self.feeds:
            self.feeds[address] = Feed(address)
        return self.feeds[address]

    def pending(self, address: str | None = None) -> int:
        """How many verified updates wait for earlier ones (of one feed, or in all)."""
        if address is not None:
            return len(self._pending.get(address, {}))
        return sum(len(q) for q in self._pending.values())

    def apply(
        self, signed: SignedUpdate, verified: bool = False
    ) -> list[tuple[SignedUpdate, list[str]]] | None:
        """Apply a signed update (see the module docstring); UpdateRejected says why not.

        ``verified``: its signature was checked just now (`SignedUpdate.verified`).

        Returns None if the update must wait for earlier ones (it is kept in
        memory, bounded, and neither stored nor relayed meanwhile); otherwise
        every update now applied (this one, then any waiting ones it released),
        each with the entries it changed. A duplicate returns [].
        """
        bound = MAX_SNAPSHOT_BYTES if signed.is_snapshot else MAX_UPDATE_BYTES
        if len(signed.update) > bound:
            raise UpdateRejected(f"update of {len(signed.update)} bytes is over {bound}")
        if not verified and not signed.verified():
            raise UpdateRejected(f"signature of {signed.address} does not verify")
        try:
            deps, after = signed.deps_clocks, signed.state_clocks
        except ValueError as exc:
            raise UpdateRejected(f"malformed state vectors: {exc}") from exc
        if not covers(after, deps) or after == deps:
            raise UpdateRejected("its state after does not extend its state before")
        address = signed.address
        have = self._state(address)
        if covers(have, after):
            return []  # a duplicate, or older than what we have
        if have != deps and deps:  # a snapshot (no deps) applies on any earlier state
            if covers(have, deps):
                # Signed (checked above) on a state this feed moved past another way.
                raise Equivocation(
                    "it was written on a state this feed has already moved past: its "
                    "publisher signed two different histories"
                )
            self._wait(address, deps, signed)
            return None
        applied = [(signed, self._apply_now(address, signed))]
        return applied + self._release_waiting(address)

    def forget_pending(self, address: str) -> None:
        """Drop the updates of ``address`` waiting for earlier ones (its feed was
        replaced by another history)."""
        self._pending.pop(address, None)

    def _state(self, address: str) -> dict[int, int]:
        feed = self.feeds.get(address)
        return feed.clocks if feed else {}

    def _apply_now(self, address: str, signed: SignedUpdate) -> list[str]:
        known = address in self.feeds
        try:
            return self.feed(address).apply(signed.update, signed.state, signed.is_snapshot)
        except UpdateRejected:
            if not known:
                del self.feeds[address]  # leave no trace of a rejected newcomer
            raise

    def _wait(self, address: str, deps: dict[int, int], signed: SignedUpdate) -> None:
        queue = self._pending.setdefault(address, {})
        if len(queue) >= MAX_PENDING_PER_FEED:
            queue.pop(next(iter(queue)))  # anti-entropy will bring it again
        if self.pending() >= MAX_PENDING_TOTAL:
            biggest = max(self._pending, key=lambda a: len(self._pending[a]))
            self._pending[biggest].pop(next(iter(self._pending[biggest])))
        queue[signed.sig] = (deps, signed)

    def _release_waiting(self, address: str) -> list[tuple[SignedUpdate, list[str]]]:
        released: list[tuple[SignedUpdate, list[str]]] = []
        queue = self._pending.get(address, {})
        progress = True
        while queue and progress:
            progress = False
            have = self._state(address)
            for key, (deps, signed) in list(queue.items()):
                if deps == have:
                    del queue[key]
                    progress = True
                    # Verified but invalid content is dropped, as it would be on first sight.
                    with contextlib.suppress(UpdateRejected):
                        released.append((signed, self._apply_now(address, signed)))
                    break
        if not queue:
            self._pending.pop(address, None)
        return released


class FeedWriter:
    """Writes a publisher's own feed; every write returns the signed update to spread."""

    def __init__(self, keypair: Keypair, registry: Registry) -> None:
        self._keypair = keypair
        self._feed = registry.feed(keypair.address)

    @property
    def feed(self) -> Feed:
        return self._feed

    def put_listing(self, listing: Listing) -> SignedUpdate:
        validate_listing(listing.to_wire())
        return self._write(lambda doc: doc["listings"].__setitem__(listing.name, _entry(listing)))

    def put_release(self, release: Release) -> SignedUpdate:
        """ReleaseExists if ``name@version`` is bound already (to anything)."""
        validate_release(release.to_wire())
        listing = self._feed.listing(release.name)
        if listing is None:
            raise SchemaError("name", f"publish the listing {release.name!r} before releasing it")
        if not release.has_build and listing.kind != "model":
            raise SchemaError(
                "cid",
                f"an agent's release names its build: {release.name!r} is an agent, so give "
                "its build (mercato release --build FILE, or --cid and --size); only a "
                "model's release may have none",
            )
        bound = self._feed.doc["releases"].get(release.key)
        if bound is not None:
            current = validate_release(decode_canonical(bytes(bound)))
            raise ReleaseExists(release.key, current.cid, same=current == release)
        return self._write(lambda doc: doc["releases"].__setitem__(release.key, _entry(release)))

    def deprecate(self, name: str) -> SignedUpdate:
        listing = self._feed.listings().get(name)
        if listing is None:
            raise SchemaError("name", f"no listing {name!r} to deprecate")
        marked = validate_listing({**listing.to_wire(), "deprecated": True})
        return self.put_listing(marked)

    def snapshot(self) -> SignedUpdate:
        """The whole feed as one signed update with no deps: replicas keep it in place
        of every update it covers (compaction)."""
        doc = self._feed.doc
        body = {
            "publisher": self._keypair.public_key,
            "deps": EMPTY_STATE,
            "state": doc.get_state(),
            "update": doc.get_update(),
        }
        return SignedUpdate(**body, sig=self._keypair.sign(SIGN_KIND, body))

    def _write(self, change: Callable[[Doc], None]) -> SignedUpdate:
        doc = self._feed.doc
        before = doc.get_state()
        change(doc)
        update = doc.get_update(before)
        self._feed.changed()
        self._feed._reset_shadow()
        after = doc.get_state()
        self._feed.clocks = decode_state_vector(after)
        body = {
            "publisher": self._keypair.public_key,
            "deps": before,
            "state": after,
            "update": update,
        }
        return SignedUpdate(**body, sig=self._keypair.sign(SIGN_KIND, body))


def better(a: Feed, b: Feed) -> bool:
    """Whether history ``a`` wins over ``b``, the same publisher's feed as another
    replica holds it: further along the writer's sequence, then the lower content
    hash. Every replica that sees both makes the same choice."""
    return (a.clock, b.content_hash()) > (b.clock, a.content_hash())


def _entry(value: Listing | Release) -> bytes:
    return canonical_cbor(value.to_wire())
