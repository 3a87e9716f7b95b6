"""The overlay: one node's host, request protocols, gossip, DHT and discovery together.

`open_overlay` starts them in dependency order (host, request router, gossip,
DHT, discovery) and stops them in reverse; each is reachable as an attribute
of `Overlay`. This is what the daemon runs; tests and benchmarks run many in
one process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from ._dht import Dht, DhtConfig, open_dht
from ._discovery import AddressBook, Discovery, DiscoveryConfig
from ._gossip import Gossip, GossipConfig, open_gossip
from ._host import HostConfig, P2PHost, open_host
from ._identity import Keypair
from ._info import INFO, InfoRequest, InfoResponse
from ._reachability import DIALBACK, DialBack, Reachability, ReachabilityConfig
from ._relay import Relay, RelayConfig
from ._requests import Requests
from ._trio_util import single_error


@dataclass(frozen=True)
class OverlayConfig:
    host: HostConfig = field(default_factory=HostConfig)
    gossip: GossipConfig = field(default_factory=GossipConfig)
    dht: DhtConfig = field(default_factory=DhtConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    reachability: ReachabilityConfig = field(default_factory=ReachabilityConfig)
    agent: str = "mercato"
    roles: tuple[str, ...] = ()


@dataclass
class Overlay:
    host: P2PHost
    requests: Requests
    gossip: Gossip
    dht: Dht
    discovery: Discovery
    config: OverlayConfig
    relay: Relay
    autonat: Reachability

    @property
    def peer_id(self) -> str:
        return self.host.peer_id

    async def info(self, peer_id: str) -> InfoResponse:
        """Ask a peer for its agent, addresses and roles."""
        return await self.requests.request(peer_id, INFO, InfoRequest())

    def status(self) -> dict[str, Any]:
        """What `mercato node status` shows about the network."""
        return {
            "peer_id": self.peer_id,
            "listen_addrs": self.host.listen_addrs(),
            "peers": {
                "connected": len(self.host.connected_peers()),
                "banned": len(self.host.banned_peers()),
                "routing_table": self.dht.routing_table_size(),
            },
            "dht_mode": self.dht.mode,
            "mdns": self.discovery.mdns_enabled,
            "bootstrap": [s.__dict__ for s in self.discovery.bootstrap_status()],
            "relay": self.relay.status(),
            "reachability": self.reachability(),
            "dialback": {
                "state": self.autonat.verdict.state,
                "checked_by": list(self.autonat.verdict.checked_by),
                "observed": list(self.autonat.verdict.observed),
            },
        }

    def reachability(self) -> str:
        """How others reach this node:

        - ``relayed``: through relays it holds a reservation on;
        - ``private``: ``private`` set, no reservation yet (only peers it dials reach it);
        - ``public``: peers dialed it back on its direct addresses;
        - ``unreachable``: they could not, and it has no relay yet;
        - ``unverified``: it has direct addresses, not checked yet;
        - ``lan-only``: no address at all (mDNS peers dial it)."""
        if self.relay.relayed_addrs():
            return "relayed"
        if self.config.host.private:
            return "private"
        if not self.host.listen_addrs():
            return "lan-only"
        state = self.autonat.verdict.state
        return state if state in ("public", "unreachable") else "unverified"


@asynccontextmanager
async def open_overlay(
    keypair: Keypair, config: OverlayConfig, book: AddressBook | None = None
) -> AsyncIterator[Overlay]:
    """Run the whole p2p stack with ``keypair`` as the node identity.

    Raises P2PError if it cannot listen. On exit every service stops, the
    address book is saved, and the host closes its connections.
    """
    with single_error():
        async with AsyncExitStack() as stack:
            host = await stack.enter_async_context(open_host(keypair, config.host))
            requests = Requests(host)

            async def answer_info(peer: str, request: InfoRequest) -> InfoResponse:
                return InfoResponse(config.agent, host.listen_addrs()[:32], list(config.roles))

            requests.serve(INFO, answer_info)
            requests.serve(DIALBACK, DialBack(host).answer)
            gossip = await stack.enter_async_context(open_gossip(host, config.gossip))
            dht = await stack.enter_async_context(open_dht(host, config.dht))
            discovery = Discovery(host, config.discovery, book)
            relay = Relay(host, config.relay)
            autonat = Reachability(
                host,
                requests,
                relay,
                config.reachability,
                config.discovery.bootstrap,
                hop=config.relay.hop,
            )
            nursery = await stack.enter_async_context(trio.open_nursery())
            await nursery.start(relay.run)
            await nursery.start(discovery.run)
            await nursery.start(autonat.run)
            stack.callback(nursery.cancel_scope.cancel)
            yield Overlay(host, requests, gossip, dht, discovery, config, relay, autonat)
