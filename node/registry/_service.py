"""The registry service of the daemon: the crdt replica on the node's store, on gossip.

- Local writes (publish, release, deprecate) are signed with one of the node's
  account keys, applied and journaled, recorded in the event log, then
  published on ``mercato/registry/1``.
- Received updates are checked in the topic's validator: a signed update that
  the replica refuses is rejected (and its forwarder penalised by gossip), one
  it accepts is applied and journaled before gossip passes it on.
- Anti-entropy (``/mercato/sync/3.0.0``): the service pulls what it lacks from
  each peer when it connects and every ``SYNC_INTERVAL_S`` after, and answers
  the same request from others. Updates arrive as their publishers signed
  them and are verified like any other; a peer that serves invalid ones is
  penalised.
- Forks: a feed a peer holds at our state with other content, or whose
  updates we refused as an equivocation, is settled by fetching the peer's
  whole copy and keeping the better history (`better_history`); a proven fork
  is recorded against its publisher (``registry.fork``). When the history lost
  was one of this node's own accounts', the entries only it had are written
  again on top of the one kept.
- Before the first write of an account in a run, its feed is fetched from
  connected peers: a key restored from a backup writes on the network's
  history, not on a stale one.
- Remote queries (``/mercato/query/1.0.0``): the service answers searches and
  lookups from other peers out of its replica, and asks other peers on the
  user's behalf (`remote_search`, `remote_show`).
- Searches and lookups read the local index; every call runs in the store's
  worker thread, never on the event loop.
- A publisher's node snapshots its feed every ``COMPACT_AFTER`` writes
  (compaction), so journals stay short everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

import trio

from mercato.crdt import (
    COMPACTED,
    MAX_SYNC_FORKS,
    MAX_SYNC_RESPONSE_BYTES,
    QUERY,
    SYNC,
    Equivocation,
    FeedCopy,
    FeedWriter,
    Fork,
    Query,
    QueryError,
    QueryRequest,
    QueryResponse,
    RegistryStore,
    ReleaseExists,
    SchemaError,
    SignedUpdate,
    SyncRequest,
    SyncResponse,
    UpdateRejected,
    Version,
    VersionError,
    decode_query_result,
    encode_query_result,
    sync_digest,
    validate_listing,
    validate_release,
)
from mercato.p2p import (
    GossipMessage,
    Keypair,
    Overlay,
    P2PError,
    Refused,
    TokenBucket,
    Verdict,
    decode_canonical,
)

from .._errors import StoreError
from .._events import EventLog
from .._keys import KeyStore
from .._store import Store

log = logging.getLogger("mercato.registry")

TOPIC = "mercato/registry/1"
SYNC_INTERVAL_S = 5.0  # a digest exchange of 32 bytes when nothing changed
SYNC_TICK_S = 1.0
PENALTY_BAD_SYNC = 25.0
MAX_SYNC_ROUNDS = 64
SYNC_DEADLINE_S = 60.0  # for one pull, all its pages
MIN_PULL_GAP_S = 1.0  # between two pulls from one peer, however often it nudges
MAX_QUERY_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_SHOW_PAGES = 8
MAX_FORK_CHECKS = 4  # feeds settled per pull: each is a whole feed's fetch
CATCH_UP_S = 5.0  # before an account's first write: how long its feed is looked for
CATCH_UP_PEERS = 3
MAX_REMOTE_QUERIES = 2  # at once: each holds the store's one thread
SEARCH_BUDGET_S = 0.25  # database time for one remote search
QUERY_BYTES_PER_S = 2 * 1024 * 1024  # answers to one peer
QUERY_BYTES_BURST = 8 * 1024 * 1024


def check_version(version: object) -> None:
    """SchemaError, in words a person understands, if ``version`` is not MAJOR.MINOR.PATCH
    (the schema's own check says only how long it must be, for ``1.0``)."""
    try:
        Version.parse(version)  # type: ignore[arg-type]
    except VersionError:
        shown = repr(version) if isinstance(version, str) else "missing"
        raise SchemaError(
            "version",
            f"{shown} is not a semantic version: use MAJOR.MINOR.PATCH, e.g. 1.0.0 "
            "(or 1.0.0-rc.1 for a pre-release)",
        ) from None


class RegistryService:
    def __init__(self, store: Store, keys: KeyStore, events: EventLog, overlay: Overlay) -> None:
        self._store = store
        self._keys = keys
        self._events = events
        self._overlay = overlay
        self._replica: RegistryStore | None = None
        self._synced: dict[str, float] = {}  # peer -> when we last pulled from it
        self._wakeup = trio.Event()
        self._query_slots = trio.Semaphore(MAX_REMOTE_QUERIES)
        self._query_bytes: dict[str, TokenBucket] = {}
        self._caught_up: set[str] = set()  # accounts whose feed was fetched this run
        self._catching_up = trio.Lock()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the journal, rebuild the index, join the topic, then keep peers in sync.

        Runs until cancelled.
        """
        self._replica = await self._store.run(RegistryStore, self._store.db.conn)
        for entry in self._replica.damaged:  # logged by the replica; kept on record here
            data = {"publisher": entry.publisher, "clock": entry.clock, "why": entry.why[:200]}
            await self._store.run(self._events.record, "registry.damaged", data)
        await self._overlay.gossip.subscribe(TOPIC, self._on_message, self._validate)
        self._overlay.requests.serve(SYNC, self._answer_sync)
        self._overlay.requests.serve(QUERY, self._answer_query)
        task_status.started()
        try:
            await self._sync_forever()
        finally:
            with trio.CancelScope(shield=True):
                await self._store.run(self.replica.close)

    async def _sync_forever(self) -> None:
        """Pull from each peer every SYNC_INTERVAL_S, and at once from a peer that is due.

        A peer is due when it asked us with a digest that differs from ours (it
        has something we lack, or lacks something we have). After a pull that
        brought anything new, we ask every other peer in turn: that tells them
        our digest changed, so they pull from us, and what one node learns by
        anti-entropy spreads hop by hop without waiting for timers.
        """
        while True:
            connected = self._overlay.host.connected_peers()
            for gone in set(self._synced) - set(connected):
                del self._synced[gone]
            for peer in connected:
                if time.monotonic() - self._synced.get(peer, -SYNC_INTERVAL_S) < SYNC_INTERVAL_S:
                    continue
                if SYNC.id not in self._overlay.host.protocols_of(peer):
                    continue  # not identified yet, or not a mercato node
                self._synced[peer] = time.monotonic()
                try:
                    applied = await self.sync_with(peer)
                except P2PError as exc:
                    log.debug("registry sync failed", extra={"peer": peer, "error": str(exc)})
                    continue
                except StoreError as exc:  # a full disk: nothing was written; try later
                    log.warning("registry sync not stored", extra={"error": str(exc)})
                    continue
                if applied:
                    self._make_due(p for p in connected if p != peer)
            with trio.move_on_after(SYNC_TICK_S):
                await self._wakeup.wait()
            self._wakeup = trio.Event()

    def _make_due(self, peers: Iterable[str]) -> None:
        """Pull from ``peers`` at the next turn of the loop, but from each at most
        once per MIN_PULL_GAP_S however often it asks."""
        now = time.monotonic()
        for peer in peers:
            last = self._synced.get(peer)
            if last is not None:
                due_at = max(now, last + MIN_PULL_GAP_S)
                self._synced[peer] = min(last, due_at - SYNC_INTERVAL_S)
        self._wakeup.set()

    @property
    def replica(self) -> RegistryStore:
        assert self._replica is not None, "registry is not running"
        return self._replica

    def warnings(self) -> list[str]:
        """What `mercato node status` should tell the operator about the registry."""
        return [entry.describe() for entry in self._replica.damaged] if self._replica else []

    # -- local writes ----------------------------------------------------------

    async def publish(self, account: str, manifest: dict[str, Any]) -> dict[str, Any]:
        listing = validate_listing(manifest)
        return await self._write(
            account, listing.name, "registry.published", lambda w: w.put_listing(listing)
        )

    async def release(self, account: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Bind ``name@version`` once. ReleaseExists if it is bound to another build;
        the same binding again changes nothing and returns the listing."""
        check_version(fields.get("version"))
        release = validate_release(fields)
        event = {"version": release.version, "cid": release.cid}
        try:
            return await self._write(
                account, release.name, "registry.released",
                lambda w: w.put_release(release), details=event,
            )  # fmt: skip
        except ReleaseExists as exc:
            if not exc.same:
                raise
            keypair: Keypair = await self._store.run(self._keys.account, account)
            return await self.show(keypair.address, release.name) or {}

    async def check_release(self, account: str, fields: dict[str, Any], with_build: bool) -> str:
        """Refuse at once what `release` would refuse after a build's copies landed:
        a malformed version or field, a listing this account has not published, an
        agent's release with no build. ``with_build``: a build file comes with it
        (its cid is not known yet). Returns the account's publisher address."""
        check_version(fields.get("version"))
        validate_release({**fields, "cid": "bld-placeholder", "size": 1} if with_build else fields)
        keypair: Keypair = await self._store.run(self._keys.account, account)
        await self._catch_up(keypair.address)  # the listing may be on a peer's copy of the feed
        name = str(fields.get("name"))

        def listing_kind() -> str | None:
            feed = self.replica.registry.feeds.get(keypair.address)
            listing = feed.listing(name) if feed else None
            return listing.kind if listing else None

        kind = await self._store.run(listing_kind)
        if kind is None:
            raise SchemaError(
                "name",
                f"publish the listing {name!r} before releasing it: account {account!r} "
                f"({keypair.address}) has no listing of that name",
            )
        if kind != "model" and not with_build and not fields.get("cid"):
            raise SchemaError(
                "cid",
                f"an agent's release names its build: {name!r} is an agent, so give its "
                "build (mercato release --build FILE, or --cid and --size); only a model's "
                "release may have none",
            )
        return keypair.address

    async def bound_cid(self, account: str, name: str, version: str) -> str | None:
        """The build ``name@version`` of ``account``'s feed is bound to, if released."""
        keypair: Keypair = await self._store.run(self._keys.account, account)

        def look() -> str | None:
            feed = self.replica.registry.feeds.get(keypair.address)
            found = feed.releases().get(f"{name}@{version}") if feed else None
            return found.cid if found else None

        return await self._store.run(look)

    def _equivocated(self, publisher: str, why: str) -> None:
        """Record a publisher's equivocation (blocking: in the store's thread)."""
        log.warning("a publisher equivocated", extra={"publisher": publisher, "why": why})
        self._events.record("registry.equivocation", {"publisher": publisher, "why": why[:200]})

    async def deprecate(self, account: str, name: str) -> dict[str, Any]:
        return await self._write(account, name, "registry.deprecated", lambda w: w.deprecate(name))

    async def _write(
        self,
        account: str,
        name: str,
        event: str,
        write: Any,
        catch_up: bool = True,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Sign ``write`` with ``account``'s key, apply, journal and record it as
        ``event`` (with ``details`` besides the publisher and name), then gossip it."""
        keypair: Keypair = await self._store.run(self._keys.account, account)
        if catch_up:
            await self._catch_up(keypair.address)

        def apply() -> tuple[list[SignedUpdate], dict[str, Any]]:
            writer = FeedWriter(keypair, self.replica.registry)
            signed = write(writer)
            self.replica.commit_own(signed, name)
            recorded = {"publisher": keypair.address, "name": name, **(details or {})}
            self._events.record(event, recorded)
            snapshot = self.replica.compact_own(writer)
            spread = [signed] if snapshot is None else [signed, snapshot]
            return spread, self.replica.show(keypair.address, name) or {}

        spread, shown = await self._store.run(apply)
        for signed in spread:
            data = signed.encode()
            if len(data) <= self._overlay.gossip.max_message_bytes:
                await self._overlay.gossip.publish(TOPIC, data)
            # else: a large snapshot; peers receive it by anti-entropy
        return shown

    # -- reads -----------------------------------------------------------------

    async def search(self, query: Query) -> dict[str, Any]:
        page = await self._store.run(self.replica.search, query)
        return {"results": page.results, "cursor": page.cursor, "took_ms": page.took_ms}

    async def counts(self) -> dict[str, int]:
        return await self._store.run(self.replica.counts)

    async def show(self, publisher: str, name: str) -> dict[str, Any] | None:
        return await self._store.run(self.replica.show, publisher, name)

    async def resolve(self, ref: str, range_text: str) -> dict[str, Any]:
        """The releases of ``ref`` in range and a full plan; DependencyConflict if none fits."""
        resolution = await self._store.run(self.replica.resolve, ref, range_text)
        return {
            "ref": resolution.ref,
            "range": range_text,
            "candidates": resolution.candidates,
            "plan": {ref: release.to_wire() for ref, release in sorted(resolution.plan.items())},
        }

    # -- remote queries --------------------------------------------------------

    async def remote_search(self, peer: str, query: Query) -> dict[str, Any]:
        """Search ``peer``'s registry. Results are the peer's word, checked against the
        schema; QueryError if the peer answers with something malformed."""
        query.check()
        started = time.perf_counter()
        answer = await self._overlay.requests.request(peer, QUERY, QueryRequest.search(query))
        results = await trio.to_thread.run_sync(
            lambda: [decode_query_result(data) for data in answer.results[: query.limit]]
        )
        took = round((time.perf_counter() - started) * 1000, 3)
        return {"results": results, "cursor": answer.cursor, "took_ms": took, "peer": peer}

    async def remote_show(self, peer: str, publisher: str, name: str) -> dict[str, Any] | None:
        """Fetch ``publisher``'s feed from ``peer``, verify every update, show ``name``.

        A long feed comes in pages; ``complete`` is False if it was longer than
        MAX_SHOW_PAGES pages (what is shown is then older than the peer's copy)."""
        copy = FeedCopy(publisher)
        more, pages = True, 0
        while more and pages < MAX_SHOW_PAGES:
            request = QueryRequest(op="show", publisher=publisher, name=name, since=copy.state())
            answer = await self._overlay.requests.request(peer, QUERY, request)
            await trio.to_thread.run_sync(copy.add, answer.updates)
            more, pages = answer.more and bool(answer.updates), pages + 1
        shown = await trio.to_thread.run_sync(copy.show, name)
        if shown is None:
            return None
        return {**shown, "peer": peer, "verified": True, "complete": not more}

    async def _answer_query(self, peer: str, request: QueryRequest) -> QueryResponse:
        """Answer a remote search or show, within this peer's share of the node.

        At most MAX_REMOTE_QUERIES run at once, a search may take SEARCH_BUDGET_S
        of database time, and each peer may take QUERY_BYTES_PER_S of answers
        (bursts of QUERY_BYTES_BURST): a show answer can be megabytes.
        """
        bucket = self._query_bytes.setdefault(peer, TokenBucket(QUERY_BYTES_BURST))
        if bucket.available(QUERY_BYTES_PER_S, QUERY_BYTES_BURST) <= 0:
            raise Refused("busy", "you asked for too much of this node's registry; slow down")
        try:
            self._query_slots.acquire_nowait()
        except trio.WouldBlock as exc:
            raise Refused("busy", "too many remote queries at once; retry later") from exc
        try:
            response = await self._query(request)
        finally:
            self._query_slots.release()
        bucket.tokens -= sum(map(len, response.updates)) + sum(map(len, response.results))
        return response

    async def _query(self, request: QueryRequest) -> QueryResponse:
        if request.op in ("show", "feed"):
            if not request.publisher or (request.op == "show" and not request.name):
                raise Refused("bad_request", f"{request.op} needs a publisher and a name")
            theirs = {request.publisher: request.since}
            updates, more = await self._store.run(
                self.replica.missing_for, theirs, MAX_QUERY_RESPONSE_BYTES, request.publisher
            )
            return QueryResponse(updates=updates, more=more)
        try:
            query = request.query()
            page = await self._store.run(self.replica.search, query, SEARCH_BUDGET_S)
        except QueryError as exc:
            raise Refused("bad_request", str(exc)) from exc
        results = [encode_query_result(doc) for doc in page.results]
        return QueryResponse(results=results, cursor=page.cursor)

    # -- anti-entropy ----------------------------------------------------------

    async def sync_with(self, peer: str) -> int:
        """Pull from ``peer`` every update this replica lacks; return how many applied.

        Bounded: MAX_SYNC_ROUNDS pages within SYNC_DEADLINE_S. A peer that asks for
        our states again after it had them, or says there is more but sends
        nothing new, breaks the protocol: it is penalised and the pull ends.
        """
        applied, suspects = 0, set()
        with trio.move_on_after(SYNC_DEADLINE_S):
            heads = await self._store.run(self.replica.heads)
            request = SyncRequest(sync_digest(heads))
            answer = await self._overlay.requests.request(peer, SYNC, request)
            for _ in range(MAX_SYNC_ROUNDS):
                if answer.equal:
                    break
                suspects.update(answer.forks)
                news = 0
                if answer.updates:
                    news, equivocated = await self._ingest_from(peer, answer.updates)
                    suspects.update(equivocated)
                applied += news
                if request.with_states and (answer.need_states or (answer.more and not news)):
                    await self._overlay.host.penalize(
                        peer, PENALTY_BAD_SYNC, "sync answers that make no progress"
                    )
                    break
                if not (answer.need_states or answer.more):
                    break
                heads = await self._store.run(self.replica.heads)
                request = SyncRequest(
                    sync_digest(heads),
                    list(heads),
                    [state for state, _ in heads.values()],
                    [content for _, content in heads.values()],
                    with_states=True,
                )
                answer = await self._overlay.requests.request(peer, SYNC, request)
            for publisher in sorted(suspects)[:MAX_FORK_CHECKS]:
                fork = await self.settle_feed(peer, publisher)
                applied += fork is not None and fork.kept == "theirs"
        return applied

    async def settle_feed(self, peer: str, publisher: str) -> Fork | None:
        """Fetch ``peer``'s whole copy of ``publisher``'s feed and keep the better of
        it and ours (see the module docstring). Returns what happened, or None if
        the two agree or the copy could not be had whole."""
        copy = FeedCopy(publisher)
        more, pages = True, 0
        while more and pages < MAX_SHOW_PAGES:
            request = QueryRequest(op="feed", publisher=publisher, since=copy.state())
            answer = await self._overlay.requests.request(peer, QUERY, request)
            await trio.to_thread.run_sync(copy.add, answer.updates)
            more, pages = answer.more and bool(answer.updates), pages + 1
        if more:
            return None
        fork = await self._store.run(self.replica.adopt, copy)
        if fork is None:
            return None
        if fork.proven:
            await self._store.run(self._forked, fork, peer)
        if fork.kept == "theirs" and any(fork.lost.values()):
            await self._write_again(fork)
        return fork

    def _forked(self, fork: Fork, peer: str) -> None:
        """Record a publisher's fork (blocking: in the store's thread)."""
        data = {
            "publisher": fork.publisher,
            "kept": fork.kept,
            "ours_clock": fork.ours_clock,
            "theirs_clock": fork.theirs_clock,
            "peer": peer,
        }
        log.warning("a publisher's feed forked; one history kept", extra=data)
        self._events.record("registry.fork", data)

    async def _write_again(self, fork: Fork) -> None:
        """The history kept lacks entries this node's own account wrote in the one
        lost: write them again on top (releases bound in the kept one stay)."""
        keys = await self._store.run(self._keys.list_keys)
        names = {k.address: k.name for k in keys if k.kind == "account"}
        account = names.get(fork.publisher)
        if account is None:
            return
        listings, releases = fork.lost.get("listings", {}), fork.lost.get("releases", {})
        for data in listings.values():
            listing = validate_listing(decode_canonical(data))
            await self._write(
                account, listing.name, "registry.published",
                lambda w, listing=listing: w.put_listing(listing), catch_up=False,
            )  # fmt: skip
        for data in releases.values():
            release = validate_release(decode_canonical(data))
            with contextlib.suppress(ReleaseExists, SchemaError):  # bound, or its listing gone
                await self._write(
                    account, release.name, "registry.released",
                    lambda w, release=release: w.put_release(release), catch_up=False,
                    details={"version": release.version, "cid": release.cid},
                )  # fmt: skip
        log.info(
            "entries of the history lost were written again",
            extra={"publisher": fork.publisher, "listings": len(listings),
                   "releases": len(releases)},
        )  # fmt: skip

    async def _catch_up(self, address: str) -> None:
        """Before an account's first write in this run: fetch its feed from a few
        connected peers and settle it (a key restored from a backup must not sign
        on a stale history). Bounded by CATCH_UP_S; with no peer, nothing to do."""
        async with self._catching_up:
            if address in self._caught_up:
                return
            # Not filtered by protocol: a peer that has just connected may not be
            # identified yet, and it is the one most likely to hold the feed.
            peers = self._overlay.host.connected_peers()[:CATCH_UP_PEERS]
            with trio.move_on_after(CATCH_UP_S):
                for peer in peers:
                    try:
                        await self._pull_feed(peer, address)
                    except P2PError as exc:
                        log.debug("a peer's copy of a feed was not had", extra={"why": str(exc)})
            self._caught_up.add(address)

    async def _pull_feed(self, peer: str, address: str) -> None:
        """What ``peer`` has of one feed beyond ours, ingested as anti-entropy would;
        the whole feed settled if it turns out to be another history."""
        for _ in range(MAX_SHOW_PAGES):
            state = (await self._store.run(self.replica.heads)).get(address, (b"", b""))[0]
            request = QueryRequest(op="feed", publisher=address, since=state)
            answer = await self._overlay.requests.request(peer, QUERY, request)
            news, equivocated = await self._ingest_from(peer, answer.updates)
            if equivocated:
                await self.settle_feed(peer, address)
                return
            if not (answer.more and news):
                return

    async def _ingest_from(self, peer: str, encoded: list[bytes]) -> tuple[int, set[str]]:
        """Ingest updates a peer served; (how many were news, the publishers whose
        updates were equivocations: their feeds need settling)."""

        def ingest() -> tuple[int, int, set[str]]:
            updates, bad, equivocated = [], 0, set()
            for data in encoded:
                try:
                    updates.append(SignedUpdate.decode(data))
                except UpdateRejected:
                    bad += 1
            outcomes = self.replica.ingest_batch(updates)
            for update, outcome in zip(updates, outcomes, strict=True):
                if isinstance(outcome, Equivocation):
                    self._equivocated(update.address, str(outcome))
                    equivocated.add(update.address)
            # An equivocating publisher is not the serving peer's fault.
            bad += sum(
                isinstance(o, UpdateRejected) and not isinstance(o, Equivocation) for o in outcomes
            )
            news = sum(isinstance(o, list) and bool(o) and o != [COMPACTED] for o in outcomes)
            return news, bad, equivocated

        applied, bad, equivocated = await self._store.run(ingest)
        if bad:
            await self._overlay.host.penalize(
                peer, PENALTY_BAD_SYNC, f"{bad} invalid updates in sync"
            )
        return applied, equivocated

    async def _answer_sync(self, peer: str, request: SyncRequest) -> SyncResponse:
        heads = await self._store.run(self.replica.heads)
        if request.digest == sync_digest(heads):
            return SyncResponse(equal=True)
        if not request.with_states:
            self._make_due([peer])  # it may have what we lack: pull from it soon
        if not request.with_states:
            return SyncResponse(need_states=True)
        if not len(request.publishers) == len(request.states) == len(request.contents):
            raise Refused("bad_request", "publishers, states and contents differ in length")
        theirs = dict(zip(request.publishers, request.states, strict=True))
        contents = dict(zip(request.publishers, request.contents, strict=True))

        def answer() -> SyncResponse:
            updates, more = self.replica.missing_for(theirs, MAX_SYNC_RESPONSE_BYTES)
            forks = self.replica.forked_with(
                {a: (theirs[a], contents[a]) for a in request.publishers}
            )
            if forks:
                self._make_due([peer])  # its history may be the better one
            return SyncResponse(updates=updates, more=more, forks=forks[:MAX_SYNC_FORKS])

        return await self._store.run(answer)

    # -- gossip ----------------------------------------------------------------

    async def _validate(self, message: GossipMessage) -> Verdict:
        if message.forwarder == self._overlay.peer_id:
            return Verdict.ACCEPT  # our own update, applied when written
        try:
            signed = SignedUpdate.decode(message.data)
            outcome = await self._store.run(self.replica.ingest, signed)
        except Equivocation as exc:
            await self._store.run(self._equivocated, signed.address, str(exc))
            self._make_due([message.forwarder])  # a sync with it settles the fork
            return Verdict.IGNORE  # the publisher's doing, not the forwarder's
        except UpdateRejected as exc:
            log.debug(
                "registry update rejected", extra={"peer": message.forwarder, "why": str(exc)}
            )
            return Verdict.REJECT
        except StoreError as exc:  # a full disk: not the forwarder's fault; sync brings it later
            log.warning("registry update not stored", extra={"error": str(exc)})
            return Verdict.IGNORE
        # Relay only news. One that waits for earlier updates could not be applied
        # by a receiver either (anti-entropy brings it in order); a duplicate is not
        # vetted again, and peers already have it or will sync it.
        return Verdict.ACCEPT if outcome else Verdict.IGNORE

    async def _on_message(self, message: GossipMessage) -> None:
        pass  # applied in the validator, before gossip passes it on
