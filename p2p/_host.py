"""The libp2p host: TCP + Noise + Yamux, identify and ping, bans and a connection cap.

`open_host` runs a py-libp2p host whose identity is the node key and hands out a
`P2PHost`, a narrow surface over it that speaks in peer-id strings and
multiaddr strings. It works around py-libp2p 0.8.1 behaviour that a daemon
cannot live with (each one checked on loopback):

- an exception escaping a stream handler kills the whole host, and a remote
  peer can cause one by resetting a stream: every handler is guarded;
- leaving ``host.run()`` by cancellation races its teardown and leaks sockets:
  the host runs in a shielded scope and is closed before ``run()`` exits;
- the default dialer waits 250 ms after every dial, failed dials are retried
  three times, and a failed peer is refused for 60 s: dials are configured to
  be fast and a deliberate redial clears the negative cache;
- every inbound connection holds a slot of the swarm's inbound limiter until
  the swarm stops, so after 250 connections no peer can connect: the limiter is
  replaced and the cap is enforced here instead;
- the auto-connector redials every peerstore entry every 10 s (banned peers
  too): it is stopped, and discovery decides whom to dial;
- the TCP listener sets SO_REUSEPORT, so a second daemon could silently share a
  fixed port: the port is checked with a plain bind first;
- listening failures do not raise: they are checked;
- ``close()`` closes connections one at a time, ~0.2 s each: they are closed
  concurrently first;
- identify runs once per connection and a failure (a stream reset, a
  connection replaced during the exchange) is never retried, which leaves a
  connected peer with no known protocols, invisible to every service: a
  watchdog re-identifies such peers;
- protocols registered after a peer identified us (services start after the
  overlay dials its bootstrap peers) are never announced: every new handler
  schedules an identify push to the connected peers.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import trio

from ._errors import P2PError
from ._identity import Keypair
from ._trio_util import single_error

log = logging.getLogger("mercato.p2p")

StreamHandler = Callable[[str, Any], Awaitable[None]]
"""``async def handler(peer_id, stream)``; the stream is reset if it raises."""

DEFAULT_LISTEN = ("/ip4/0.0.0.0/tcp/4001",)
DEFAULT_MAX_CONNECTIONS = 128
BAN_SECONDS = 600.0
PENALTY_LIMIT = 100.0
PENALTY_HALF_LIFE_S = 60.0
PENALTY_HANDLER_ERROR = 25.0
MAX_CONDUCT_RECORDS = 4096
CLOSE_TIMEOUT_S = 5.0
IDENTIFY_CHECK_S = 1.0
IDENTIFY_TIMEOUT_S = 10.0
IDENTIFY_ATTEMPTS = 5
PUSH_DEBOUNCE_S = 0.1


class DialError(P2PError):
    """A peer could not be reached or did not complete the handshake."""


class BadAddress(DialError):
    """The address to dial is malformed, or is this node's own."""


class PeerBanned(P2PError):
    """The peer is banned for misbehaving."""


@dataclass(frozen=True)
class HostConfig:
    """How the host listens and how many peers it keeps."""

    listen: tuple[str, ...] = DEFAULT_LISTEN
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    dial_timeout_s: float = 10.0
    private: bool = False
    """Advertise only relayed addresses (behind NAT, or by choice)."""


@dataclass
class _Conduct:
    """A peer's penalty points, decaying with a half-life, and its ban."""

    points: float = 0.0
    updated: float = field(default_factory=time.monotonic)
    banned_until: float = 0.0

    def add(self, points: float) -> float:
        now = time.monotonic()
        self.points *= 0.5 ** ((now - self.updated) / PENALTY_HALF_LIFE_S)
        self.updated = now
        self.points += points
        return self.points


def _libp2p() -> Any:
    """Import py-libp2p lazily: it takes ~0.5 s and the CLI rarely needs it.

    Its import detaches the ``libp2p`` logger (no handlers, no propagation, so
    its records reach stderr unformatted); that is undone here so the
    application's logging configuration applies.
    """
    import libp2p

    lib = logging.getLogger("libp2p")
    lib.handlers[:] = []
    lib.propagate = True
    lib.setLevel(logging.NOTSET)
    return libp2p


def expand_unspecified(addrs: list[str]) -> list[str]:
    """Replace a 0.0.0.0 listen address by one per local IPv4 address (what others can dial)."""
    if not any(a.startswith("/ip4/0.0.0.0/") for a in addrs):
        return addrs
    import ifaddr  # comes with zeroconf, which py-libp2p depends on

    local = [
        ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if isinstance(ip.ip, str)
    ]
    out = []
    for addr in addrs:
        if addr.startswith("/ip4/0.0.0.0/"):
            out += [addr.replace("/ip4/0.0.0.0/", f"/ip4/{ip}/", 1) for ip in local]
        else:
            out.append(addr)
    return out


def _check_port_free(listen: tuple[str, ...]) -> None:
    """Refuse a fixed TCP port that another process already listens on."""
    for addr in listen:
        parts = addr.strip("/").split("/")
        if len(parts) >= 4 and parts[0] in ("ip4", "ip6") and parts[2] == "tcp":
            port = int(parts[3])
            if port == 0:
                continue
            family = socket.AF_INET if parts[0] == "ip4" else socket.AF_INET6
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                # Like the real listener: a port left in TIME_WAIT by our own last
                # run is free, a port someone listens on is not.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((parts[1], port))
                except OSError as exc:
                    raise P2PError(
                        f"cannot listen on {addr}: {exc.strerror}; another node may be using "
                        "that port: choose another with --listen or [p2p] listen"
                    ) from exc


class P2PHost:
    """A running libp2p host. Peer ids and addresses are strings."""

    def __init__(self, host: Any, keypair: Keypair, config: HostConfig) -> None:
        self._host = host
        self._keypair = keypair
        self._config = config
        self._conduct: dict[str, _Conduct] = {}
        self.peer_id = keypair.peer_id
        self._protocols_changed = trio.Event()
        self._relay: Any = None  # the Relay service, once it runs
        self._via: dict[str, str] = {}  # peer -> the relayed address we last reached it by

    @property
    def dial_timeout_s(self) -> float:
        return self._config.dial_timeout_s

    def use_relay(self, relay: Any) -> None:
        """Dial ``/p2p-circuit`` addresses and advertise relayed ones through ``relay``."""
        self._relay = relay

    # -- identity and addresses --------------------------------------------------

    @property
    def libp2p(self) -> Any:
        """The py-libp2p host, for services in this package that build on it."""
        return self._host

    def listen_addrs(self) -> list[str]:
        """Addresses others can dial us on, each ending in /p2p/<our peer id>: direct
        ones (unless private), then those through relays we hold a reservation on."""
        direct = [] if self._config.private else [str(a) for a in self._host.get_addrs()]
        relayed = self._relay.relayed_addrs() if self._relay else []
        # A node holds reservations only when direct dials do not reach it (private,
        # or found unreachable): dialers that try the first few addresses try these.
        return relayed + expand_unspecified(direct)

    def connected_peers(self) -> list[str]:
        return sorted({str(p) for p in self._host.get_connected_peers()})

    def peer_addrs(self, peer_id: str) -> list[str]:
        """Known addresses of a peer (the relayed one we reached it by first, then
        those from identify or dials); [] if none."""
        from libp2p.peer.id import ID

        via = [self._via[peer_id]] if peer_id in self._via else []
        try:
            return via + [str(a) for a in self._host.get_peerstore().addrs(ID.from_base58(peer_id))]
        except Exception:
            return via

    def known_peers(self, limit: int = 256) -> list[str]:
        """Peers this host holds addresses for (from identify, the DHT, dials), not
        itself; at most ``limit``."""
        try:
            peers = self._host.get_peerstore().peers_with_addrs()
        except Exception:
            return []
        out = [str(p) for p in peers if str(p) != self.peer_id]
        return out[:limit]

    def observed_ip(self, peer_id: str) -> str | None:
        """The IP our direct connection to a peer comes from; None when the only
        connections are relayed (their socket is the relay's) or there is none."""
        from libp2p.peer.id import ID

        try:
            conns = self._host.get_network().connections.get(ID.from_base58(peer_id)) or []
        except Exception:
            return None
        for conn in conns:
            with suppress(Exception):
                if any("/p2p-circuit" in str(a) for a in conn.get_transport_addresses()):
                    continue
                remote = conn.muxed_conn.get_remote_address()
                if remote:
                    return str(remote[0])
        return None

    def is_relayed(self, peer_id: str) -> bool:
        """True when every connection to the peer goes through a relay."""
        return peer_id in self.connected_peers() and self.observed_ip(peer_id) is None

    def protocols_of(self, peer_id: str) -> list[str]:
        from libp2p.peer.id import ID

        try:
            return list(self._host.get_peerstore().get_protocols(ID.from_base58(peer_id)))
        except Exception:
            return []

    # -- dialing ---------------------------------------------------------------

    async def connect(self, multiaddr: str) -> str:
        """Connect to ``/ip4/.../tcp/N/p2p/<peer id>``; return the peer id.

        Raises DialError if the address is malformed, the peer is unreachable or
        the handshake fails; PeerBanned if the peer is banned.
        """
        import multiaddr as ma
        from libp2p.peer.peerinfo import info_from_p2p_addr

        if "/p2p-circuit" in multiaddr:
            return await self._connect_relayed(multiaddr)
        try:
            info = info_from_p2p_addr(ma.Multiaddr(multiaddr))
        except Exception as exc:
            raise BadAddress(
                f"invalid peer address {multiaddr[:200]!r}: expected /ip4/HOST/tcp/PORT/p2p/PEER_ID"
            ) from exc
        peer = str(info.peer_id)
        if peer == self.peer_id:
            raise BadAddress("that address is this node itself")
        if self.is_banned(peer):
            raise PeerBanned(f"peer {peer} is banned for misbehaving")
        self._host.get_network().unblock_peer(info.peer_id)  # clear the 60 s negative cache
        try:
            with trio.fail_after(self._config.dial_timeout_s):
                await self._host.connect(info)
        except trio.TooSlowError as exc:
            raise DialError(f"dialing {multiaddr} timed out") from exc
        except Exception as exc:
            raise DialError(f"cannot reach {multiaddr}: {exc}") from exc
        return peer

    async def _connect_relayed(self, multiaddr: str) -> str:
        parts = multiaddr.split("/p2p-circuit/p2p/")
        if len(parts) != 2 or "/p2p/" not in parts[0] or "/" in parts[1] or not parts[1]:
            raise BadAddress(
                f"invalid relayed address {multiaddr[:200]!r}: expected "
                "/ip4/HOST/tcp/PORT/p2p/RELAY_ID/p2p-circuit/p2p/PEER_ID"
            )
        peer = parts[1]
        if peer == self.peer_id:
            raise BadAddress("that address is this node itself")
        if self.is_banned(peer):
            raise PeerBanned(f"peer {peer} is banned for misbehaving")
        if peer in self.connected_peers():
            return peer
        if self._relay is None:
            raise DialError("this node does not run the relay protocol")
        try:
            await self._relay.dial(multiaddr)
        except P2PError as exc:
            raise DialError(str(exc)) from exc
        # The peerstore keeps only direct addresses: remember how to reach it again.
        self._via.pop(peer, None)
        self._via[peer] = multiaddr
        while len(self._via) > MAX_CONDUCT_RECORDS:
            del self._via[next(iter(self._via))]
        return peer

    async def disconnect(self, peer_id: str) -> None:
        from libp2p.peer.id import ID

        with suppress(Exception):
            await self._host.disconnect(ID.from_base58(peer_id))

    async def ping(self, peer_id: str, count: int = 3) -> list[float]:
        """Round-trip times in milliseconds over libp2p's ping protocol."""
        from libp2p.host.ping import ID as PING_ID
        from libp2p.host.ping import perform_ping_roundtrip
        from libp2p.peer.id import ID

        try:
            stream = await self._host.new_stream(ID.from_base58(peer_id), [PING_ID])
        except Exception as exc:
            raise DialError(f"cannot open a ping stream to {peer_id}: {exc}") from exc
        rtts = []
        try:
            for _ in range(count):
                started = time.perf_counter()
                with trio.fail_after(self._config.dial_timeout_s):
                    await perform_ping_roundtrip(stream)
                rtts.append((time.perf_counter() - started) * 1000)
        except trio.TooSlowError as exc:
            raise DialError(f"ping to {peer_id} timed out") from exc
        except Exception as exc:
            raise DialError(f"ping to {peer_id} failed: {exc}") from exc
        finally:
            with suppress(Exception):
                await stream.close()
        return rtts

    async def open_stream(self, peer_id: str, protocol_id: str) -> Any:
        """A new stream to a peer speaking ``protocol_id``; DialError if impossible."""
        from libp2p.peer.id import ID

        if self.is_banned(peer_id):
            raise PeerBanned(f"peer {peer_id} is banned for misbehaving")
        try:
            with trio.fail_after(self._config.dial_timeout_s):
                return await self._host.new_stream(ID.from_base58(peer_id), [protocol_id])
        except trio.TooSlowError as exc:
            raise DialError(f"opening {protocol_id} to {peer_id} timed out") from exc
        except Exception as exc:
            raise DialError(f"cannot open {protocol_id} to {peer_id}: {exc}") from exc

    # -- serving ---------------------------------------------------------------

    def set_stream_handler(self, protocol_id: str, handler: StreamHandler) -> None:
        """Serve ``protocol_id`` with ``handler(peer_id, stream)`` (guarded, see `_guard`)."""

        async def adapted(stream: Any) -> None:
            await handler(str(stream.muxed_conn.peer_id), stream)

        self._host.set_stream_handler(protocol_id, adapted)

    def _guard(self, protocol_id: str, handler: Callable[[Any], Awaitable[None]]) -> Any:
        """Wrap a raw py-libp2p stream handler so that no peer can crash the host.

        Every handler registered on the host goes through this, py-libp2p's own
        (GossipSub, Kademlia) included: an exception escaping any of them would
        stop the whole swarm. Banned peers are turned away first; a handler that
        raises has its stream reset and its peer penalised.
        """

        async def guarded(stream: Any) -> None:
            peer = str(stream.muxed_conn.peer_id)
            if self.is_banned(peer):
                with suppress(Exception):
                    await stream.reset()
                return
            try:
                await handler(stream)
            except Exception as exc:
                log.debug(
                    "stream handler failed",
                    extra={"protocol": protocol_id, "peer": peer, "error": repr(exc)},
                )
                with suppress(Exception):
                    await stream.reset()
                if not _is_disconnect(exc):  # going away is no offence; garbage is
                    await self.penalize(
                        peer, PENALTY_HANDLER_ERROR, f"{protocol_id}: {exc!r}"[:200]
                    )

        return guarded

    # -- conduct ---------------------------------------------------------------

    def is_banned(self, peer_id: str) -> bool:
        conduct = self._conduct.get(peer_id)
        return bool(conduct and conduct.banned_until > time.monotonic())

    def banned_peers(self) -> list[str]:
        return sorted(p for p in self._conduct if self.is_banned(p))

    async def penalize(self, peer_id: str, points: float, reason: str) -> None:
        """Count misbehaviour; past PENALTY_LIMIT points the peer is banned and dropped."""
        self._prune_conduct()
        conduct = self._conduct.setdefault(peer_id, _Conduct())
        if conduct.add(points) < PENALTY_LIMIT or self.is_banned(peer_id):
            log.debug("peer penalized", extra={"peer": peer_id, "points": points, "reason": reason})
            return
        conduct.banned_until = time.monotonic() + BAN_SECONDS
        log.warning(
            "banning peer", extra={"peer": peer_id, "reason": reason, "seconds": BAN_SECONDS}
        )
        await self.ban(peer_id)

    def _prune_conduct(self) -> None:
        """Forget peers that are neither banned nor recently penalised (bounds memory)."""
        if len(self._conduct) <= MAX_CONDUCT_RECORDS:
            return
        now = time.monotonic()
        for peer in [
            p
            for p, c in self._conduct.items()
            if c.banned_until < now and now - c.updated > 4 * PENALTY_HALF_LIFE_S
        ]:
            del self._conduct[peer]

    async def ban(self, peer_id: str, seconds: float = BAN_SECONDS) -> None:
        from libp2p.peer.id import ID

        self._conduct.setdefault(peer_id, _Conduct()).banned_until = time.monotonic() + seconds
        with suppress(Exception):
            self._host.get_peerstore().clear_addrs(ID.from_base58(peer_id))
        await self.disconnect(peer_id)

    def _announce_protocols(self) -> None:
        self._protocols_changed.set()

    async def _push_watch(self) -> None:
        """Push identify to connected peers after new handlers appear; runs until cancelled."""
        while True:
            await self._protocols_changed.wait()
            await trio.sleep(PUSH_DEBOUNCE_S)  # services register several handlers at once
            self._protocols_changed = trio.Event()
            with trio.move_on_after(IDENTIFY_TIMEOUT_S):
                await self._host._push_identify_to_all_peers()

    async def _identify_watch(self) -> None:
        """Re-identify connected peers whose protocols are still unknown; runs until cancelled.

        A peer is tried IDENTIFY_ATTEMPTS times while connected, so one that
        answers with no protocols costs a few streams, not one a second forever.
        """
        inflight: set[str] = set()
        attempts: dict[str, int] = {}

        async def identify(peer: str) -> None:
            from libp2p.peer.id import ID

            try:
                with trio.move_on_after(IDENTIFY_TIMEOUT_S):
                    await self._host._identify_peer(ID.from_base58(peer), reason="mercato-retry")
            except Exception as exc:  # the next round tries again
                log.debug("identify retry failed", extra={"peer": peer, "error": repr(exc)})
            finally:
                inflight.discard(peer)

        async with trio.open_nursery() as nursery:
            while True:
                await trio.sleep(IDENTIFY_CHECK_S)
                connected = self.connected_peers()
                attempts = {p: n for p, n in attempts.items() if p in connected}
                running = {str(p) for p in getattr(self._host, "_identify_inflight", ())}
                for peer in connected:
                    if peer in inflight or peer in running:
                        continue
                    if attempts.get(peer, 0) >= IDENTIFY_ATTEMPTS:
                        continue
                    if self.protocols_of(peer) or self.is_banned(peer):
                        continue
                    attempts[peer] = attempts.get(peer, 0) + 1
                    inflight.add(peer)
                    nursery.start_soon(identify, peer)

    async def _on_connected(self, conn: Any) -> None:
        peer = str(conn.muxed_conn.peer_id)
        # The cap applies to connections others open: the ones we dial (bootstrap,
        # a user's `connect`) are never the ones dropped.
        inbound = str(getattr(conn, "direction", "")).lower().endswith("inbound")
        too_many = len(self._host.get_connected_peers()) > self._config.max_connections
        if self.is_banned(peer) or (too_many and inbound):
            with suppress(Exception):
                await conn.close()


def _is_disconnect(exc: BaseException) -> bool:
    """True for the errors a stream raises when its peer closes, resets or leaves."""
    from libp2p.network.stream.exceptions import StreamError
    from libp2p.stream_muxer.exceptions import MuxedConnError, MuxedStreamError

    return isinstance(exc, StreamError | MuxedStreamError | MuxedConnError | EOFError)


def _notifee(host: P2PHost) -> Any:
    from libp2p.abc import INotifee

    class _Events(INotifee):
        async def connected(self, network: Any, conn: Any) -> None:
            await host._on_connected(conn)

        async def disconnected(self, network: Any, conn: Any) -> None:
            pass

        async def opened_stream(self, network: Any, stream: Any) -> None:
            pass

        async def closed_stream(self, network: Any, stream: Any) -> None:
            pass

        async def listen(self, network: Any, multiaddr: Any) -> None:
            pass

        async def listen_close(self, network: Any, multiaddr: Any) -> None:
            pass

    return _Events()


def _new_libp2p_host(keypair: Keypair, config: HostConfig) -> Any:
    libp2p = _libp2p()
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
    from libp2p.custom_types import TProtocol
    from libp2p.network.config import ConnectionConfig, RetryConfig
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
    from libp2p.security.noise.transport import Transport as NoiseTransport
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID
    from libp2p.stream_muxer.yamux.yamux import Yamux
    from libp2p.transport.tcp.tcp import TCP

    key_pair = create_new_key_pair(keypair.seed)
    limit = max(config.max_connections * 2, 8)
    host = libp2p.new_host(
        key_pair=key_pair,
        sec_opt={NOISE_ID: NoiseTransport(key_pair, noise_privkey=create_x25519().private_key)},
        muxer_opt={TProtocol(YAMUX_ID): Yamux},
        transports=[TCP()],
        connection_config=ConnectionConfig(
            max_connections_per_peer=1,  # also removes a 250 ms wait from every dial
            max_connections=limit,
            min_connections=0,
            low_watermark=0,  # else the auto-connector dials every peerstore entry
            high_watermark=limit,
            dial_timeout=config.dial_timeout_s,
            inbound_upgrade_timeout=5.0,  # a silent TCP client holds a socket this long
        ),
    )
    network = host.get_network()
    network.retry_config = RetryConfig(max_retries=0)
    network._inbound_limiter = trio.CapacityLimiter(math.inf)  # see the module docstring
    return host


async def _close_connections(raw: Any) -> None:
    """Close every connection at once: py-libp2p closes them one by one, ~0.2 s each."""

    async def close(conn: Any) -> None:
        with suppress(Exception):
            await conn.close()

    network = raw.get_network()
    async with trio.open_nursery() as nursery:
        for conns in list(network.connections.values()):
            for conn in list(conns):
                nursery.start_soon(close, conn)


@asynccontextmanager
async def open_host(keypair: Keypair, config: HostConfig) -> AsyncIterator[P2PHost]:
    """Run a libp2p host for the life of the block.

    Raises P2PError if a listen address is malformed or in use. On exit (also by
    cancellation) the host is closed: listeners stop and connections are closed.
    """
    import multiaddr as ma

    try:
        listen = [ma.Multiaddr(a) for a in config.listen]
    except Exception as exc:
        raise P2PError(f"invalid listen address in {config.listen}: {exc}") from exc
    _check_port_free(config.listen)
    raw = _new_libp2p_host(keypair, config)
    host = P2PHost(raw, keypair, config)
    raw.get_network().register_notifee(_notifee(host))
    register = raw.set_stream_handler

    # From here on every handler anyone registers (GossipSub, Kademlia, ours) is guarded.
    def set_stream_handler(protocol_id: Any, handler: Any) -> None:
        register(protocol_id, host._guard(str(protocol_id), handler))
        host._announce_protocols()

    raw.set_stream_handler = set_stream_handler
    stop = trio.Event()

    async def hosted(task_status: trio.TaskStatus[None]) -> None:
        # Shielded: py-libp2p's teardown must not be interrupted (see module docstring).
        with trio.CancelScope(shield=True):
            async with raw.run(listen):
                if listen and not raw.get_transport_addrs():
                    await raw.close()
                    raise P2PError(f"could not listen on any of {list(config.listen)}")
                await raw.get_network().auto_connector.stop()
                task_status.started()
                async with trio.open_nursery() as watchers:
                    watchers.start_soon(host._identify_watch)
                    watchers.start_soon(host._push_watch)
                    await stop.wait()
                    watchers.cancel_scope.cancel()
                with trio.move_on_after(CLOSE_TIMEOUT_S):  # a stuck peer must not hang shutdown
                    await _close_connections(raw)
                    await raw.close()

    with single_error():
        async with trio.open_nursery() as nursery:
            await nursery.start(hosted)
            try:
                yield host
            finally:
                stop.set()
