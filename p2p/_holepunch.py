"""Upgrading relayed connections to direct ones: DCUtR, on py-libp2p's `DCUtRProtocol`.

Runs only on a node that holds relay reservations because it was found
unreachable (not on a ``private`` one: DCUtR sends the node's observed
addresses, which a private node keeps to itself). Every 2 s py-libp2p looks at
the relayed connections; for each it first dials the peer's direct addresses
(a peer reachable that way needs no punching), then runs the DCUtR exchange
over the relayed connection and both sides dial each other at once.

What we add:
- a peer's CONNECT may list up to MAX_ADDRS TCP addresses; the rest are
  dropped, so a peer cannot make this node dial a long list;
- once a direct connection is up, the relayed one to that peer is closed, so
  it no longer counts against the relay's limits;
- `upgraded`, the number of relayed connections made direct, for status.

Cancellation stops the service and unregisters its handler; py-libp2p logs
and swallows its own errors, so nothing escapes into the node.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import trio

log = logging.getLogger("mercato.p2p.holepunch")
MAX_ADDRS = 8


class HolePunch:
    def __init__(self, host: Any) -> None:
        self._host = host  # P2PHost
        self.upgraded = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
        from libp2p.tools.anyio_service import background_trio_service

        logging.getLogger("libp2p.relay.circuit_v2.dcutr").setLevel(logging.CRITICAL)
        service = _protocol_class(DCUtRProtocol, self)(self._host.libp2p)
        async with background_trio_service(service):
            await service.event_started.wait()
            task_status.started()
            await trio.sleep_forever()

    async def _upgraded(self, peer_id: Any) -> None:
        """A direct connection is up: drop the relayed ones to that peer."""
        self.upgraded += 1
        log.info("relayed connection made direct", extra={"peer": str(peer_id)})
        conns = self._host.libp2p.get_network().connections.get(peer_id) or []
        for conn in list(conns):
            with contextlib.suppress(Exception):
                if any("/p2p-circuit" in str(a) for a in conn.get_transport_addresses()):
                    await conn.close()


def _protocol_class(base: type, owner: HolePunch) -> type:
    class _Protocol(base):
        def _decode_observed_addrs(self, addr_bytes: list[bytes]) -> list[Any]:
            addrs = super()._decode_observed_addrs(addr_bytes)
            tcp = [a for a in addrs if "/tcp/" in str(a) and "/p2p-circuit" not in str(a)]
            return tcp[:MAX_ADDRS]

        async def initiate_hole_punch(self, peer_id: Any) -> bool:
            relayed = owner._host.is_relayed(str(peer_id))
            ok = await super().initiate_hole_punch(peer_id)
            if ok and relayed:
                await owner._upgraded(peer_id)
            return ok

    return _Protocol
