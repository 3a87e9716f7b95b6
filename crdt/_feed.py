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
3. shape: the update decodes; once applied, the feed's state becomes
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

Gates 3 and 4 run on the feed's document itself, which the update is applied
to once. A CRDT cannot take an update back, so one that fails them is undone by
rebuilding the document from the updates it held before (`Feed._history`):
acceptance, the common case, costs one apply; rejection costs a rebuild.

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
from typing import Any, Generic, TypeVar, overload

import cbor2
import nacl.bindings
import nacl.exceptions
from pycrdt import Doc, Map

from mercato.p2p import (
    FrameError,
    Keypair,
    b58decode,
    b58encode,
    canonical_cbor,
    decode_canonical,
    signing_payload,
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
HISTORY_FOLD = 64  # updates a feed keeps for rollback before folding them into one

# What `signing_payload(SIGN_KIND, body)` puts before the body's CBOR.
_SIGN_PREFIX = signing_payload(SIGN_KIND, {})[: -len(canonical_cbor({}))]
_SIG_KEY = canonical_cbor("sig")
# The body's keys in canonical order (shortest first), each encoded.
_BODY_KEYS = tuple(
    (name, canonical_cbor(name)) for name in ("deps", "state", "update", "publisher")
)


def _cbor_bytes(data: bytes) -> bytes:
    """``data`` as a CBOR byte string (minimal length header: canonical)."""
    n = len(data)
    if n < 24:
        head = bytes((0x40 + n,))
    elif n < 0x100:
        head = bytes((0x58, n))
    elif n < 0x10000:
        head = b"\x59" + n.to_bytes(2, "big")
    elif n < 0x100000000:
        head = b"\x5a" + n.to_bytes(4, "big")
    else:
        head = b"\x5b" + n.to_bytes(8, "big")
    return head + data


def _sig_cbor(sig: Any) -> bytes:
    """canonical_cbor(sig), without cbor2's canonical encoder for the usual bytes."""
    return _cbor_bytes(sig) if type(sig) is bytes else canonical_cbor(sig)


@functools.lru_cache(maxsize=16_384)
def _address(publisher: bytes) -> str:
    return b58encode(publisher)  # a bignum loop: worth keeping per publisher


EMPTY_STATE = b"\x00"  # the state vector of an empty document


def writer_client_id(publisher: bytes) -> int:
    """The one Yrs client id a publisher's feed is written with (53 bits, as Yrs wants)."""
    return (
        int.from_bytes(hashlib.sha256(b"mercato/feed-client/" + publisher).digest()[:8], "big")
        >> 11
    )


def decode_state_vector(data: bytes) -> dict[int, int]:
    """A Yrs state vector (count, then client/clock varint pairs) as {client: clock};
    ValueError if it is truncated, has trailing bytes or over MAX_CLIENTS clients."""
    out: dict[int, int] = {}
    if not data:
        return out
    end = len(data)
    pos = 0
    # Varints inline (no helper call per varint): this runs for every update.
    values: list[int] = []
    wanted = 1
    while len(values) < wanted:
        value = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise ValueError("truncated or oversized varint")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        values.append(value)
        if wanted == 1:
            if value > MAX_CLIENTS:
                raise ValueError("too many clients")
            wanted = 1 + 2 * value
    if pos != end:
        raise ValueError("trailing bytes")
    for i in range(1, wanted, 2):
        out[values[i]] = values[i + 1]
    return out


def covers(have: dict[int, int], need: dict[int, int]) -> bool:
    # A loop, not all(generator): this runs twice for every update.
    for client, clock in need.items():  # noqa: SIM110
        if have.get(client, 0) < clock:
            return False
    return True


_T = TypeVar("_T")


class _cached(Generic[_T]):
    """`functools.cached_property` without its lock (Python 3.11 takes one on every
    first access): computed once, then read from the instance's ``__dict__``."""

    def __init__(self, compute: Callable[[Any], _T]) -> None:
        self._compute = compute
        self._name = compute.__name__
        self.__doc__ = compute.__doc__

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _cached[_T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> _T | _cached[_T]:
        if obj is None:
            return self
        value = self._compute(obj)
        obj.__dict__[self._name] = value
        return value


@dataclass(frozen=True)
class SignedUpdate:
    publisher: bytes
    deps: bytes
    state: bytes
    update: bytes
    sig: bytes

    @_cached
    def address(self) -> str:
        return _address(bytes(self.publisher))

    @_cached
    def is_snapshot(self) -> bool:
        """No deps: the whole feed up to ``state``; it applies on any earlier state."""
        try:
            return not self.deps_clocks
        except ValueError:
            return False

    @_cached
    def clock(self) -> int:
        """How far into the writer's sequence the feed is after this update."""
        try:
            return max(self.state_clocks.values(), default=0)
        except ValueError:
            return 0

    def verified(self) -> bool:
        """Whether the publisher's signature holds for exactly these fields (False for
        a malformed key or signature, never an exception)."""
        # As `verify_signature`, on the body's CBOR encoded once for this and `encode`.
        publisher, sig = self.publisher, self.sig
        if type(publisher) is not bytes or len(publisher) != 32:
            return False
        if type(sig) is not bytes or len(sig) != 64:
            return False
        try:
            nacl.bindings.crypto_sign_open(sig + _SIGN_PREFIX + self._body_cbor, publisher)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            return False
        return True

    def body(self) -> dict[str, bytes]:
        return {
            "publisher": self.publisher,
            "deps": self.deps,
            "state": self.state,
            "update": self.update,
        }

    def encode(self) -> bytes:
        return self._encoded

    # Canonical CBOR sorts map keys shortest first, so "sig" leads the encoding and
    # the body's CBOR is the encoding without it: whichever is known gives the other.
    @_cached
    def _encoded(self) -> bytes:
        return b"\xa5" + _SIG_KEY + _sig_cbor(self.sig) + self._body_cbor[1:]

    @_cached
    def _body_cbor(self) -> bytes:
        """canonical_cbor(self.body())."""
        encoded = self.__dict__.get("_encoded")
        if encoded is not None:
            head = b"\xa5" + _SIG_KEY + _sig_cbor(self.sig)
            if encoded.startswith(head):
                return b"\xa4" + encoded[len(head) :]
        body = self.body()
        if all(type(value) is bytes for value in body.values()):
            # What canonical_cbor gives for a map of byte strings, without its sort.
            return b"\xa4" + b"".join(key + _cbor_bytes(body[name]) for name, key in _BODY_KEYS)
        return canonical_cbor(body)

    @_cached
    def deps_clocks(self) -> dict[int, int]:
        """``deps`` decoded; ValueError if malformed."""
        return decode_state_vector(self.deps)

    @_cached
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


_INT_RANGE = range(-(2**64), 2**64)  # what CBOR encodes without a (bignum) tag
_SCALAR_TYPES = frozenset({str, bytes, bool, type(None)})
_KEY_ORDERS: dict[tuple[Any, ...], bool] = {}  # a map's keys -> in canonical order?


def _canonical_order(keys: tuple[Any, ...]) -> bool:
    """Text keys, strictly in canonical order: shortest first, then by bytes."""
    previous: tuple[int, bytes] | None = None
    for key in keys:
        if type(key) is not str:
            return False
        encoded = key.encode()
        order = (len(encoded), encoded)
        if previous is not None and order <= previous:
            return False
        previous = order
    return True


def _plain_canonical(value: Any, depth: int) -> bool:
    """Whether ``value`` holds only plain values `decode_canonical` accepts, no
    floats (whose canonical size cbor2's plain encoder does not pick) and no
    bignums, with every map's keys in canonical order: then its plain CBOR
    encoding is its canonical one."""
    kind = type(value)
    if kind is int:
        return value in _INT_RANGE
    if kind is not dict and kind is not list:
        return kind in _SCALAR_TYPES
    if depth >= 16:  # p2p's MAX_DEPTH: deeper is decode_canonical's to refuse
        return False
    if kind is dict:
        keys = tuple(value)
        ordered = _KEY_ORDERS.get(keys)
        if ordered is None:
            ordered = _canonical_order(keys)
            # Entries share a few key sets; remember small ones only (bounded memory).
            if len(_KEY_ORDERS) < 1024 and len(keys) <= 32 and sum(map(len, keys)) <= 512:
                _KEY_ORDERS[keys] = ordered
        if not ordered:
            return False
        items = value.values()
    else:
        items = value
    for item in items:
        kind = type(item)
        if kind in _SCALAR_TYPES:
            continue
        if kind is int:
            if item not in _INT_RANGE:
                return False
        elif not _plain_canonical(item, depth + 1):
            return False
    return True


def _decode_entry(data: bytes) -> Any:
    """`decode_canonical` of a feed entry, cheaper: FrameError if it is not one.

    A value that decodes to plain, float-free data with canonically ordered keys
    and re-encodes (plainly, in that order) to exactly ``data`` is canonical; that
    skips the key sort of canonical encoding, the larger part of the cost. Anything
    else goes to `decode_canonical`, for its verdict and its message.
    """
    with contextlib.suppress(Exception):  # any doubt: decode_canonical decides, says why
        value = cbor2.loads(data, max_depth=17, allow_indefinite=False)
        if _plain_canonical(value, 0) and cbor2.dumps(value) == data:
            return value
    return decode_canonical(data)


def _where(root: str, key: str) -> str:
    """An entry, as a refusal names it: "listing 'x'"."""
    return f"{root[:-1]} {key[:80]!r}"


def _new_doc(client_id: int | None = None) -> Doc:
    doc: Doc[Map[Any]] = Doc(client_id=client_id)
    for root in ROOTS:
        doc[root] = Map()
    return doc


class Feed:
    """One publisher's document, which vets updates by applying them (gates 3 and 4)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.client_id = writer_client_id(b58decode(address))
        self.clocks: dict[int, int] = {}
        """The feed's state vector, decoded; kept in step with ``doc``."""
        self._changes: list[tuple[str, str, str, Any, Any]] = []
        self._history: list[bytes] = []
        """Updates that rebuild ``doc`` exactly, in order (the first may fold many):
        what a rejected update is rolled back with."""
        self._content_hash: bytes | None = None
        self.doc = self._watched(_new_doc(self.client_id))

    def _watched(self, doc: Doc) -> Doc:
        """Record every change of the doc's maps into ``_changes`` (subscribed once per
        document: pycrdt inspects the callback on every subscription)."""

        def recorder(root: str) -> Callable[[Any], None]:
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

        # On the maps' integrated types: pycrdt's own `observe` wraps every event in
        # Python objects first, which costs more than the apply. Entries are bytes,
        # which need no wrapping. The subscriptions must be kept, or they end.
        self._subscriptions = [doc[root].integrated.observe(recorder(root)) for root in ROOTS]
        return doc

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

    def _rollback(self) -> None:
        """Rebuild ``doc`` from ``_history``: exactly the document before the update
        being vetted (Yrs cannot take an update back)."""
        doc = _new_doc(self.client_id)
        with doc.transaction():
            for update in self._history:
                doc.apply_update(update)
        self._changes = []
        self.doc = self._watched(doc)

    def _remember(self, update: bytes) -> None:
        """``update`` is now part of ``doc``: keep it for rollbacks."""
        self._history.append(update)
        if len(self._history) > HISTORY_FOLD:
            # One update in place of many: bounded memory, and a cheap rebuild.
            self._history = [self.doc.get_update()]

    def wrote(self, update: bytes, state: bytes) -> None:
        """The feed's writer applied ``update`` to ``doc`` itself, bringing it to ``state``."""
        self._remember(update)
        self._changes = []
        self.changed()
        self.clocks = decode_state_vector(state)

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
            if not isinstance(value, bytes | bytearray):
                raise UpdateRejected(f"{_where(root, key)}: entries are canonical CBOR bytes")
            try:
                entry = _decode_entry(bytes(value))
                if root == "listings":
                    listing = validate_listing(entry)
                    if listing.name != key:
                        raise SchemaError("name", f"{listing.name!r} stored under {key!r}")
                else:
                    release = validate_release(entry)
                    if release.key != key:
                        raise SchemaError("version", f"{release.key!r} stored under {key!r}")
            except (FrameError, SchemaError) as exc:
                raise UpdateRejected(f"{_where(root, key)}: {exc}") from exc

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

    def apply(
        self,
        update: bytes,
        claimed: bytes,
        snapshot: bool = False,
        clocks: dict[int, int] | None = None,
    ) -> list[str]:
        """Vet then apply ``update`` (gates 3 and 4); return the changed entries
        ("listings/x", ...). ``clocks``: ``claimed`` decoded, if the caller has it.

        UpdateRejected (or Equivocation) if it fails a gate, and then the feed is
        exactly as before: its document is rebuilt without the update. Any other
        error while applying rolls the document back too, then propagates.
        """
        self._changes = []
        doc = self.doc
        try:
            with doc.transaction() as txn:  # one transaction: the observers run once, at its end
                # On its Yrs transaction directly: each of pycrdt's `Doc` methods
                # enters and leaves a nested transaction of its own.
                ytxn = txn._txn
                assert ytxn is not None
                try:
                    doc._doc.apply_update(ytxn, update)
                except ValueError as exc:
                    raise UpdateRejected(f"the update does not decode: {exc}") from exc
                after = doc._doc.get_state(ytxn)
                roots = list(doc._doc.roots(ytxn))  # `Doc.keys` wraps each root first
            if after != claimed:
                raise UpdateRejected(
                    "the feed's state after it is not the state it was signed with"
                )
            state = decode_state_vector(after) if clocks is None else clocks
            problem = None
            if state == self.clocks:  # the decoded state before
                problem = "it changes nothing"
            elif state.keys() != {self.client_id}:
                problem = "it was written by a client other than the feed's writer"
            elif any(root not in ROOTS for root in roots):
                problem = f"it writes outside {', '.join(ROOTS)}"
            if problem:
                raise UpdateRejected(problem)
            self._check(self._changes)
            if snapshot and self.clocks:  # on an empty feed, the gates above are all
                self.check_snapshot(update, claimed)
        except BaseException:
            self._rollback()
            raise
        self._remember(update)
        self.changed()
        self.clocks = state  # == the doc's state, checked above
        return sorted({f"{root}/{key}" for root, key, *_ in self._changes})


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
            return self.feed(address).apply(
                signed.update, signed.state, signed.is_snapshot, signed.state_clocks
            )
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
        after = doc.get_state()
        self._feed.wrote(update, after)
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
