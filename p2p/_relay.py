"""Circuit relay v2: relaying for peers behind NAT, and being reached through relays.

A relay (``hop``) runs the HOP side with hard limits: reservations in all,
circuits per reservation, per circuit its bytes (both directions) and its
duration, and a byte rate for all circuits together. A request over a limit
is refused with the protocol's status code and the relay goes on serving the
others. A node given relays (``reserve_on``)
runs the STOP side, so that peers reach it through them, and keeps a
reservation on each: it dials the relay, reserves, advertises
``<relay addr>/p2p-circuit/p2p/<own id>`` among its addresses, renews every
``renew_s`` and starts over when the relay goes away. Other nodes run neither
handler; any node dials such addresses (`P2PHost.connect`) through the relay.

py-libp2p 0.8.1 needs five workarounds here:
- it reserves for whatever peer id a RESERVE message names, so one connection
  could fill a relay with made-up peers: the peer is always the connection's;
  and it counted peers that had gone against the limit until their TTL ended;
- its swarm cannot dial ``/p2p-circuit`` addresses: the circuit transport
  dials them itself, and the connection then serves every stream to that peer;
- a dialer must not be a relay client, or each dial takes a reservation;
- its circuit pump let an idle circuit outlive its duration, closed another
  circuit to the same peer when it ended, and let one source take all of a
  destination's circuits: `_Protocol` replaces the pump and caps circuits per
  (source, destination) pair at CIRCUITS_PER_PAIR;
- a reset Yamux stream never woke a task blocked reading it, so a circuit
  cut by a limit held its slot for good (every later circuit for that
  reservation was refused): `_patch_yamux_reset` wakes the reader.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import trio

from ._errors import P2PError
from ._holepunch import HolePunch

log = logging.getLogger("mercato.p2p.relay")
RETRY_S = (1.0, 5.0, 30.0, 120.0)
CIRCUITS_PER_PAIR = 2
MAX_READ = 64 * 1024
WRITE_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class RelayConfig:
    hop: bool = False
    """Relay for others (the relay role)."""
    max_reservations: int = 128
    """Peers holding a reservation at once."""
    max_circuits: int = 8
    """Circuits at once through one peer's reservation."""
    circuit_bytes: int = 64 * 1024 * 1024
    """Bytes one circuit may carry, both directions together."""
    circuit_s: int = 600
    """How long one circuit may last."""
    bandwidth_bytes_s: int = 0
    """Bytes per second all circuits together may carry (0: no cap)."""
    reservation_ttl_s: int = 3600
    reserve_on: tuple[str, ...] = ()
    """Relays to hold a reservation on (full multiaddrs ending in /p2p/ID)."""
    renew_s: float = 600.0


class Relay:
    """The node's circuit relay service (see the module docstring)."""

    def __init__(self, host: Any, config: RelayConfig) -> None:
        self._host = host  # P2PHost
        self.config = config
        self._protocol: Any = None
        self._dialer: Any = None
        self._reserved: dict[str, str] = {}  # relay addr -> our relayed addr
        self._failures: dict[str, int] = {}  # relay addr -> failed attempts in a row
        self._keeping: dict[str, trio.CancelScope] = {}  # relay addr -> its keeper task
        self._nursery: trio.Nursery | None = None
        self._serving: trio.CancelScope | None = None
        self.holepunch = HolePunch(host)
        self._punching = False

    def relayed_addrs(self) -> list[str]:
        return sorted(self._reserved.values())

    def status(self) -> dict[str, Any]:
        return {
            "hop": self.config.hop,
            "reservations": sorted(self._reserved),
            "failing": dict(self._failures),
            "hole_punching": self._punching,
            "made_direct": self.holepunch.upgraded,
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the protocol and keep the reservations until cancelled."""
        from libp2p.relay.circuit_v2.config import RelayConfig as LibRelayConfig
        from libp2p.relay.circuit_v2.config import RelayRole
        from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
        from libp2p.relay.circuit_v2.resources import RelayLimits
        from libp2p.relay.circuit_v2.transport import CircuitV2Transport

        _patch_yamux_reset()
        # Its ERROR lines are routine (each HOP stream a client closes logs one).
        logging.getLogger("libp2p.relay.circuit_v2").setLevel(logging.CRITICAL)
        raw = self._host.libp2p
        limits = RelayLimits(
            duration=self.config.circuit_s,
            data=self.config.circuit_bytes,
            max_circuit_conns=self.config.max_circuits,
            max_reservations=self.config.max_reservations,
            reservation_ttl=self.config.reservation_ttl_s,
        )
        self._protocol = _protocol_class(
            CircuitV2Protocol, _Bandwidth(self.config.bandwidth_bytes_s)
        )(raw, limits=limits, allow_hop=self.config.hop)
        # A dialer only (not a relay client): each dial would take a reservation.
        # Dialing needs the protocol object, not its handlers.
        self._dialer = CircuitV2Transport(raw, self._protocol, LibRelayConfig(roles=RelayRole.STOP))
        self._reserver = CircuitV2Transport(
            raw, self._protocol, LibRelayConfig(roles=RelayRole.STOP | RelayRole.CLIENT)
        )
        self._host.use_relay(self)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.config.hop or self.config.reserve_on:
                await nursery.start(self._serve)
            # Otherwise no HOP or STOP handler until `use_relays` asks for one, so no
            # peer can make this node relay or hold half-open circuits.
            self._keep(self.config.reserve_on)
            task_status.started()
            await trio.sleep_forever()

    async def use_relays(self, addrs: list[str]) -> None:
        """Hold reservations on exactly ``addrs`` from now on, besides ``reserve_on``
        (what a node found unreachable from outside asks for); [] drops them.
        Such a node also tries to make its relayed connections direct (DCUtR)."""
        if self._nursery is None:
            raise P2PError("the relay service is not running")
        if addrs and self._serving is None:
            await self._nursery.start(self._serve)
        if addrs and not self._punching:
            self._punching = True
            await self._nursery.start(self.holepunch.run)
        self._keep((*self.config.reserve_on, *addrs))

    def _keep(self, addrs: tuple[str, ...]) -> None:
        wanted = set(addrs)
        for addr in [a for a in self._keeping if a not in wanted]:
            self._keeping.pop(addr).cancel()
            self._reserved.pop(addr, None)
            self._failures.pop(addr, None)
        for addr in wanted - set(self._keeping):
            scope = trio.CancelScope()
            self._keeping[addr] = scope
            assert self._nursery is not None
            self._nursery.start_soon(self._keep_reservation, addr, scope)

    async def _serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        from libp2p.tools.anyio_service import background_trio_service

        self._serving = trio.CancelScope()
        with self._serving:
            async with background_trio_service(self._protocol):
                await self._protocol.event_started.wait()
                task_status.started()
                await trio.sleep_forever()

    async def dial(self, addr: str) -> str:
        """Connect to a peer through ``/.../p2p/RELAY/p2p-circuit/p2p/PEER``; its id."""
        import multiaddr as ma

        if self._dialer is None:
            raise P2PError("the relay service is not running")
        peer = addr.rsplit("/p2p/", 1)[-1]
        relay = addr.split("/p2p-circuit", 1)[0]
        if relay.rsplit("/p2p/", 1)[-1] not in self._host.connected_peers():
            await self._host.connect(relay)
        try:
            with trio.fail_after(self._host.dial_timeout_s):
                await self._dialer.dial(ma.Multiaddr(addr))
        except trio.TooSlowError as exc:
            raise P2PError(f"dialing {addr} through its relay timed out") from exc
        except Exception as exc:
            raise P2PError(f"cannot reach {addr} through its relay: {exc}") from exc
        return peer

    async def _keep_reservation(self, addr: str, scope: trio.CancelScope) -> None:
        with scope:
            await self._keep_reservation_forever(addr)

    async def _keep_reservation_forever(self, addr: str) -> None:
        attempt = 0
        relay_id = addr.rsplit("/p2p/", 1)[-1]
        while True:
            try:
                await self._reserve(addr, relay_id)
                attempt = 0
                self._failures.pop(addr, None)
                # Renew on time; start over at once if the relay goes away.
                with trio.move_on_after(self.config.renew_s):
                    for _ in iter(int, 1):  # until the relay goes, or it is time to renew
                        if relay_id not in self._host.connected_peers():
                            break
                        await trio.sleep(1.0)
                if relay_id not in self._host.connected_peers():
                    log.info("relay lost", extra={"relay": addr})
                    self._reserved.pop(addr, None)
                continue
            except Exception as exc:  # whatever py-libp2p raises: retry, never end the node
                self._reserved.pop(addr, None)
                delay = RETRY_S[min(attempt, len(RETRY_S) - 1)]
                attempt += 1
                self._failures[addr] = attempt
                log.info(
                    "no reservation on a relay; will retry",
                    extra={"relay": addr, "why": str(exc), "retry_s": delay},
                )
                await trio.sleep(delay)

    async def _reserve(self, addr: str, relay_id: str) -> None:
        from libp2p.peer.id import ID
        from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP

        await self._host.connect(addr)
        try:
            stream = await self._host.libp2p.new_stream(ID.from_base58(relay_id), [HOP])
        except Exception as exc:
            raise P2PError(f"{addr} does not relay: {exc}") from exc
        try:
            with trio.fail_after(self._host.dial_timeout_s):
                ok = await self._reserver._make_reservation(stream, ID.from_base58(relay_id))
        except trio.TooSlowError as exc:
            raise P2PError(f"{addr} did not answer the reservation") from exc
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await stream.close()
        if not ok:
            raise P2PError(f"{addr} refused a reservation (full, or not a relay)")
        if addr not in self._reserved:
            log.info("reserved on a relay", extra={"relay": addr})
        self._reserved[addr] = f"{addr}/p2p-circuit/p2p/{self._host.peer_id}"


class _Bandwidth:
    """A relay-wide byte budget: each chunk is spent, and a pump that runs the
    budget into debt sleeps it off, so all circuits together stay at the rate
    (with one second's worth of burst)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._level = float(rate)
        self._at = time.monotonic()

    async def spend(self, n: int) -> None:
        if not self.rate:
            return
        now = time.monotonic()
        self._level = min(float(self.rate), self._level + (now - self._at) * self.rate) - n
        self._at = now
        if self._level < 0:
            await trio.sleep(-self._level / self.rate)


def _protocol_class(base: type, bandwidth: _Bandwidth) -> type:
    class _Protocol(base):
        _pairs: dict[tuple[Any, Any], int]

        async def _handle_reserve(self, stream: Any, msg: Any) -> None:
            # py-libp2p reserves for whatever peer id the message names: anyone could
            # fill the relay with made-up peers. The reserving peer is the connection's.
            msg.ClearField("peer")
            # A reservation holds only while its peer is connected (the spec), but
            # py-libp2p counted gone peers against the limit until their TTL (1 h).
            held = self.resource_manager._reservations
            for gone in [p for p in held if not self.resource_manager._is_peer_connected(p)]:
                del held[gone]
            await super()._handle_reserve(stream, msg)

        async def _handle_connect(self, stream: Any, msg: Any) -> None:
            # One source may not take a destination's every slot: a few circuits per
            # pair, the rest refused with the protocol's code.
            from libp2p.peer.id import ID
            from libp2p.relay.circuit_v2.protocol_buffer import StatusCode

            pairs = self.__dict__.setdefault("_pairs", {})
            pair = (stream.muxed_conn.peer_id, ID(msg.peer.id) if msg.HasField("peer") else None)
            if pairs.get(pair, 0) >= CIRCUITS_PER_PAIR:
                await self._send_status(
                    stream, StatusCode.RESOURCE_LIMIT_EXCEEDED, "too many circuits to that peer"
                )
                await stream.reset()
                return
            pairs[pair] = pairs.get(pair, 0) + 1
            try:
                await super()._handle_connect(stream, msg)
            finally:
                pairs[pair] -= 1
                if not pairs[pair]:
                    del pairs[pair]

        async def _relay_data(
            self,
            src: Any,
            dst: Any,
            peer_id: Any,
            deadline: float | None = None,
            budget: list[int] | None = None,
        ) -> None:
            # py-libp2p's pump checked the duration only when data flowed (an idle
            # circuit held its slot for ever) and, on its way out, closed whichever
            # circuit was stored last under the peer's id, another user's included.
            # This one ends at the deadline, idle or not, and closes only its own.
            # py-libp2p's deadline is on time.monotonic(); trio's clock has its own offset.
            left = math.inf if deadline is None else deadline - time.monotonic()
            try:
                with trio.move_on_after(max(left, 0.0)):
                    while data := await src.read(MAX_READ):
                        if budget is not None:
                            if len(data) > budget[0]:
                                break
                            budget[0] -= len(data)
                        await bandwidth.spend(len(data))
                        with trio.fail_after(WRITE_TIMEOUT_S):
                            await dst.write(data)
            except Exception:
                pass
            finally:
                with trio.CancelScope(shield=True):
                    for end in (src, dst):
                        with contextlib.suppress(Exception):
                            await end.reset()
                entry = self._active_relays.get(peer_id)
                if entry is not None and (src in entry or dst in entry):
                    del self._active_relays[peer_id]

    return _Protocol


_patched = False


def _patch_yamux_reset() -> None:
    """Wake a reader blocked on a Yamux stream when the stream is reset (see the
    module docstring). Idempotent; skipped (with a warning) on a py-libp2p whose
    Yamux no longer has the function."""
    global _patched
    if _patched:
        return
    from libp2p.stream_muxer.yamux.yamux import Yamux

    original = getattr(Yamux, "_finalize_stream_locked", None)
    if original is None:
        log.warning("py-libp2p changed: the Yamux reset workaround is not applied")
        _patched = True
        return

    def finalize(self: Any, stream: Any, *, fully_closed: bool) -> Any:
        event = self.stream_events.get(stream.stream_id)
        if fully_closed and event is not None:
            event.set()
        return original(self, stream, fully_closed=fully_closed)

    patched: Any = Yamux  # a method replaced at run time, which mypy rightly refuses
    patched._finalize_stream_locked = finalize
    _patched = True
