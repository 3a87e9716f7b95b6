"""The registry service of the daemon: the crdt replica on the node's store, on gossip.

- Local writes (publish, release, deprecate) are signed with one of the node's
  account keys, applied and journaled, recorded in the event log, then
  published on ``mercato/registry/1``.
- Received updates are checked in the topic's validator: a signed update that
  the replica refuses is rejected (and its forwarder penalised by gossip), one
  it accepts is applied and journaled before gossip passes it on.
- Anti-entropy (``/mercato/sync/1.0.0``): the service pulls what it lacks from
  each peer when it connects and every ``SYNC_INTERVAL_S`` after, and answers
  the same request from others. Updates arrive as their publishers signed
  them and are verified like any other; a peer that serves invalid ones is
  penalised.
- Searches and lookups read the local index; every call runs in the store's
  worker thread, never on the event loop.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from crdt import (
    MAX_SYNC_RESPONSE_BYTES,
    SYNC,
    FeedWriter,
    Query,
    RegistryStore,
    SignedUpdate,
    SyncRequest,
    SyncResponse,
    UpdateRejected,
    sync_digest,
    validate_listing,
    validate_release,
)
from p2p import GossipMessage, Keypair, Overlay, P2PError, Refused, Verdict

from ._control import LocalControl
from ._store import Store

log = logging.getLogger("mercato.registry")

TOPIC = "mercato/registry/1"
SYNC_INTERVAL_S = 5.0  # a digest exchange of 32 bytes when nothing changed
SYNC_TICK_S = 1.0
PENALTY_BAD_SYNC = 25.0
MAX_SYNC_ROUNDS = 64


class RegistryService:
    def __init__(self, store: Store, control: LocalControl, overlay: Overlay) -> None:
        self._store = store
        self._control = control
        self._overlay = overlay
        self._replica: RegistryStore | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the journal, rebuild the index, join the topic, then keep peers in sync.

        Runs until cancelled.
        """
        self._replica = await self._store.run(RegistryStore, self._store.db.conn)
        await self._overlay.gossip.subscribe(TOPIC, self._on_message, self._validate)
        self._overlay.requests.serve(SYNC, self._answer_sync)
        task_status.started()
        synced: dict[str, float] = {}
        while True:
            now = time.monotonic()
            for peer in self._overlay.host.connected_peers():
                if now - synced.get(peer, -SYNC_INTERVAL_S) < SYNC_INTERVAL_S:
                    continue
                if SYNC.id not in self._overlay.host.protocols_of(peer):
                    continue  # not identified yet, or not a mercato node
                synced[peer] = now
                try:
                    await self.sync_with(peer)
                except P2PError as exc:
                    log.debug("registry sync failed", extra={"peer": peer, "error": str(exc)})
            await trio.sleep(SYNC_TICK_S)

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

    # -- anti-entropy ----------------------------------------------------------

    async def sync_with(self, peer: str) -> int:
        """Pull from ``peer`` every update this replica lacks; return how many applied."""
        applied = 0
        states = await self._store.run(self.replica.states)
        answer = await self._overlay.requests.request(peer, SYNC, SyncRequest(sync_digest(states)))
        rounds = 0
        while not answer.equal and rounds < MAX_SYNC_ROUNDS:
            rounds += 1
            if answer.updates:
                applied += await self._ingest_from(peer, answer.updates)
            if not (answer.need_states or answer.more):
                break
            states = await self._store.run(self.replica.states)
            request = SyncRequest(sync_digest(states), list(states), list(states.values()))
            answer = await self._overlay.requests.request(peer, SYNC, request)
        return applied

    async def _ingest_from(self, peer: str, encoded: list[bytes]) -> int:
        def ingest() -> tuple[int, int]:
            updates, bad = [], 0
            for data in encoded:
                try:
                    updates.append(SignedUpdate.decode(data))
                except UpdateRejected:
                    bad += 1
            outcomes = self.replica.ingest_batch(updates)
            bad += sum(isinstance(o, UpdateRejected) for o in outcomes)
            return sum(isinstance(o, list) and bool(o) for o in outcomes), bad

        applied, bad = await self._store.run(ingest)
        if bad:
            await self._overlay.host.penalize(
                peer, PENALTY_BAD_SYNC, f"{bad} invalid updates in sync"
            )
        return applied

    async def _answer_sync(self, peer: str, request: SyncRequest) -> SyncResponse:
        states = await self._store.run(self.replica.states)
        if request.digest == sync_digest(states):
            return SyncResponse(equal=True)
        if not request.publishers:
            return SyncResponse(need_states=True)
        if len(request.publishers) != len(request.states):
            raise Refused("bad_request", "publishers and states differ in length")
        theirs = dict(zip(request.publishers, request.states, strict=True))
        updates, more = await self._store.run(
            self.replica.missing_for, theirs, MAX_SYNC_RESPONSE_BYTES
        )
        return SyncResponse(updates=updates, more=more)

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
