"""The registry service of the daemon: the crdt replica on the node's store, on gossip.

- Local writes (publish, release, deprecate) are signed with one of the node's
  account keys, applied and journaled, recorded in the event log, then
  published on ``mercato/registry/1``.
- Received updates are checked in the topic's validator: a signed update that
  the replica refuses is rejected (and its forwarder penalised by gossip), one
  it accepts is applied and journaled before gossip passes it on.
- Searches and lookups read the local index; every call runs in the store's
  worker thread, never on the event loop.
"""

from __future__ import annotations

import logging
from typing import Any

from crdt import (
    FeedWriter,
    Query,
    RegistryStore,
    SignedUpdate,
    UpdateRejected,
    validate_listing,
    validate_release,
)
from p2p import GossipMessage, Keypair, Overlay, Verdict

from ._control import LocalControl
from ._store import Store

log = logging.getLogger("mercato.registry")

TOPIC = "mercato/registry/1"


class RegistryService:
    def __init__(self, store: Store, control: LocalControl, overlay: Overlay) -> None:
        self._store = store
        self._control = control
        self._overlay = overlay
        self._replica: RegistryStore | None = None

    async def start(self) -> None:
        """Load the journal, rebuild the index, and join the registry topic."""
        self._replica = await self._store.run(RegistryStore, self._store.db.conn)
        await self._overlay.gossip.subscribe(TOPIC, self._on_message, self._validate)

    @property
    def replica(self) -> RegistryStore:
        assert self._replica is not None, "registry is not running"
        return self._replica

    # -- local writes ----------------------------------------------------------

    async def publish(self, account: str, manifest: dict[str, Any]) -> dict[str, Any]:
        listing = validate_listing(manifest)
        return await self._write(
            account, listing.name, "registry.published", lambda w: w.put_listing(listing)
        )

    async def release(self, account: str, fields: dict[str, Any]) -> dict[str, Any]:
        release = validate_release(fields)
        return await self._write(
            account, release.name, "registry.released", lambda w: w.put_release(release)
        )

    async def deprecate(self, account: str, name: str) -> dict[str, Any]:
        return await self._write(account, name, "registry.deprecated", lambda w: w.deprecate(name))

    async def _write(self, account: str, name: str, event: str, write: Any) -> dict[str, Any]:
        keypair: Keypair = await self._store.run(self._control.keys.account, account)

        def apply() -> tuple[SignedUpdate, dict[str, Any]]:
            signed = write(FeedWriter(keypair, self.replica.registry))
            self.replica.commit_own(signed, name)
            self._control.record(event, {"publisher": keypair.address, "name": name})
            return signed, self.replica.show(keypair.address, name) or {}

        signed, shown = await self._store.run(apply)
        await self._overlay.gossip.publish(TOPIC, signed.encode())
        return shown

    # -- reads -----------------------------------------------------------------

    async def search(self, query: Query) -> dict[str, Any]:
        page = await self._store.run(self.replica.search, query)
        return {"results": page.results, "cursor": page.cursor, "took_ms": page.took_ms}

    async def show(self, publisher: str, name: str) -> dict[str, Any] | None:
        return await self._store.run(self.replica.show, publisher, name)

    # -- gossip ----------------------------------------------------------------

    async def _validate(self, message: GossipMessage) -> Verdict:
        if message.forwarder == self._overlay.peer_id:
            return Verdict.ACCEPT  # our own update, applied when written
        try:
            signed = SignedUpdate.decode(message.data)
            await self._store.run(self.replica.ingest, signed)
        except UpdateRejected as exc:
            log.debug(
                "registry update rejected", extra={"peer": message.forwarder, "why": str(exc)}
            )
            return Verdict.REJECT
        return Verdict.ACCEPT

    async def _on_message(self, message: GossipMessage) -> None:
        pass  # applied in the validator, before gossip passes it on
