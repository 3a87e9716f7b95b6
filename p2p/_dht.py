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
            value = await self._kad.get_value(key)
        except ValueError as exc:
            raise DhtError(f"invalid publisher address {publisher_address!r}") from exc
        except Exception as exc:
            raise DhtError(f"lookup of {key} failed: {exc}") from exc
        if value is None:
            return None
        try:
            return parse_record(key, value)
        except DhtError:
            return None  # expired since it was stored, or served by a liar

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
        joined = False
        while True:
            await self.add_connected_peers()
            if not joined and self.routing_table_size():
                # Kademlia's join: a lookup of the node's own neighbourhood through
                # its first peers, so that it learns of others (and discovery can
                # dial them) instead of staying a leaf of its bootstrap peer.
                joined = True
                await self.refresh()
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
                nursery.start_soon(dht._maintain)
                try:
                    yield dht
                finally:
                    nursery.cancel_scope.cancel()
