"""Kademlia DHT: signed, expiring records and provider records.

Records live under ``/mercato/<publisher address>/<name>``. A record's value is
canonical CBOR ``{key, data, seq, expires_at, publisher, sig}`` signed by the
publisher's account or node key (kind ``dht-record``), so a peer can store and
serve a record but never forge or alter one, and only the key's owner can
write under its address. Every peer validates a record before storing it
(py-libp2p calls the validator on PUT) and again on every get: bad signature,
wrong key, expired, too far in the future or oversized means rejected. Of
several valid values, the highest ``seq`` wins.

Provider records announce "this peer can serve X" for keys such as
``agent:<publisher>/<name>`` or ``build:<cid>``; they are hashed to 32-byte DHT
keys here.

py-libp2p adds a peer to the routing table only when told, so the service adds
every connected DHT-server peer itself, promptly after it connects, and
refreshes the table periodically.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from ._codec import canonical_cbor
from ._errors import P2PError
from ._host import P2PHost
from ._identity import Keypair, b58decode, b58encode, verify_signature
from ._trio_util import single_error
from ._wire import FrameError, decode_body

log = logging.getLogger("mercato.p2p.dht")

NAMESPACE = "mercato"
MAX_RECORD_BYTES = 16 * 1024
MAX_TTL_S = 48 * 3600
CLOCK_SKEW_S = 300
_NAME = re.compile(r"[a-z0-9][a-z0-9._:-]{0,127}")
LOOKUP_QUORUM = 3
JOINS = 10  # own-id look-ups while the routing table is small...
JOINED_AT = 8  # ... under this many peers...
REJOIN_S = 2.0  # ... this far apart
"""Valid records that end a lookup; the newest of them is the answer."""
LOOKUP_ALPHA = 5
"""GET_VALUE queries of one lookup in flight at once."""
LOOKUP_CLOSEST = 20
"""A lookup that finds fewer records stops when this many closest peers answered."""
LOOKUP_QUERY_TIMEOUT_S = 5.0
"""One peer's answer; a peer slower than this counts as having none."""


class DhtError(P2PError):
    """A DHT operation failed or a record is invalid."""


@dataclass(frozen=True)
class DhtRecord:
    key: str
    data: bytes
    seq: int
    expires_at: int
    publisher: bytes
    sig: bytes

    def body(self) -> dict[str, Any]:
        return {"key": self.key, "data": self.data, "seq": self.seq, "expires_at": self.expires_at}

    def encode(self) -> bytes:
        return canonical_cbor({**self.body(), "publisher": self.publisher, "sig": self.sig})


def record_key(publisher_address: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise DhtError(f"invalid record name {name!r}")
    return f"/{NAMESPACE}/{publisher_address}/{name}"


def make_record(
    keypair: Keypair, name: str, data: bytes, ttl_s: int, seq: int | None = None
) -> DhtRecord:
    """A signed record ``name`` under ``keypair``'s address, valid for ``ttl_s`` seconds."""
    if not 0 < ttl_s <= MAX_TTL_S:
        raise DhtError(f"ttl must be between 1 and {MAX_TTL_S} seconds")
    key = record_key(keypair.address, name)
    seq = seq if seq is not None else time.time_ns() // 1_000_000
    unsigned = DhtRecord(key, data, seq, int(time.time()) + ttl_s, keypair.public_key, b"")
    record = DhtRecord(**{**unsigned.__dict__, "sig": keypair.sign("dht-record", unsigned.body())})
    if len(record.encode()) > MAX_RECORD_BYTES:
        raise DhtError(f"record is larger than {MAX_RECORD_BYTES} bytes")
    return record


def parse_record(key: str, value: bytes, now: float | None = None) -> DhtRecord:
    """Decode and fully check a record stored under ``key``; DhtError says why not."""
    if len(value) > MAX_RECORD_BYTES:
        raise DhtError("record too large")
    try:
        obj = decode_body(value)
    except FrameError as exc:
        raise DhtError(f"record is not canonical CBOR: {exc}") from exc
    fields = {
        "key": str,
        "data": bytes,
        "seq": int,
        "expires_at": int,
        "publisher": bytes,
        "sig": bytes,
    }
    if not isinstance(obj, dict) or set(obj) != set(fields):
        raise DhtError("record has the wrong fields")
    for name, tp in fields.items():
        if type(obj[name]) is not tp:
            raise DhtError(f"record field {name!r} has the wrong type")
    record = DhtRecord(**obj)
    now = time.time() if now is None else now
    if record.key != key:
        raise DhtError("record was signed for another key")
    parts = key.split("/")
    if len(parts) != 4 or parts[1] != NAMESPACE or b58encode(record.publisher) != parts[2]:
        raise DhtError("record key does not belong to its publisher")
    if record.expires_at <= now:
        raise DhtError("record has expired")
    if record.expires_at > now + MAX_TTL_S + CLOCK_SKEW_S:
        raise DhtError("record expires too far in the future")
    if not verify_signature(record.publisher, "dht-record", record.body(), record.sig):
        raise DhtError("record signature does not verify")
    return record


def _validator() -> Any:
    from libp2p.records.validator import Validator

    class SignedRecordValidator(Validator):
        def validate(self, key: str, value: bytes) -> None:
            try:
                parse_record(key, value)
            except DhtError as exc:
                raise ValueError(str(exc)) from exc

        def select(self, key: str, values: list[bytes]) -> int:
            best, best_rank = 0, (-1, -1)
            for i, value in enumerate(values):
                try:
                    record = parse_record(key, value)
                except DhtError:
                    continue
                if (record.seq, record.expires_at) > best_rank:
                    best, best_rank = i, (record.seq, record.expires_at)
            return best

    return SignedRecordValidator()


def provider_key(key: str) -> str:
    """The DHT key (hex) under which providers of ``key`` are announced."""
    return hashlib.sha256(b"mercato/provider/" + key.encode()).hexdigest()


@dataclass(frozen=True)
class Provider:
    peer_id: str
    addrs: tuple[str, ...]


@dataclass(frozen=True)
class DhtConfig:
    mode: str = "server"
    """``server`` answers others' queries and stores records; ``client`` only asks."""
    refresh_s: float = 300.0
    """Mean interval between full routing-table refreshes (jittered)."""


class Dht:
    """put/get of signed records and provide/find-providers over Kademlia."""

    def __init__(self, host: P2PHost, kad: Any, config: DhtConfig) -> None:
        self._host = host
        self._kad = kad
        self._config = config
        self._added: set[str] = set()
        self._nursery: trio.Nursery | None = None

    @property
    def mode(self) -> str:
        return "server" if self._kad.mode.name == "SERVER" else "client"

    def routing_table_size(self) -> int:
        return int(self._kad.get_routing_table_size())

    async def put(self, record: DhtRecord) -> None:
        """Store a signed record on the peers closest to its key (and locally)."""
        try:
            await self._kad.put_value(record.key, record.encode())
        except Exception as exc:
            raise DhtError(f"could not store {record.key}: {exc}") from exc

    async def get(self, publisher_address: str, name: str) -> DhtRecord | None:
        """The newest valid record, or None if no peer has one."""
        key = record_key(publisher_address, name)
        try:
            b58decode(publisher_address)
        except ValueError as exc:
            raise DhtError(f"invalid publisher address {publisher_address!r}") from exc
        try:
            return await self._lookup(key)
        except Exception as exc:
            raise DhtError(f"lookup of {key} failed: {exc}") from exc

    async def _lookup(self, key: str) -> DhtRecord | None:
        """Kademlia's iterative GET_VALUE walk, ending at `LOOKUP_QUORUM` valid answers.

        py-libp2p's ``get_value`` first walks FIND_NODE to the closest peers (each
        round waiting for its slowest peer), then asks every peer it has heard
        of, then stores the value on every closest peer without it, and only
        then returns: its time is that of the slowest of some forty queries,
        and one peer slow to answer made a lookup take seconds. Here the
        closest known peers are asked, `LOOKUP_ALPHA` at a time, closest
        first, each answer's closer peers joining the candidates; the walk ends
        at `LOOKUP_QUORUM` valid records (the newest of them wins), or when the
        `LOOKUP_CLOSEST` closest peers it knows have all answered. Peers that
        answered with an older record are sent the newest in the background.
        """
        from libp2p.kad_dht.utils import sort_peer_ids_by_distance

        kad = self._kad
        key_bytes = key.encode()
        local = kad.value_store.get(key_bytes)
        if local is not None:
            try:
                return parse_record(key, local.value)
            except DhtError:
                pass  # expired here: ask the network
        me = kad.local_peer_id
        candidates = [p for p in kad.routing_table.find_local_closest_peers(key_bytes) if p != me]
        if len(candidates) < LOOKUP_QUORUM:  # a node that is still joining
            found = await kad.peer_routing.find_closest_peers_network(key_bytes)
            candidates = [p for p in found if p != me]
        answers: dict[Any, tuple[DhtRecord, Any] | None] = {}
        asked: set[Any] = set()
        send, receive = trio.open_memory_channel[tuple[Any, Any, list[Any]]](LOOKUP_CLOSEST * 4)

        async def ask(peer: Any) -> None:
            record, closer = None, []
            with trio.move_on_after(LOOKUP_QUERY_TIMEOUT_S):
                try:
                    result = await kad.value_store._get_from_peer(
                        peer, key_bytes, return_record=True, return_closer_peers=True
                    )
                    if isinstance(result, tuple):
                        record, closer = result
                except Exception:
                    log.debug("GET_VALUE failed", extra={"peer": str(peer)}, exc_info=True)
            await send.send((peer, record, list(closer)))

        def settled() -> bool:
            nearest = sort_peer_ids_by_distance(key_bytes, [*asked, *candidates])
            return all(p in answers for p in nearest[:LOOKUP_CLOSEST])

        async with trio.open_nursery() as nursery:
            in_flight = 0
            while True:
                while in_flight < LOOKUP_ALPHA and candidates:
                    peer = candidates.pop(0)
                    asked.add(peer)
                    nursery.start_soon(ask, peer)
                    in_flight += 1
                if in_flight == 0:
                    break
                peer, raw, closer = await receive.receive()
                in_flight -= 1
                answers[peer] = None
                if raw is not None and raw.value:
                    try:
                        answers[peer] = (parse_record(key, raw.value), raw)
                    except DhtError:
                        log.debug("invalid record from a peer", extra={"peer": str(peer)})
                fresh = [p for p in closer if p != me and p not in asked and p not in candidates]
                if fresh:
                    candidates = sort_peer_ids_by_distance(key_bytes, candidates + fresh)
                valid = [a for a in answers.values() if a is not None]
                if len(valid) >= LOOKUP_QUORUM or (not in_flight and settled()):
                    break
            nursery.cancel_scope.cancel()
        valid = [a for a in answers.values() if a is not None]
        if not valid:
            return None
        best, best_raw = max(valid, key=lambda a: (a[0].seq, a[0].expires_at))
        kad.value_store.put_record(key_bytes, best_raw)  # as py-libp2p's lookup does
        outdated = [p for p, a in answers.items() if a is not None and a[0].seq < best.seq]
        if outdated and self._nursery is not None:
            self._nursery.start_soon(self._correct, outdated, key_bytes, best_raw)
        return best

    async def _correct(self, peers: list[Any], key_bytes: bytes, raw: Any) -> None:
        """Send the newest record to peers that served an older one."""
        for peer in peers:
            with trio.move_on_after(LOOKUP_QUERY_TIMEOUT_S):
                try:
                    await self._kad.value_store._store_at_peer(
                        peer, key_bytes, raw.value, record=raw
                    )
                except Exception:
                    log.debug("entry correction failed", extra={"peer": str(peer)})

    async def provide(self, key: str) -> None:
        """Announce that this node provides ``key``."""
        try:
            ok = await self._kad.provide(provider_key(key))
        except Exception as exc:
            raise DhtError(f"could not announce {key}: {exc}") from exc
        if not ok:
            raise DhtError(f"no peer accepted the provider record for {key}")

    async def find_providers(self, key: str, count: int = 20) -> list[Provider]:
        """Peers that announced ``key`` (deduplicated; py-libp2p repeats them)."""
        try:
            found = await self._kad.find_providers(provider_key(key), count)
        except Exception as exc:
            raise DhtError(f"provider lookup for {key} failed: {exc}") from exc
        out: dict[str, Provider] = {}
        for info in found:
            peer = str(info.peer_id)
            if peer not in out and not self._host.is_banned(peer):
                out[peer] = Provider(peer, tuple(str(a) for a in info.addrs))
        return list(out.values())

    async def add_connected_peers(self) -> int:
        """Put every connected DHT server into the routing table; return how many were new."""
        from libp2p.peer.id import ID

        new = 0
        for peer in self._host.connected_peers():
            if peer in self._added:
                continue
            if not any("/kad/" in p for p in self._host.protocols_of(peer)):
                continue  # not identified yet, or a DHT client
            try:
                if await self._kad.add_peer(ID.from_base58(peer)):
                    self._added.add(peer)
                    new += 1
            except Exception:
                log.debug("could not add peer to the routing table", extra={"peer": peer})
        self._added &= set(self._host.connected_peers())
        return new

    async def _join(self) -> None:
        """Kademlia's join: one lookup of the node's own id through its first peers,
        so that it learns of its neighbours (and discovery can dial them) instead
        of staying a leaf of its bootstrap peer. Not a full refresh: that adds a
        lookup per non-empty bucket, each asking up to 20 peers, and every node
        of a network that starts together ran them at once; the periodic
        refresh fills the far buckets later."""
        from libp2p.peer.peerinfo import PeerInfo

        kad = self._kad
        try:
            found = await kad.peer_routing.find_closest_peers_network(kad.local_peer_id.to_bytes())
            for peer in found:
                addrs = self._kad.host.get_peerstore().addrs(peer)
                if addrs and peer != kad.local_peer_id:
                    await kad.routing_table.add_peer(PeerInfo(peer, addrs))
        except Exception:
            log.debug("join lookup failed", exc_info=True)

    async def refresh(self) -> None:
        await self.add_connected_peers()
        try:
            await self._kad.refresh_routing_table()
        except Exception:
            log.debug("routing table refresh failed", exc_info=True)

    async def _maintain(self) -> None:
        # Adding connected peers is cheap and keeps lookups working as the node
        # joins. Full refreshes are lookups of their own: run them rarely and at
        # jittered times, or every node of a network refreshes at once.
        next_refresh = trio.current_time() + self._config.refresh_s * (0.5 + random.random())
        joins, last_join = 0, -math.inf
        while True:
            await self.add_connected_peers()
            size, now = self.routing_table_size(), trio.current_time()
            # Join once; again, a few times, while the table stays small: the first
            # node of a network that starts together knows no one its first
            # look-up could find (the later ones are each one look-up, not a storm).
            if size and (
                joins == 0 or (joins < JOINS and size < JOINED_AT and now - last_join >= REJOIN_S)
            ):
                joins, last_join = joins + 1, now
                await self._join()
            if trio.current_time() >= next_refresh:
                await self.refresh()
                next_refresh = trio.current_time() + self._config.refresh_s * (
                    0.5 + random.random()
                )
            await trio.sleep(0.5)


@asynccontextmanager
async def open_dht(host: P2PHost, config: DhtConfig) -> AsyncIterator[Dht]:
    """Run the Kademlia DHT on ``host`` for the life of the block."""
    from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
    from libp2p.tools.anyio_service import background_trio_service

    if config.mode not in ("server", "client"):
        raise DhtError(f"dht mode must be 'server' or 'client', not {config.mode!r}")
    mode = DHTMode.SERVER if config.mode == "server" else DHTMode.CLIENT
    kad = KadDHT(host.libp2p, mode, enable_random_walk=False, strict_validation=True)
    kad.register_validator(NAMESPACE, _validator())
    dht = Dht(host, kad, config)
    with single_error():
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(background_trio_service(kad))
            async with trio.open_nursery() as nursery:
                dht._nursery = nursery
                nursery.start_soon(dht._maintain)
                try:
                    yield dht
                finally:
                    nursery.cancel_scope.cancel()
