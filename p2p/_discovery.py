"""Finding and keeping peers: bootstrap peers, mDNS, and a persisted address book.

Every second the discovery loop:

- dials each configured bootstrap peer that is not connected, with exponential
  backoff per peer (1 s doubling to 5 min); the first failure is logged as a
  warning, the retries only at debug level, and the recovery once;
- while fewer than ``target_peers`` are connected, dials other known peers:
  those in the address book from the last run, those mDNS found on the LAN
  (mDNS fills py-libp2p's peerstore from zeroconf's threads; dialing is ours),
  then those the node learnt of from its peers (identify, DHT answers). So a
  node that joined through one bootstrap peer does not stay a leaf of it: a
  leaf that the hub prunes from its gossip mesh would hear messages only by
  the hub's occasional IHAVE;
- every ``save_every_s``, and when it stops, saves the connected peers and
  their addresses to the `AddressBook`, so a restarted node reconnects.

mDNS advertises on the private service ``_p2p-mercato._udp.local.`` so that
mercato nodes find each other and not every libp2p node on the LAN.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from mercato import MercatoError

from ._host import DialError, P2PHost, expand_unspecified

log = logging.getLogger("mercato.p2p.discovery")

BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 300.0
TICK_S = 1.0
STABLE_S = 30.0
"""A connection must last this long before a peer's backoff is forgiven: a peer
that accepts and then drops us at once must not be redialled every second."""
DIAL_CONCURRENCY = 8
DIAL_TIMEOUT_S = 5.0
MDNS_NETWORK = "mercato"


class AddressBook(Protocol):
    """Where known peers survive a restart (the node keeps it in its store)."""

    async def load(self) -> list[tuple[str, list[str]]]:
        """(peer id, addresses) of the peers known last time, best first."""
        ...

    async def save(self, peers: Sequence[tuple[str, list[str]]]) -> None:
        """Remember these peers (the ones connected now) and their addresses."""
        ...


@dataclass(frozen=True)
class DiscoveryConfig:
    bootstrap: tuple[str, ...] = ()
    mdns: bool = True
    target_peers: int = 16
    save_every_s: float = 30.0


@dataclass
class _Backoff:
    failures: int = 0
    next_try: float = 0.0
    last_error: str = ""
    connected_at: float = 0.0

    def failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        self.connected_at = 0.0
        self._wait()

    def dialed(self) -> None:
        """Connected: the next try (if it drops) still waits; `stable` forgives."""
        self.connected_at = time.monotonic()
        self._wait()

    def stable(self) -> bool:
        return bool(self.connected_at) and time.monotonic() - self.connected_at >= STABLE_S

    def _wait(self) -> None:
        delay = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** max(0, self.failures - 1))
        self.next_try = time.monotonic() + delay

    def due(self) -> bool:
        return time.monotonic() >= self.next_try


@dataclass
class BootstrapStatus:
    addr: str
    peer_id: str
    connected: bool
    failures: int
    last_error: str


def _dialable(addr: str) -> bool:
    """A TCP address another node could dial (not a wildcard, not a relay hop)."""
    return (
        "/tcp/" in addr
        and "/p2p-circuit" not in addr
        and not addr.startswith(("/ip4/0.0.0.0/", "/ip6/::/"))
    )


def with_peer_id(addr: str, peer_id: str) -> str:
    return addr if "/p2p/" in addr else f"{addr.rstrip('/')}/p2p/{peer_id}"


def peer_of(addr: str) -> str:
    return addr.rsplit("/p2p/", 1)[1] if "/p2p/" in addr else ""


@dataclass
class Discovery:
    """Keeps the node connected (see the module docstring)."""

    host: P2PHost
    config: DiscoveryConfig
    book: AddressBook | None = None
    _backoff: dict[str, _Backoff] = field(default_factory=dict)
    _known: dict[str, list[str]] = field(default_factory=dict)
    _mdns: Any = None

    def bootstrap_status(self) -> list[BootstrapStatus]:
        connected = set(self.host.connected_peers())
        out = []
        for addr in self.config.bootstrap:
            state = self._backoff.get(addr, _Backoff())
            peer = peer_of(addr)
            out.append(
                BootstrapStatus(addr, peer, peer in connected, state.failures, state.last_error)
            )
        return out

    @property
    def mdns_enabled(self) -> bool:
        return self._mdns is not None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; on cancellation the address book is saved first."""
        if self.book is not None:
            for peer, addrs in await self.book.load():
                self._known[peer] = addrs
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                if self.config.mdns:
                    nursery.start_soon(self._start_mdns)  # takes ~2 s of mDNS probing
                await self._loop()
        finally:
            with trio.CancelScope(shield=True):
                await self.save()
                await self._stop_mdns()

    async def _loop(self) -> None:
        last_save = time.monotonic()
        while True:
            await self._dial_bootstrap()
            await self._dial_known()
            if time.monotonic() - last_save >= self.config.save_every_s:
                await self.save()
                last_save = time.monotonic()
            await trio.sleep(TICK_S)

    async def save(self) -> None:
        if self.book is None:
            return
        peers = [(p, addrs) for p in self.host.connected_peers() if (addrs := self._addrs_of(p))]
        if not peers:
            return
        try:
            await self.book.save(peers)
        except MercatoError as exc:  # a full disk, say: the node goes on, and saves later
            log.warning("could not save the known peers", extra={"error": str(exc)})

    def _addrs_of(self, peer: str) -> list[str]:
        addrs = [a for a in self.host.peer_addrs(peer) if _dialable(a)]
        return [with_peer_id(a, peer) for a in addrs][:8]

    async def _dial(self, addr: str, quiet: bool) -> bool:
        state = self._backoff.setdefault(addr, _Backoff())
        if not state.due():
            return False
        try:
            with trio.fail_after(DIAL_TIMEOUT_S):
                await self.host.connect(addr)
        except (DialError, trio.TooSlowError) as exc:
            first = state.failures == 0
            state.failed(str(exc) or "timed out")
            if first and not quiet:
                log.warning(
                    "cannot reach peer; will retry with backoff",
                    extra={"addr": addr, "error": state.last_error},
                )
            else:
                log.debug("dial failed", extra={"addr": addr, "failures": state.failures})
            return False
        except Exception as exc:
            state.failed(str(exc))
            return False
        if state.failures and not quiet:
            log.info("reached peer again", extra={"addr": addr, "after_failures": state.failures})
        state.dialed()
        return True

    def _forgive_stable(self, connected: set[str]) -> None:
        for addr, state in list(self._backoff.items()):
            if peer_of(addr) in connected and state.stable():
                del self._backoff[addr]

    async def _dial_all(self, addrs: list[str], quiet: bool) -> None:
        """Dial these addresses concurrently, a few at a time."""
        limiter = trio.CapacityLimiter(DIAL_CONCURRENCY)

        async def one(addr: str) -> None:
            async with limiter:
                await self._dial(addr, quiet)

        async with trio.open_nursery() as nursery:
            for addr in addrs:
                nursery.start_soon(one, addr)

    async def _dial_bootstrap(self) -> None:
        connected = set(self.host.connected_peers())
        self._forgive_stable(connected)
        await self._dial_all(
            [a for a in self.config.bootstrap if peer_of(a) not in connected], quiet=False
        )

    async def _dial_known(self) -> None:
        connected = set(self.host.connected_peers())
        wanted = self.config.target_peers - len(connected)
        if wanted <= 0:
            return
        # One address per peer per tick (the first that is due), at most `wanted` peers.
        picks = []
        for _peer, addrs in self._candidates(connected):
            due = [a for a in addrs if self._backoff.setdefault(a, _Backoff()).due()]
            if due:
                picks.append(due[0])
            if len(picks) >= wanted:
                break
        await self._dial_all(picks, quiet=True)

    def _candidates(self, connected: set[str]) -> list[tuple[str, list[str]]]:
        found = dict(self._known)
        if self._mdns is not None:
            for peer in self._mdns_peers():
                found.setdefault(peer, self._addrs_of(peer))
        for peer in self.host.known_peers():
            found.setdefault(peer, self._addrs_of(peer))
        return [
            (peer, addrs)
            for peer, addrs in found.items()
            if peer not in connected and peer != self.host.peer_id and not self.host.is_banned(peer)
        ]

    def _mdns_peers(self) -> list[str]:
        try:
            entries = list(self._mdns.listener.discovered_services.values())
            return [str(peer) for peer, _seen in entries]
        except Exception:
            return []

    async def _stop_mdns(self) -> None:
        """py-libp2p's ``MDNSDiscovery.stop()`` in two halves: its trio cancel scope
        on the trio thread (from a worker thread the call hangs), zeroconf's blocking
        goodbye and close in a worker thread."""
        mdns, self._mdns = self._mdns, None
        if mdns is None:
            return
        if mdns._cleanup_cancel_scope is not None:
            mdns._cleanup_cancel_scope.cancel()

        def close() -> None:
            mdns.broadcaster.unregister()
            mdns.listener.stop()
            mdns.zeroconf.close()

        try:
            await trio.to_thread.run_sync(close)
        except Exception:
            log.debug("mDNS did not stop cleanly", exc_info=True)

    async def _start_mdns(self) -> None:
        from libp2p.discovery.mdns.mdns import create_mdns_discovery

        raw = self.host.libp2p
        listen = expand_unspecified([str(a) for a in raw.get_transport_addrs()])
        port = next((int(a.split("/tcp/")[1].split("/")[0]) for a in listen if "/tcp/" in a), 0)

        def create_and_register() -> Any:
            mdns = create_mdns_discovery(
                raw.get_network(),
                port=port,
                listen_addrs=listen,
                private_network_fingerprint=MDNS_NETWORK,
                host=raw,
            )
            self._mdns = mdns  # from here on, _stop_mdns closes it, even if we are cancelled
            mdns.broadcaster.register()  # blocks while mDNS probes the name
            return mdns

        try:
            # py-libp2p's MDNSDiscovery.start() in two halves: zeroconf's sockets,
            # threads and probing in a worker thread, its trio task here.
            mdns = await trio.to_thread.run_sync(create_and_register)
            mdns._cleanup_cancel_scope = trio.CancelScope()
            mdns._cleanup_task = trio.lowlevel.spawn_system_task(mdns._cleanup_loop_with_scope)
        except Exception as exc:
            log.warning("mDNS is unavailable; continuing without it", extra={"error": str(exc)})
